"""One test per classifier signal: it fires in the state it describes, not in its neighbour."""

from __future__ import annotations

import json
import math

import pytest

from orchestrator.deciding.classifier import SIGNALS, Classification, SignalName, classify
from orchestrator.deciding.facts import compute_facts
from state.config import ClassifierSettings, Limits, WorkflowConfig
from state.decision import Route
from state.reports import (
    CodeChange,
    CodeReview,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
    StandardizationReview,
    ToolStatus,
    Verdict,
)
from state.steps import MachineState
from state.workflow import HumanAnswerKind, WorkflowState, parse_state

from builders import BAD_CODE, BAD_PLAN, Driver, code_report, plan_report

PLAN = PlanDraft(version=1, markdown="# plan")
CODE = CodeChange(files=("prep.py",))


def classified(d: Driver, config: WorkflowConfig | None = None) -> Classification:
    """The classifier's verdict on the driver's current state."""
    return classify(compute_facts(d.state, config or d.config))


def names(c: Classification) -> list[str]:
    """The names of the signals that fired."""
    return [s.name for s in c.signals]


def plan_rounds(*reports: PlanValidationReport, config: WorkflowConfig | None = None) -> Driver:
    """Plan written, then validated once per report, with a revision between rounds."""
    d = Driver(config)
    d.run_step(PLAN)
    for i, report in enumerate(reports):
        if i:
            d.run_step(PLAN)
        d.run_step(report)
    return d


def code_rounds(*reports: CodeValidationReport, config: WorkflowConfig | None = None) -> Driver:
    """Code written, then validated once per report, with a refinement between rounds."""
    d = Driver(config)
    d.to_phase2()
    for i, report in enumerate(reports):
        if i:
            d.run_step(CODE)
        d.run_step(report)
    return d


def scores(a: float, s: float = 7.0, c: float = 7.0) -> PlanValidationReport:
    """A plan report that does not converge (one critical issue), with these scores."""
    return plan_report(a, s, c, critical=1)


def failed_times(n: int) -> Driver:
    """Step 1 started and failed ``n`` times in a row (retried in between)."""
    d = Driver()
    d.decide()
    d.fail()
    for _ in range(n - 1):
        d.decide()
        d.fail()
    return d


# -- the normal flow --------------------------------------------------------------------------


def test_clean_progression_is_standard() -> None:
    """Every decidable state of a clean run, both loops included, is standard with no signal."""
    d = Driver()
    seen: list[tuple[MachineState, Classification]] = []

    def decide() -> None:
        seen.append((d.state.machine_state, classified(d)))
        d.decide()

    def step(result: object) -> None:
        decide()
        d.finish(result)

    step(PLAN)
    step(BAD_PLAN)
    step(PLAN)
    step(plan_report())
    decide()  # plan gate
    d.answer(HumanAnswerKind.APPROVE)
    step(CODE)
    step(BAD_CODE)
    step(CODE)
    step(code_report())
    decide()  # final gate
    d.answer(HumanAnswerKind.APPROVE)
    decide()  # complete
    assert d.state.machine_state is MachineState.COMPLETED
    assert len(seen) == 11
    for machine_state, c in seen:
        assert (machine_state, c.route, c.signals) == (machine_state, Route.STANDARD, ())


# -- step errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [1, 2])
def test_step_errors_one_or_two_is_borderline(failures: int) -> None:
    """One or two failed attempts at the current step fire step_errors and route borderline."""
    c = classified(failed_times(failures))
    assert c.route is Route.BORDERLINE
    assert names(c) == ["step_errors"]
    assert f"{failures} failed attempt(s) at step 1" in c.signals[0].detail


def test_step_errors_cleared_once_the_retry_succeeds() -> None:
    """A step that failed and then completed on retry carries no step-error signal."""
    d = failed_times(2)
    d.decide()  # retry
    d.finish(PLAN)
    c = classified(d)
    assert (c.route, names(c)) == (Route.STANDARD, [])


