"""Counting the LLM calls of one scope (a step attempt, a script's subagents) against budgets.

A ``UsageMeter`` starts from the workflow's state and its LLM settings. Every call made
through it is refused with ``LLMBudgetError`` once the workflow's call or token budget is
spent (counting what this scope already used), and is recorded afterwards whether it
succeeded or failed, with the HTTP requests it really made. The owner of the scope then
charges the workflow with ``charged``.
"""

from __future__ import annotations

from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse
from orchestrator.llm.tracing import traced_complete
from state.config import LLMSettings
from state.errors import LLMBudgetError, LLMError
from state.usage import (
    NO_USAGE,
    ModelPrice,
    Purpose,
    Usage,
    budget_spent,
    call_usage,
    charge,
)
from state.workflow import IterationCounters, WorkflowState


class UsageMeter:
    """Counts the calls of one scope and refuses those the workflow's budget no longer allows.

    Args:
        state: the workflow when the scope began (its counters and budget base).
        settings: the workflow's LLM settings (budgets and prices).
    """

    def __init__(self, state: WorkflowState, settings: LLMSettings) -> None:
        self._counters = state.counters
        self._budget_base = state.budget_base
        self._settings = settings
        self._workflow_id = state.workflow_id
        self._used: dict[Purpose, Usage] = {}

    @property
    def usage(self) -> Usage:
        """What the calls through this meter used, all purposes together."""
        total = NO_USAGE
        for used in self._used.values():
            total = total.plus(used)
        return total

    def charged(self, counters: IterationCounters) -> IterationCounters:
        """``counters`` with this meter's usage added, per purpose."""
        for purpose, used in self._used.items():
            counters = charge(counters, purpose, used)
        return counters

    def budget_spent(self) -> str | None:
        """Why the workflow may make no further call, or None."""
        return budget_spent(self.charged(self._counters), self._settings, self._budget_base)

    async def complete(
        self, model: ChatModel, request: LLMRequest, purpose: Purpose
    ) -> LLMResponse:
        """``model.complete(request)``, refused when the budget is spent, counted either way.

        Raises:
            LLMBudgetError: the workflow's budget is spent; nothing was sent.
            LLMError: as the model raises it (the requests it made are counted).
        """
        spent = self.budget_spent()
        if spent is not None:
            raise LLMBudgetError(
                f"no {purpose.value} call made for workflow '{self._workflow_id}': {spent}; raise "
                "llm.max_calls_per_workflow / llm.max_tokens_per_workflow to go on"
            )
        names = (model.model_name,)
        try:
            response = await traced_complete(model, request)
        except LLMError as exc:
            self._add(purpose, call_usage(max(exc.requests, 1), 0, 0, names, self._prices))
            raise
        except BaseException:  # cancelled by a step timeout: the request was in flight
            self._add(purpose, call_usage(1, 0, 0, names, self._prices))
            raise
        usage = call_usage(
            response.attempts,
            response.prompt_tokens,
            response.completion_tokens,
            (*names, response.model),
            self._prices,
        )
        self._add(purpose, usage)
        return response

    @property
    def _prices(self) -> dict[str, ModelPrice]:
        return self._settings.prices

    def _add(self, purpose: Purpose, usage: Usage) -> None:
        self._used[purpose] = self._used.get(purpose, NO_USAGE).plus(usage)
