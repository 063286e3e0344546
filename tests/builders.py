"""Building realistic workflow states by driving the real machine, for tests.

The reports and step results come from ``state.examples`` (shared with the benchmarks);
they are re-exported here so tests import one module.
"""

from __future__ import annotations

from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.running.updates import complete_step, fail_step, new_workflow, record_answer
from state.clock import FixedClock
from state.config import WorkflowConfig
from state.examples import (
    BAD_CODE,
    BAD_PLAN,
    code_change,
    code_report,
    plan_draft,
    plan_report,
)
from state.reports import CodeValidationReport, PlanValidationReport
from state.steps import Gate, Step
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState

__all__ = [
    "BAD_CODE",
    "BAD_PLAN",
    "Driver",
    "code_change",
    "code_report",
    "plan_draft",
    "plan_report",
]


class Driver:
    """Drives one workflow through the programmatic path with scripted step results."""

    def __init__(self, config: WorkflowConfig | None = None, workflow_id: str = "wf-test") -> None:
        self.config = config or WorkflowConfig()
        self.clock = FixedClock()
        self.pipeline = DecisionPipeline(WorkflowMachine(), self.clock)
        self.state: WorkflowState = new_workflow(
            workflow_id, "build a tabular preprocessing step", "/tmp/ws", self.clock.now()
        )

    def decide(self) -> WorkflowState:
        """Apply the programmatic decision."""
        self.state, _ = self.pipeline.decide_by_rule(self.state, self.config)
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
            return plan_draft()
        if step is Step.PLAN_VALIDATION:
            return plan
        if step in (Step.IMPLEMENTATION, Step.CODE_REFINEMENT):
            return code_change()
        return code

    def to_plan_gate(self) -> WorkflowState:
        """Plan written and converged at the first validation; waiting at the plan gate."""
        self.run_step(plan_draft())
        self.run_step(plan_report())
        self.decide()
        return self.state

    def to_phase2(self) -> WorkflowState:
        """Plan approved; implementation done (step 4 completed)."""
        self.to_plan_gate()
        self.answer(HumanAnswerKind.APPROVE)
        self.decide()  # transition_phase -> step 4 running
        return self.finish(code_change())
