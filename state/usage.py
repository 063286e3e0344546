"""What a workflow's LLM calls cost: requests and tokens by purpose, an estimated price, budgets.

Every HTTP request to a model is counted, whoever made it: the orchestrator deciding a state,
an agent running a step, or a coordinator script's subagent. Failed calls count too (they
cost the server's time and, on paid APIs, often money), with the requests they really made.
Totals stay on ``IterationCounters`` (``llm_calls``, ``prompt_tokens``,
``completion_tokens``); ``llm_usage`` splits them by purpose. The price is an estimate from
the configured table (``llm.prices``); a model with no price costs nothing and shows none.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from state.validation import Float

if TYPE_CHECKING:
    from state.config import LLMSettings
    from state.decision import LLMCallInfo
    from state.workflow import BudgetBase, IterationCounters, WorkflowState

_FROZEN = ConfigDict(extra="forbid", frozen=True)

BUDGET_EXHAUSTED = "budget_exhausted"  # the step error type (StepErrorType.BUDGET_EXHAUSTED)
"""The step error type of an agent step refused because the workflow's LLM budget is spent."""


class Purpose(StrEnum):
    """What an LLM call was made for."""

    DECISION = "decision"
    PLANNER = "planner"
    VALIDATOR = "validator"
    PROGRAMMER = "programmer"
    SCRIPT_SUBAGENT = "script_subagent"


class ModelPrice(BaseModel):
    """A model's price in USD per thousand tokens."""

    model_config = _FROZEN

    prompt_per_1k: Float = Field(ge=0)
    completion_per_1k: Float = Field(ge=0)


class Usage(BaseModel):
    """Requests, tokens and estimated cost of some LLM calls.

    ``cost_usd`` is None while no priced model was called, so unpriced (local) models show
    no cost rather than a misleading zero.
    """

    model_config = _FROZEN

    calls: int = Field(0, ge=0, description="HTTP requests, failed ones and retries included")
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cost_usd: float | None = Field(None, ge=0, description="estimate from llm.prices")

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: Usage) -> Usage:
        """The sum of both."""
        mine, theirs = self.cost_usd, other.cost_usd
        cost = theirs if mine is None else mine + (theirs or 0.0)
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=cost,
        )


NO_USAGE = Usage()


class UsageByPurpose(BaseModel):
    """A workflow's LLM usage, one ``Usage`` per purpose."""

    model_config = _FROZEN

    decision: Usage = NO_USAGE
    planner: Usage = NO_USAGE
    validator: Usage = NO_USAGE
    programmer: Usage = NO_USAGE
    script_subagent: Usage = NO_USAGE

    def of(self, purpose: Purpose) -> Usage:
        """The usage of ``purpose``."""
        found: Usage = getattr(self, purpose.value)
        return found

    def add(self, purpose: Purpose, usage: Usage) -> UsageByPurpose:
        """A copy with ``usage`` added to ``purpose``."""
        return self.model_copy(update={purpose.value: self.of(purpose).plus(usage)})

    @property
    def total(self) -> Usage:
        """All purposes together."""
        total = NO_USAGE
        for purpose in Purpose:
            total = total.plus(self.of(purpose))
        return total


def usage_summary(usage: UsageByPurpose) -> dict[str, dict[str, int | float]]:
    """The split by purpose as plain data for displays: calls and tokens, cost when priced."""
    out: dict[str, dict[str, int | float]] = {}
    for purpose in Purpose:
        used = usage.of(purpose)
        entry: dict[str, int | float] = {"calls": used.calls, "tokens": used.tokens}
        if used.cost_usd is not None:
            entry["cost_usd"] = round(used.cost_usd, 6)
        out[purpose.value] = entry
    return out


def call_usage(
    requests: int,
    prompt_tokens: int,
    completion_tokens: int,
    models: tuple[str, ...],
    prices: dict[str, ModelPrice],
) -> Usage:
    """The usage of one call, priced by the first of ``models`` the table names.

    Args:
        requests: the HTTP requests the call made.
        prompt_tokens / completion_tokens: what the server reported.
        models: names the model goes by (the configured one, then the server's), since a
            server may answer with a dated variant of the name the price table uses.
        prices: the configured price table.
    """
    price = next((prices[m] for m in models if m in prices), None)
    cost = None
    if price is not None:
        cost = (
            prompt_tokens * price.prompt_per_1k + completion_tokens * price.completion_per_1k
        ) / 1000.0
    return Usage(
        calls=requests,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost,
    )


def charge(counters: IterationCounters, purpose: Purpose, usage: Usage) -> IterationCounters:
    """``counters`` with ``usage`` added to the totals and to ``purpose``'s share."""
    return counters.model_copy(
        update={
            "llm_calls": counters.llm_calls + usage.calls,
            "prompt_tokens": counters.prompt_tokens + usage.prompt_tokens,
            "completion_tokens": counters.completion_tokens + usage.completion_tokens,
            "llm_usage": counters.llm_usage.add(purpose, usage),
        }
    )


def charge_step(state: WorkflowState, usage: Usage, counters: IterationCounters) -> WorkflowState:
    """``state`` with its last step record carrying ``usage`` and its counters replaced.

    Args:
        state: the workflow, its last record the step attempt that just ended.
        usage: what that attempt's LLM calls used.
        counters: the workflow's counters with that usage charged.
    """
    if not usage.calls:
        return state
    *earlier, last = state.history
    record = last.model_copy(update={"llm_usage": usage})
    return state.model_copy(update={"history": (*earlier, record), "counters": counters})


def charge_decision(
    counters: IterationCounters, info: LLMCallInfo, prices: dict[str, ModelPrice]
) -> IterationCounters:
    """``counters`` charged with one decision's LLM calls (``info.attempts`` requests)."""
    usage = call_usage(
        info.attempts, info.prompt_tokens, info.completion_tokens, (info.model,), prices
    )
    return charge(counters, Purpose.DECISION, usage)


def budget_spent(
    counters: IterationCounters, settings: LLMSettings, base: BudgetBase | None = None
) -> str | None:
    """Why no further LLM call may be made for the workflow, or None while budget is left.

    Both budgets cover every call of the workflow, whatever its purpose, counted from
    ``base``: a human who lets an escalated workflow go on grants it fresh budgets.
    """
    limit = settings.max_calls_per_workflow
    calls = counters.llm_calls - (base.llm_calls if base is not None else 0)
    if limit is not None and calls >= limit:
        return f"LLM call budget spent ({calls}/{limit} calls)"
    used = counters.prompt_tokens + counters.completion_tokens
    used -= base.llm_tokens if base is not None else 0
    tokens = settings.max_tokens_per_workflow
    if tokens is not None and used >= tokens:
        return f"LLM token budget spent ({used}/{tokens} tokens)"
    return None