def test_step_errors_high_more_than_two_is_complex() -> None:
    """A third failed attempt at the same step fires step_errors_high and routes complex."""
    c = classified(failed_times(3))
    assert c.route is Route.COMPLEX
    assert names(c) == ["step_errors_high"]


# -- report anomalies -------------------------------------------------------------------------


def test_score_missing_in_plan_report() -> None:
    """A plan report without its alignment score fires score_missing (complex)."""
    c = classified(plan_rounds(scores(7.0).model_copy(update={"alignment_score": None})))
    assert c.route is Route.COMPLEX
    assert names(c) == ["score_missing"]
    assert "alignment_score" in c.signals[0].detail
    neighbour = classified(plan_rounds(scores(7.0)))
    assert (neighbour.route, names(neighbour)) == (Route.STANDARD, [])


@pytest.mark.parametrize(
    ("report", "missing"),
    [
        pytest.param(code_report(score=None), "overall_score", id="overall_score"),
        pytest.param(code_report(status=None), "standardization status", id="status"),
    ],
)
def test_score_missing_in_code_report(report: CodeValidationReport, missing: str) -> None:
    """A code report without its review score or standardization status fires score_missing."""
    c = classified(code_rounds(report))
    assert c.route is Route.COMPLEX
    assert "score_missing" in names(c)
    assert missing in c.signals[names(c).index("score_missing")].detail


@pytest.mark.parametrize(
    ("d", "shown"),
    [
        pytest.param(plan_rounds(scores(12.0)), "alignment_score=12", id="12/10"),
        pytest.param(plan_rounds(scores(float("nan"))), "alignment_score=nan", id="NaN"),
        pytest.param(plan_rounds(scores(-1.0)), "alignment_score=-1", id="-1"),
        pytest.param(code_rounds(code_report(coverage=140.0)), "line_coverage=140", id="cov140"),
    ],
)
def test_score_out_of_range(d: Driver, shown: str) -> None:
    """A score outside 0-10, NaN, or coverage outside 0-100 fires score_out_of_range."""
    c = classified(d)
    assert c.route is Route.COMPLEX
    assert names(c) == ["score_out_of_range"]
    assert shown in c.signals[0].detail


@pytest.mark.parametrize(
    "d",
    [
        pytest.param(plan_rounds(plan_report(10.0, 10.0, 10.0)), id="plan-10"),
        pytest.param(plan_rounds(scores(0.0)), id="plan-0"),
        pytest.param(code_rounds(code_report(coverage=100.0)), id="cov100"),
    ],
)
def test_scores_at_the_ends_of_their_scale_are_in_range(d: Driver) -> None:
    """Scores of exactly 0 or 10 and coverage of exactly 100 are no anomaly."""
    c = classified(d)
    assert (c.route, names(c)) == (Route.STANDARD, [])


def _nan_snapshot() -> WorkflowState:
    d = plan_rounds(scores(float("nan")))
    return parse_state(json.loads(d.state.model_dump_json()))


def test_nan_score_survives_a_snapshot_round_trip() -> None:
    """A NaN score written to a JSON snapshot and read back is still seen as out of range."""
    state = _nan_snapshot()
    c = classify(compute_facts(state, WorkflowConfig()))
    assert names(c) == ["score_out_of_range"]


def _standardization(status: str, critical: int) -> StandardizationReview:
    return StandardizationReview(
        status=status,
        critical_issues=critical,
        minor_issues=0,
    )


