"""What an agent is given for one attempt at one step, and what it must return.

``StepContext`` carries the workflow's inputs for the step, its time budget and the meter
its LLM calls are counted on; ``StepAgent`` is the protocol every agent implements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.llm.metering import UsageMeter
from state.check_settings import ValidationSetup
from state.config import CodeThresholds, PlanThresholds
from state.decision import RecoveryStrategy
from state.errors import AgentError
from state.reports import (
    CodeChange,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
)
from state.sandbox_settings import SandboxSettings
from state.steps import STEP_SPECS, Step
from state.usage import Purpose

AgentResult = PlanDraft | PlanValidationReport | CodeValidationReport | CodeChange
"""What an agent returns: the result type of the step it ran."""

EXPECTED_RESULT: dict[Step, type[AgentResult]] = {
    Step.INITIAL_PLANNING: PlanDraft,
    Step.PLAN_VALIDATION: PlanValidationReport,
    Step.PLAN_REVISION: PlanDraft,
    Step.IMPLEMENTATION: CodeChange,
    Step.CODE_VALIDATION: CodeValidationReport,
    Step.CODE_REFINEMENT: CodeChange,
    Step.CONVERGENCE_VALIDATION: CodeValidationReport,
}

DEFAULT_STEP_TIMEOUT_S = 300.0
NONE_GIVEN = "(none)"


@dataclass(frozen=True, slots=True)
class StepContext:
    """Everything an agent is given to run one attempt at one step.

    Attributes:
        workflow_id: the workflow the step belongs to (bound to every log event).
        step: the step to run.
        workspace: the workflow's workspace directory; agents read and write only inside it.
        requirements: the user's written requirement.
        attempt: 1-based attempt number at this step.
        plan_markdown: the current plan (the approved one in phase 2); None before step 1.
        plan_version: its version; None before step 1.
        plan_report: the latest step-2 report (step 3 revises from it).
        code_report: the latest step-5/7 report (step 6 refines from it).
        change_requests: human change requests or escalation guidance for this step.
        recovery_strategy: how this attempt retries a failed one, if it is a retry.
        last_error: the previous attempt's error message (used by ``corrected_input``).
        timeout_s: the step's time budget, before any recovery strategy.
        plan_thresholds: phase-1 convergence thresholds (the plan validator states them).
        code_thresholds: phase-2 thresholds (the review score that lets the tools run).
        sandbox: the limits the deterministic tools run under (the workflow's ``sandbox:``).
        validation: the Python and the checks of level 2 (``environment:`` and ``checks:``).
        meter: counts the step's LLM calls and refuses them once the workflow's LLM budget
            is spent; None (tests, tools) leaves calls uncounted.
    """

    workflow_id: str
    step: Step
    workspace: Path
    requirements: str = ""
    attempt: int = 1
    plan_markdown: str | None = None
    plan_version: int | None = None
    plan_report: PlanValidationReport | None = None
    code_report: CodeValidationReport | None = None
    change_requests: tuple[str, ...] = ()
    recovery_strategy: RecoveryStrategy | None = None
    last_error: str | None = None
    timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    plan_thresholds: PlanThresholds = field(default_factory=PlanThresholds)
    code_thresholds: CodeThresholds = field(default_factory=CodeThresholds)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    validation: ValidationSetup = field(default_factory=ValidationSetup)
    meter: UsageMeter | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ValueError(
                f"timeout_s must be a positive number of seconds, got {self.timeout_s}"
            )
        if self.attempt < 1:
            raise ValueError(f"attempt is 1-based, got {self.attempt}")

    @property
    def effective_timeout_s(self) -> float:
        """The step's time budget: doubled when retried with ``extended_timeout``."""
        if self.recovery_strategy is RecoveryStrategy.EXTENDED_TIMEOUT:
            return self.timeout_s * 2
        return self.timeout_s

    @property
    def purpose(self) -> Purpose:
        """What the step's LLM calls are counted as: the agent the step belongs to."""
        return Purpose(STEP_SPECS[self.step].agent.value)

    @property
    def label(self) -> str:
        """``step 2 (plan validation) of workflow wf-1``, for messages."""
        return (
            f"step {int(self.step)} ({STEP_SPECS[self.step].name}) of workflow '{self.workflow_id}'"
        )


class StepAgent(Protocol):
    """An agent that runs the steps assigned to it."""

    async def run(self, ctx: StepContext) -> AgentResult:
        """Run ``ctx.step`` and return its result.

        Raises:
            AgentError: for failures the agent recognises (invalid output, a workspace
                violation); other errors are translated by ``StepAgents``.
        """
        ...


def require_plan(ctx: StepContext) -> tuple[str, int]:
    """The context's plan and version.

    Raises:
        AgentError: ``missing_input`` when the step needs a plan and has none.
    """
    if not ctx.plan_markdown or not ctx.plan_markdown.strip() or ctx.plan_version is None:
        raise AgentError(
            f"{ctx.label} needs the current plan and its version, and the context "
            "has none; run step 1 first",
            error_type="missing_input",
            retryable=False,
        )
    return ctx.plan_markdown, ctx.plan_version
