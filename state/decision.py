"""Orchestration decisions and the envelope every decision is logged in.

A ``Decision`` is what to do next; a ``DecisionRecord`` adds who decided (the source), how
the classifier routed the state, the signals it saw, the legal actions offered, the
programmatic alternative an LLM override beat and, for LLM decisions, the call's metadata.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from state.steps import Agent, Gate, MachineState, Step

# NaN scores are kept through JSON (as the NaN constant): the classifier must see them.
_FROZEN = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class ActionKind(StrEnum):
    """The kinds of orchestration decision (see docs/workflow.md)."""

    INVOKE_AGENT = "invoke_agent"
    TRANSITION_PHASE = "transition_phase"
    REQUEST_APPROVAL = "request_approval"
    RETRY_STEP = "retry_step"
    ESCALATE = "escalate"
    COMPLETE = "complete"
    FAIL = "fail"
    REJECT = "reject"  # ends the workflow on a human's recorded rejection


class RecoveryStrategy(StrEnum):
    """How a failed step is retried."""

    EXTENDED_TIMEOUT = "extended_timeout"
    CORRECTED_INPUT = "corrected_input"
    BACKOFF = "backoff"


class EscalationReason(StrEnum):
    """Why a human is asked."""

    PLAN_REVISION_LIMIT = "plan_revision_limit"
    CODE_REFINEMENT_LIMIT = "code_refinement_limit"
    STEP_RETRIES_EXHAUSTED = "step_retries_exhausted"
    DECISION_LIMIT = "decision_limit"
    LLM_BUDGET_EXHAUSTED = "llm_budget_exhausted"  # an agent step had no LLM budget left
    UNDECIDABLE = "undecidable"  # the orchestrator could not decide safely


class Route(StrEnum):
    """The classifier's verdict on who decides."""

    STANDARD = "standard"
    COMPLEX = "complex"
    BORDERLINE = "borderline"


class DecisionSource(StrEnum):
    """Who made a recorded decision."""

    PROGRAMMATIC = "programmatic"
    LLM = "llm"
    RECONCILED_AGREE = "reconciled_agree"
    LLM_OVERRIDE = "llm_override"
    PROGRAMMATIC_FALLBACK = "programmatic_fallback"
    HUMAN = "human"
    SCRIPT = "script"


class Decision(BaseModel):
    """One orchestration decision: what to do next and why."""

    model_config = _FROZEN

    action: ActionKind
    step: Step | None = Field(None, description="the step to run (invoke, retry, phase change)")
    agent: Agent | None = None
    templates: tuple[str, ...] = ()
    context: tuple[str, ...] = Field((), description="inputs the agent is given")
    gate: Gate | None = None
    recovery_strategy: RecoveryStrategy | None = None
    escalation_reason: EscalationReason | None = None
    change_requests: tuple[str, ...] = ()
    rationale: str = ""
    confidence: float | None = Field(None, ge=0, le=1)

    def same_action(self, other: Decision) -> bool:
        """Whether two decisions agree (same action, agent and step), as reconciliation asks."""
        return (
            self.action is other.action
            and self.agent == other.agent
            and self.step == other.step
            and self.gate == other.gate
        )


class Signal(BaseModel):
    """One classifier signal that fired."""

    model_config = _FROZEN

    name: str = Field(description="the classifier's signal name (its SignalName value)")
    route: Route
    detail: str = ""


class LLMCallOutcome(StrEnum):
    """How an LLM consultation ended (stored: the values never change)."""

    OK = "ok"  # a legal, confident answer
    LOW_CONFIDENCE = "low_confidence"  # legal, but below the confidence threshold
    INVALID = "invalid"  # every attempt was refused (not JSON, off-schema, illegal)
    UNAVAILABLE = "unavailable"  # the server could not be reached or failed
    TEMPLATE_ERROR = "template_error"  # the prompt could not be rendered
    # Not asked (0 attempts):
    NOT_NEEDED = "not_needed"  # one legal action: nothing to choose
    BUDGET_EXHAUSTED = "budget_exhausted"  # the workflow's LLM budget is spent
    NO_LLM = "no_llm"  # no LLM is configured


class LLMCallInfo(BaseModel):
    """What an LLM decision cost and how it went."""

    model_config = _FROZEN

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    attempts: int = 0
    response_format: str | None = None
    validation_errors: tuple[str, ...] = ()
    outcome: LLMCallOutcome = Field(
        LLMCallOutcome.OK,
        description="ok, or why the answer was not used; not_needed, budget_exhausted and "
        "no_llm with 0 attempts: the LLM was not asked",
    )


class Routing(BaseModel):
    """Which coordinator mode decided a state, and whether per-state ``routing:`` chose it."""

    model_config = _FROZEN

    coordinator: str = Field(description="the Coordinator value that applied")
    per_state: bool = Field(
        False, description="true: the config's routing: entry for the state; false: coordinator"
    )


class DecisionRecord(BaseModel):
    """A decision as logged and kept in the workflow's decision history."""

    model_config = _FROZEN

    seq: int = Field(ge=1, description="1-based position in the workflow's decision history")
    decided_at: datetime
    decision: Decision
    source: DecisionSource
    route: Route
    signals: tuple[Signal, ...] = ()
    legal_actions: tuple[str, ...] = ()
    programmatic_alternative: Decision | None = None
    conflict_reason: str | None = None
    state_before: MachineState
    state_after: MachineState
    llm: LLMCallInfo | None = None
    routing: Routing | None = Field(
        None, description="the coordinator mode that applied (None: recorded before routing)"
    )


class ShadowDecider(StrEnum):
    """Which decider answered in the shadow of an applied decision."""

    LLM = "llm"  # the LLM, beside a decision the rules took
    RULES = "rules"  # the machine's rules, beside an LLM's or a script's decision


class ShadowOutcome(StrEnum):
    """How a shadow consultation ended (stored: the values never change)."""

    AGREED = "agreed"  # the same action as the applied decision
    DISAGREED = "disagreed"  # a different, legal action
    NO_ANSWER = "no_answer"  # the LLM gave no usable answer (see llm.outcome)
    FAILED = "failed"  # the shadow call raised; the workflow did not notice
    BUDGET_EXHAUSTED = "budget_exhausted"  # the shadow call budget is spent


class ShadowRecord(BaseModel):
    """What the decider the route did not call would have decided; never applied."""

    model_config = _FROZEN

    decision_seq: int = Field(ge=1, description="the applied decision it shadows")
    decided_at: datetime
    decider: ShadowDecider
    outcome: ShadowOutcome
    state: MachineState = Field(description="the machine state decided in")
    route: Route
    signals: tuple[Signal, ...] = ()
    applied: Decision = Field(description="the decision that was applied")
    decision: Decision | None = Field(None, description="the shadow decider's answer, if any")
    llm: LLMCallInfo | None = None
    error: str | None = Field(None, description="why the shadow call failed")