@pytest.mark.parametrize(
    ("d", "detail"),
    [
        pytest.param(
            plan_rounds(plan_report(7.0, 7.0, 7.0, critical=2, verdict=Verdict.PASS)),
            "verdict PASS with 2 critical",
            id="plan-pass-with-critical",
        ),
        pytest.param(
            plan_rounds(plan_report(verdict=Verdict.FAIL)),
            "every score passes its threshold but the verdict is FAIL",
            id="plan-scores-pass-verdict-fail",
        ),
        pytest.param(
            code_rounds(
                code_report().model_copy(update={"standardization": _standardization("PASSED", 1)})
            ),
            "standardization PASSED with 1 critical",
            id="standardization-passed-with-critical",
        ),
        pytest.param(
            code_rounds(
                code_report().model_copy(
                    update={
                        "review": CodeReview(
                            overall_score=9.0,
                            critical_issues=1,
                            minor_issues=0,
                            verdict=Verdict.PASS,
                        )
                    }
                )
            ),
            "review PASS with 1 critical",
            id="review-pass-with-critical",
        ),
        pytest.param(
            code_rounds(
                code_report().model_copy(
                    update={
                        "review": CodeReview(
                            overall_score=9.0,
                            critical_issues=0,
                            minor_issues=0,
                            verdict=Verdict.FAIL,
                        )
                    }
                )
            ),
            "every metric passes",
            id="code-fail-with-passing-metrics",
        ),
    ],
)
def test_report_contradiction(d: Driver, detail: str) -> None:
    """A report whose verdict contradicts its own numbers fires report_contradiction."""
    c = classified(d)
    assert c.route is Route.COMPLEX
    assert names(c) == ["report_contradiction"]
    assert detail in c.signals[0].detail


@pytest.mark.parametrize(
    "d",
    [
        pytest.param(plan_rounds(plan_report(verdict=Verdict.PASS)), id="plan-pass-clean"),
        pytest.param(
            plan_rounds(plan_report(7.0, 7.0, 7.0, critical=2, verdict=Verdict.FAIL)),
            id="plan-fail-with-failing-scores",
        ),
        pytest.param(
            code_rounds(
                code_report().model_copy(update={"standardization": _standardization("FAILED", 1)})
            ),
            id="standardization-failed-with-critical",
        ),
        pytest.param(
            code_rounds(
                code_report(tools=(ToolStatus.PASSED, ToolStatus.FAILED)).model_copy(
                    update={
                        "review": CodeReview(
                            overall_score=9.0,
                            critical_issues=0,
                            minor_issues=0,
                            verdict=Verdict.FAIL,
                        )
                    }
                )
            ),
            id="code-fail-with-a-failing-tool",
        ),
    ],
)
def test_consistent_verdicts_are_no_contradiction(d: Driver) -> None:
    """A verdict that agrees with the report's numbers fires nothing."""
    c = classified(d)
    assert (c.route, names(c)) == (Route.STANDARD, [])


def test_tool_crashed() -> None:
    """A deterministic tool that crashed fires tool_crashed; one that failed does not."""
    c = classified(code_rounds(code_report(tools=(ToolStatus.PASSED, ToolStatus.CRASHED))))
    assert c.route is Route.COMPLEX
    assert names(c) == ["tool_crashed"]
    assert "tool1" in c.signals[0].detail
    neighbour = classified(code_rounds(code_report(tools=(ToolStatus.PASSED, ToolStatus.FAILED))))
    assert (neighbour.route, names(neighbour)) == (Route.STANDARD, [])


# -- convergence problems ---------------------------------------------------------------------


def test_no_improvement_over_three_plan_rounds() -> None:
    """Three plan rounds where neither later round beats the first fire no_improvement."""
    c = classified(plan_rounds(scores(7.0), scores(7.0), scores(7.0)))
    assert c.route is Route.COMPLEX
    assert names(c) == ["no_improvement"]
    improving = classified(plan_rounds(scores(7.0), scores(7.0), scores(7.5)))
    assert (improving.route, names(improving)) == (Route.STANDARD, [])


