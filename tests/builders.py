"""Building realistic workflow states by driving the real machine, for tests."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.deciding.engine import DecisionEngine
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.running.updates import complete_step, fail_step, new_workflow, record_answer
from state.clock import FixedClock
from state.config import WorkflowConfig
from state.reports import (
    CodeChange,
    CodeReview,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
    StandardizationReview,
    ToolResult,
    ToolStatus,
    Verdict,
)
from state.steps import Gate, Step
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState


def plan_report(
    a: float | None = 9.5,
    s: float | None = 8.5,
    c: float | None = 8.5,
    critical: int | None = 0,
    minor: int | None = 1,
    verdict: Verdict | None = None,
    markdown: str = "",
) -> PlanValidationReport:
    """A plan report (defaults converge)."""
    return PlanValidationReport(
        alignment_score=a,
        standardization_score=s,
        compatibility_score=c,
        critical_issues=critical,
        minor_issues=minor,
        verdict=verdict,
        markdown=markdown,
    )


BAD_PLAN = plan_report(7.0, 7.0, 7.0, critical=1)


def code_report(
    score: float | None = 9.0,
    tools: Iterable[ToolStatus] = (ToolStatus.PASSED, ToolStatus.PASSED),
    critical: int = 0,
    minor: int = 0,
    status: str | None = "PASSED",
    coverage: float | None = 92.0,
    markdown: str = "",
) -> CodeValidationReport:
    """A code report (defaults converge); a score below 7 skips the tools."""
    ran = score is not None and 0 <= score <= 10 and score >= 7
    return CodeValidationReport(
        review=CodeReview(
            overall_score=score, critical_issues=critical, minor_issues=minor, markdown=markdown
        ),
        standardization=StandardizationReview(
            status=status,
            critical_issues=0,
            minor_issues=0,  # type: ignore[arg-type]
        ),
        tools=tuple(ToolResult(name=f"tool{i}", status=t) for i, t in enumerate(tools))
        if ran
        else (),
        tools_skipped_reason=None if ran else "review score below 7",
        line_coverage=coverage if ran else None,
    )


BAD_CODE = code_report(8.0, (ToolStatus.PASSED, ToolStatus.FAILED), minor=3)


class Driver:
    """Drives one workflow through the programmatic path with scripted step results."""

    def __init__(self, config: WorkflowConfig | None = None, workflow_id: str = "wf-test") -> None:
        self.config = config or WorkflowConfig()
        self.clock = FixedClock()
        self.engine = DecisionEngine(WorkflowMachine(), self.clock)
        self.state: WorkflowState = new_workflow(
            workflow_id, "build a tabular preprocessing step", "/tmp/ws", self.clock.now()
        )

    def decide(self) -> WorkflowState:
        """Apply the programmatic decision."""
        self.state, _ = self.engine.decide(self.state, self.config)
        return self.state

    def running(self) -> Step | None:
        """The step in flight, if any."""
        rec = self.state.last_record
        return rec.step if rec is not None and rec.status is StepStatus.RUNNING else None

    def finish(self, result: object) -> WorkflowState:
        """Complete the running step with ``result``."""
        self.state = complete_step(self.state, result, self.clock.now())  # type: ignore[arg-type]
        return self.state

    def fail(self, error_type: str = "llm_unavailable", retryable: bool = True) -> WorkflowState:
        """Fail the running step."""
        self.state = fail_step(
            self.state, error_type, "boom", self.clock.now(), retryable=retryable
        )
        return self.state

    def answer(self, kind: HumanAnswerKind, *changes: str, gate: Gate | None = None) -> None:
        """Answer the waiting gate."""
        self.state = record_answer(
            self.state, gate, kind, by="tester", now=self.clock.now(), changes=changes
        )

    def run_step(self, result: object) -> WorkflowState:
        """Decide (which must start a step), then finish it with ``result``."""
        self.decide()
        assert self.running() is not None, self.state.machine_state
        return self.finish(result)

    def default_result(
        self,
        step: Step,
        plan: PlanValidationReport = BAD_PLAN,
        code: CodeValidationReport = BAD_CODE,
    ) -> object:
        """A plausible result for ``step``."""
        if step in (Step.INITIAL_PLANNING, Step.PLAN_REVISION):
            return PlanDraft(version=1, markdown="# plan")
        if step is Step.PLAN_VALIDATION:
            return plan
        if step in (Step.IMPLEMENTATION, Step.CODE_REFINEMENT):
            return CodeChange(files=("prep.py",))
        return code

    def to_plan_gate(self) -> WorkflowState:
        """Plan written and converged at the first validation; waiting at the plan gate."""
        self.run_step(PlanDraft(version=1, markdown="# plan"))
        self.run_step(plan_report())
        self.decide()
        return self.state

    def to_phase2(self) -> WorkflowState:
        """Plan approved; implementation done (step 4 completed)."""
        self.to_plan_gate()
        self.answer(HumanAnswerKind.APPROVE)
        self.decide()  # transition_phase -> step 4 running
        return self.finish(CodeChange(files=("prep.py",)))
