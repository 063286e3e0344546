"""The workflow state: where a workflow is, what each step produced, and what was decided.

States are immutable: every change returns a new object (``model_copy(update=...)``), so a
snapshot handed to a store or a log is never changed behind its back.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from state.decision import DecisionRecord
from state.errors import StateError
from state.reports import StepResult
from state.steps import GATE_OF_STATE, Gate, MachineState, Step, WorkflowStatus, status_of
from state.usage import Usage, UsageByPurpose
from state.validation import describe_validation_error

# NaN scores are kept through JSON (as the NaN constant): the classifier must see them.
_FROZEN = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

SCHEMA_VERSION: Literal[1] = 1


class StepStatus(StrEnum):
    """Where one attempt at a step stands."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class StepErrorType(StrEnum):
    """What kind of failure ended an attempt (stored: the values never change)."""

    TIMEOUT = "timeout"
    LLM_UNAVAILABLE = "llm_unavailable"
    LLM_ERROR = "llm_error"
    INVALID_OUTPUT = "invalid_output"
    TEMPLATE_ERROR = "template_error"
    SANDBOX_ERROR = "sandbox_error"
    WORKSPACE_ERROR = "workspace_error"
    WORKSPACE_VIOLATION = "workspace_violation"
    MISSING_INPUT = "missing_input"
    INTERNAL_ERROR = "internal_error"
    INTERRUPTED = "interrupted"  # the process running the step died
    BUDGET_EXHAUSTED = "budget_exhausted"  # refused its LLM calls: the workflow's budget is spent


class StepError(BaseModel):
    """Why an attempt at a step failed."""

    model_config = _FROZEN

    type: StepErrorType
    message: str
    attempts: int = Field(1, ge=1, description="attempts at this step so far, this one included")
    retryable: bool = True


class StepRecord(BaseModel):
    """One attempt at one step, with its result or its error."""

    model_config = _FROZEN

    step: Step
    attempt: int = Field(1, ge=1)
    status: StepStatus
    decision_seq: int = Field(0, ge=0, description="the decision that started this attempt")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: StepResult | None = None
    error: StepError | None = None
    change_requests: tuple[str, ...] = ()
    llm_usage: Usage | None = Field(None, description="the LLM calls this attempt made")


class HumanAnswerKind(StrEnum):
    """What a human can answer at a gate."""

    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_CHANGES = "request_changes"
    ACCEPT = "accept"  # at an escalation: take the work as it stands, converged or not


def answer_kinds_at(gate: Gate) -> tuple[HumanAnswerKind, ...]:
    """The answers a human may give at ``gate``.

    Accepting unconverged work is an answer to an escalation only (the other gates are
    reached by converged work).
    """
    if gate is Gate.ESCALATION:
        return tuple(HumanAnswerKind)
    return tuple(k for k in HumanAnswerKind if k is not HumanAnswerKind.ACCEPT)


class HumanAnswer(BaseModel):
    """A human's recorded answer at a gate."""

    model_config = _FROZEN

    gate: Gate
    answer: HumanAnswerKind
    changes: tuple[str, ...] = Field((), description="change requests or escalation guidance")
    comment: str | None = None
    by: str
    at: datetime
    after_decision: int = Field(ge=0, description="decision count when the answer was given")


class IterationCounters(BaseModel):
    """Rounds done and LLM usage, summed over the workflow.

    ``llm_calls`` and the token totals cover every LLM request of the workflow (decisions,
    agents, script subagents); ``llm_usage`` splits them by purpose (see ``state.usage``).
    """

    model_config = _FROZEN

    plan_revisions: int = Field(0, ge=0, description="completed step-3 revisions")
    code_refinements: int = Field(0, ge=0, description="completed step-6 refinements")
    llm_calls: int = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    llm_usage: UsageByPurpose = UsageByPurpose()

    @property
    def llm_cost_usd(self) -> float | None:
        """The estimated cost of all LLM calls; None when no priced model was called."""
        return self.llm_usage.total.cost_usd


class BudgetBase(BaseModel):
    """Counts at the last escalation answer: a human answer there grants fresh budgets."""

    model_config = _FROZEN

    plan_revisions: int = Field(0, ge=0)
    code_refinements: int = Field(0, ge=0)
    decisions: int = Field(0, ge=0)
    llm_calls: int = Field(0, ge=0, description="LLM requests so far; the LLM budgets count on")
    llm_tokens: int = Field(0, ge=0, description="LLM tokens so far, likewise")


class WorkflowState(BaseModel):
    """A workflow's whole state, as snapshotted, stored and decided upon."""

    model_config = _FROZEN

    schema_version: Literal[1] = SCHEMA_VERSION
    workflow_id: str = Field(min_length=1)
    requirements: str = ""
    workspace: str = ""
    phase: Literal[1, 2] = 1
    machine_state: MachineState = MachineState.NEW
    current_step: Step | None = None
    last_completed_step: Step | None = None
    history: tuple[StepRecord, ...] = ()
    counters: IterationCounters = IterationCounters()
    budget_base: BudgetBase = BudgetBase()
    human_answers: tuple[HumanAnswer, ...] = ()
    decisions: tuple[DecisionRecord, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def status(self) -> WorkflowStatus:
        """The user-facing status."""
        return status_of(self.machine_state)

    @property
    def waiting_gate(self) -> Gate | None:
        """The gate the workflow waits at, if a human answer is still due there."""
        gate = GATE_OF_STATE.get(self.machine_state)
        if gate is None or self.pending_answer is not None:
            return None
        return gate

    @property
    def pending_answer(self) -> HumanAnswer | None:
        """The human answer given at the current gate and not yet acted on."""
        if self.human_answers:
            last = self.human_answers[-1]
            if last.after_decision == len(self.decisions):
                return last
        return None

    @property
    def last_record(self) -> StepRecord | None:
        """The latest attempt at any step."""
        return self.history[-1] if self.history else None


def parse_state(data: Any, source: str = "state") -> WorkflowState:
    """Validate a state snapshot (a mapping parsed from JSON).

    Raises:
        StateError: naming the field and the problem.
    """
    if not isinstance(data, dict):
        raise StateError(f"{source}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StateError(
            f"{source}: written by a newer schema (version {version}); this program reads "
            f"version {SCHEMA_VERSION}. Upgrade hybrid-orchestrator to read it."
        )
    try:
        return WorkflowState.model_validate(data)
    except ValidationError as exc:
        raise StateError(f"{source}: {describe_validation_error(exc)}") from exc