def test_no_improvement_over_three_code_rounds() -> None:
    """Three code rounds with the same review score fire no_improvement in phase 2 too."""
    c = classified(code_rounds(BAD_CODE, BAD_CODE, BAD_CODE))
    assert c.route is Route.COMPLEX
    assert "no_improvement" in names(c)
    two_rounds = classified(code_rounds(BAD_CODE, BAD_CODE))
    assert "no_improvement" not in names(two_rounds)


def test_score_oscillation() -> None:
    """A score that goes up then down by at least the margin fires score_oscillation."""
    c = classified(plan_rounds(scores(7.0), scores(8.0), scores(7.0)))
    assert c.route is Route.COMPLEX
    assert names(c) == ["score_oscillation"]
    assert "alignment_score 7->8->7" in c.signals[0].detail
    monotonic = classified(plan_rounds(scores(7.0), scores(7.5), scores(8.0)))
    assert (monotonic.route, names(monotonic)) == (Route.STANDARD, [])
    jitter = classified(plan_rounds(scores(7.0), scores(7.1), scores(7.0)))
    assert "score_oscillation" not in names(jitter)


@pytest.mark.parametrize(
    ("d", "shown"),
    [
        pytest.param(plan_rounds(scores(7.0), scores(5.9)), "alignment_score 7->5.9", id="plan"),
        pytest.param(code_rounds(BAD_CODE, code_report(6.5)), "overall_score 8->6.5", id="code"),
    ],
)
def test_score_drop_of_more_than_one(d: Driver, shown: str) -> None:
    """A score that falls by more than 1.0 in one round fires score_drop."""
    c = classified(d)
    assert c.route is Route.COMPLEX
    assert names(c) == ["score_drop"]
    assert shown in c.signals[0].detail


@pytest.mark.parametrize(
    "between",
    [
        pytest.param(plan_report(a=None, s=8.0, c=8.0), id="missing"),
        pytest.param(plan_report(a=math.nan, s=8.0, c=8.0), id="nan"),
        pytest.param(plan_report(a=12.0, s=8.0, c=8.0), id="out-of-range"),
    ],
)
def test_score_drop_across_an_invalid_round(between: PlanValidationReport) -> None:
    """An invalid round in between does not hide a drop: the last valid value counts."""
    c = classified(plan_rounds(scores(8.0), between, scores(6.5)))
    assert "score_drop" in names(c)
    assert "alignment_score 8->6.5" in next(s for s in c.signals if s.name == "score_drop").detail
    steady = classified(plan_rounds(scores(8.0), between, scores(7.5)))
    assert "score_drop" not in names(steady)


def test_score_drop_of_exactly_one_is_not_a_drop() -> None:
    """A fall of exactly 1.0 is within the allowed drop."""
    c = classified(plan_rounds(scores(7.0), scores(6.0)))
    assert (c.route, names(c)) == (Route.STANDARD, [])


# -- human free text --------------------------------------------------------------------------


def escalated(kind: HumanAnswerKind, *changes: str) -> Driver:
    """Plan revision limit (2) reached, escalated, and answered with ``kind``."""
    d = plan_rounds(
        *(plan_report(a=a, critical=1) for a in (7.0, 7.3, 7.6)),
        config=WorkflowConfig(limits=Limits(max_plan_revisions=2)),
    )
    d.decide()  # escalate
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(kind, *changes)
    return d


def test_human_free_text_at_an_escalation() -> None:
    """Guidance given at an escalation fires human_free_text and routes complex."""
    c = classified(escalated(HumanAnswerKind.REQUEST_CHANGES, "drop the PCA step"))
    assert c.route is Route.COMPLEX
    assert names(c) == ["human_free_text"]
    assert "drop the PCA step" in c.signals[0].detail


def test_approval_at_an_escalation_is_not_free_text() -> None:
    """A plain approval at an escalation carries no text to interpret."""
    c = classified(escalated(HumanAnswerKind.APPROVE))
    assert (c.route, names(c)) == (Route.STANDARD, [])


