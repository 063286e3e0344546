"""Validation-round summaries name the criteria a report missed."""

from __future__ import annotations

from orchestrator.reporting import scores_line, validation_rounds
from state.config import WorkflowConfig
from state.reports import PlanDraft, ToolStatus
from state.steps import Step
from state.workflow import StepRecord, StepStatus

from builders import Driver, code_report, plan_report


def _record(result: object) -> StepRecord:
    return StepRecord(
        step=Step.PLAN_VALIDATION,
        attempt=1,
        status=StepStatus.COMPLETED,
        decision_seq=1,
        result=result,
    )


def test_plan_summary_names_what_it_missed() -> None:
    """A plan round's line shows its scores beside thresholds and the criteria it missed."""
    line = scores_line(_record(plan_report(a=8.0, critical=1)), WorkflowConfig())
    assert line.endswith("-> not converged (missed: alignment_score, critical_issues)")
    assert scores_line(_record(plan_report()), WorkflowConfig()).endswith("-> converged")


def test_code_summary_names_what_it_missed() -> None:
    """A code round's line names what it missed, the review score when the tools were skipped."""
    report = code_report(8.0, (ToolStatus.PASSED, ToolStatus.FAILED), minor=3, coverage=60.0)
    line = scores_line(_record(report), WorkflowConfig())
    assert line.endswith("(missed: tool_pass_rate, minor_issues, line_coverage)")
    skipped = scores_line(_record(code_report(5.0)), WorkflowConfig())
    assert skipped.endswith("(missed: overall_score)")


def test_rounds_carry_the_missed_criteria() -> None:
    """Each validation round says whether it converged and which criteria it missed."""
    d = Driver()
    d.run_step(PlanDraft(version=1, markdown="# plan"))
    d.run_step(plan_report(a=8.0))
    (round_,) = validation_rounds(d.state, d.config)
    assert round_["converged"] is False and round_["missed"] == ["alignment_score"]