def test_changes_at_the_plan_gate_are_not_free_text() -> None:
    """Change requests at a regular gate map to one action: no human_free_text."""
    d = Driver()
    d.to_plan_gate()
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "add a data-quality section")
    c = classified(d)
    assert (c.route, names(c)) == (Route.STANDARD, [])


# -- near threshold ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "shown"),
    [
        pytest.param(plan_report(a=8.75), "alignment_score 8.75 vs 9", id="0.25-below"),
        pytest.param(plan_report(a=9.25), "alignment_score 9.25 vs 9", id="0.25-above"),
        pytest.param(plan_report(s=7.9), "standardization_score 7.9 vs 8", id="standardization"),
        pytest.param(plan_report(c=8.1), "compatibility_score 8.1 vs 8", id="compatibility"),
    ],
)
def test_near_threshold_plan(report: PlanValidationReport, shown: str) -> None:
    """A plan score within 0.25 of its threshold, either side, fires near_threshold."""
    c = classified(plan_rounds(report))
    assert c.route is Route.BORDERLINE
    assert names(c) == ["near_threshold"]
    assert shown in c.signals[0].detail


@pytest.mark.parametrize(
    "d",
    [
        pytest.param(plan_rounds(plan_report(a=9.1, s=6.0)), id="plan-passing-beside-a-miss"),
        pytest.param(plan_rounds(plan_report(a=8.9, s=6.0)), id="plan-failing-beside-a-miss"),
        pytest.param(plan_rounds(plan_report(a=8.9, critical=1)), id="plan-critical-issue"),
        pytest.param(
            code_rounds(code_report(7.2, tools=(ToolStatus.PASSED, ToolStatus.FAILED))),
            id="code-review-score-with-a-failing-tool",
        ),
        pytest.param(code_rounds(code_report(6.8, status="FAILED")), id="code-standardization"),
        pytest.param(code_rounds(code_report(coverage=85.1, minor=3)), id="coverage-minor-issues"),
    ],
)
def test_near_threshold_beside_another_miss_is_not_borderline(d: Driver) -> None:
    """A near-threshold score beside another failing criterion leaves the state standard.

    Only a score that decides convergence on its own is borderline.
    """
    c = classified(d)
    assert (c.route, names(c)) == (Route.STANDARD, [])


@pytest.mark.parametrize("a", [8.7, 9.3])
def test_just_outside_the_margin_is_not_near(a: float) -> None:
    """A plan score 0.3 from its threshold, either side, is not borderline."""
    c = classified(plan_rounds(plan_report(a=a)))
    assert (c.route, names(c)) == (Route.STANDARD, [])


@pytest.mark.parametrize(
    ("report", "shown"),
    [
        pytest.param(code_report(7.2), "overall_score 7.2 vs 7", id="review-score"),
        pytest.param(code_report(6.8), "overall_score 6.8 vs 7", id="review-score-below"),
        pytest.param(code_report(coverage=85.2), "line_coverage 85.2 vs 85", id="coverage"),
    ],
)
def test_near_threshold_code(report: CodeValidationReport, shown: str) -> None:
    """A review score near the tools threshold or coverage near its minimum is borderline."""
    c = classified(code_rounds(report))
    assert c.route is Route.BORDERLINE
    assert names(c) == ["near_threshold"]
    assert shown in c.signals[0].detail


# -- last round -------------------------------------------------------------------------------


def test_last_round_one_plan_revision_left() -> None:
    """An unconverged plan with one revision left before the limit fires last_round."""
    c = classified(
        plan_rounds(BAD_PLAN, config=WorkflowConfig(limits=Limits(max_plan_revisions=1)))
    )
    assert c.route is Route.BORDERLINE
    assert names(c) == ["last_round"]
    assert "one plan revision left" in c.signals[0].detail
    two_left = classified(
        plan_rounds(BAD_PLAN, config=WorkflowConfig(limits=Limits(max_plan_revisions=2)))
    )
    assert (two_left.route, names(two_left)) == (Route.STANDARD, [])


def test_last_round_not_when_the_plan_converged() -> None:
    """A converged plan needs no revision, so one revision left is no last round."""
    c = classified(
        plan_rounds(plan_report(), config=WorkflowConfig(limits=Limits(max_plan_revisions=1)))
    )
    assert (c.route, names(c)) == (Route.STANDARD, [])


def test_last_round_one_code_refinement_left() -> None:
    """Unconverged code with one refinement left before the limit fires last_round."""
    c = classified(
        code_rounds(BAD_CODE, config=WorkflowConfig(limits=Limits(max_code_refinements=1)))
    )
    assert c.route is Route.BORDERLINE
    assert names(c) == ["last_round"]
    assert "one code refinement left" in c.signals[0].detail
    default = classified(code_rounds(BAD_CODE))
    assert (default.route, names(default)) == (Route.STANDARD, [])


def test_last_round_one_decision_left() -> None:
    """With one decision left before max_decisions, even a plain state is borderline."""
    d = Driver(WorkflowConfig(limits=Limits(max_decisions=2)))
    d.run_step(PLAN)
    c = classified(d)
    assert c.route is Route.BORDERLINE
    assert names(c) == ["last_round"]
    assert "one decision left" in c.signals[0].detail
    roomy = classified(d, WorkflowConfig(limits=Limits(max_decisions=3)))
    assert (roomy.route, names(roomy)) == (Route.STANDARD, [])


# -- thresholds come from the config ----------------------------------------------------------


def _classifier(**kw: float) -> WorkflowConfig:
    return WorkflowConfig(classifier=ClassifierSettings(**kw))


def test_borderline_margin_comes_from_the_config() -> None:
    """Widening borderline_margin turns a score 0.4 below its threshold borderline."""
    d = plan_rounds(plan_report(a=8.6))
    assert classified(d).route is Route.STANDARD
    c = classified(d, _classifier(borderline_margin=0.5))
    assert c.route is Route.BORDERLINE
    assert names(c) == ["near_threshold"]


def test_score_drop_comes_from_the_config() -> None:
    """Lowering score_drop turns a fall of 0.8 into a score_drop anomaly."""
    d = plan_rounds(scores(7.0), scores(6.2))
    assert classified(d).route is Route.STANDARD
    c = classified(d, _classifier(score_drop=0.5))
    assert c.route is Route.COMPLEX
    assert names(c) == ["score_drop"]


def test_complex_error_count_comes_from_the_config() -> None:
    """Lowering complex_error_count makes two failures complex instead of borderline."""
    d = failed_times(2)
    assert classified(d).route is Route.BORDERLINE
    c = classified(d, _classifier(complex_error_count=1))
    assert c.route is Route.COMPLEX
    assert names(c) == ["step_errors_high"]


def test_complex_wins_over_borderline() -> None:
    """When a complex and a borderline signal both fire, the route is complex."""
    # Alignment 8.9 is the only criterion missed (pivotal); compatibility dropped 1.5.
    c = classified(plan_rounds(plan_report(a=8.0, c=10.0), plan_report(a=8.9, c=8.5)))
    assert c.route is Route.COMPLEX
    assert sorted(names(c)) == ["near_threshold", "score_drop"]
    routes = {s.name: s.route for s in c.signals}
    assert routes == {"near_threshold": Route.BORDERLINE, "score_drop": Route.COMPLEX}


def test_every_signal_is_defined_once_with_its_route() -> None:
    """Each signal name has one definition; the report anomalies are the untrusted ones."""
    assert set(SIGNALS) == set(SignalName)
    untrusted = {name.value for name, d in SIGNALS.items() if d.untrusted_report}
    assert untrusted == {
        "score_missing",
        "score_out_of_range",
        "report_contradiction",
        "tool_crashed",
    }
    assert all(d.route is not Route.STANDARD for d in SIGNALS.values())
