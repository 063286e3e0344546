"""The workflow's rules, evaluated once per decision into a ``Facts`` view.

Guards of the state machine, the classifier's signals and the programmatic orchestrator all
read the same ``Facts``, so a rule is written once: convergence, limits, gate answers and
step failures mean the same thing wherever they are checked.
"""

from __future__ import annotations

import math

from state.config import CodeThresholds, PlanThresholds, WorkflowConfig
from state.reports import CodeValidationReport, PlanValidationReport, ToolStatus
from state.steps import STEP_OF_STATE, MachineState, Step
from state.workflow import StepRecord, StepStatus, WorkflowState

PLAN_SCORE_FIELDS = ("alignment_score", "standardization_score", "compatibility_score")
_PLAN_THRESHOLD_OF = {
    "alignment_score": "alignment",
    "standardization_score": "standardization",
    "compatibility_score": "compatibility",
}
SCORE_MIN, SCORE_MAX = 0.0, 10.0
_VALIDATION_STEPS = (Step.PLAN_VALIDATION, Step.CODE_VALIDATION, Step.CONVERGENCE_VALIDATION)


def valid_score(value: float | None, top: float = SCORE_MAX) -> bool:
    """A score is usable when present, a number, and on its scale."""
    return value is not None and not math.isnan(value) and SCORE_MIN <= value <= top


def plan_scores(report: PlanValidationReport) -> tuple[float | None, float | None, float | None]:
    """The three gating scores of a plan report, in the order of ``PLAN_SCORE_FIELDS``."""
    return (report.alignment_score, report.standardization_score, report.compatibility_score)


def plan_converged(report: PlanValidationReport | None, t: PlanThresholds) -> bool:
    """Phase 1 convergence: every score valid and at its threshold, critical issues in limit."""
    if report is None:
        return False
    a, s, c = report.alignment_score, report.standardization_score, report.compatibility_score
    return (
        valid_score(a) and valid_score(s) and valid_score(c)
        and a >= t.alignment  # type: ignore[operator]
        and s >= t.standardization  # type: ignore[operator]
        and c >= t.compatibility  # type: ignore[operator]
        and report.critical_issues is not None
        and 0 <= report.critical_issues <= t.max_critical_issues
    )


def code_issue_counts(report: CodeValidationReport) -> tuple[int | None, int | None]:
    """Critical and minor issues summed over both level-1 reports (None if any is missing)."""
    r, s = report.review, report.standardization
    if None in (r.critical_issues, s.critical_issues, r.minor_issues, s.minor_issues):
        return None, None
    return (
        r.critical_issues + s.critical_issues,  # type: ignore[operator]
        r.minor_issues + s.minor_issues,  # type: ignore[operator]
    )


def tools_ran(report: CodeValidationReport, t: CodeThresholds) -> bool:
    """Level 2 ran: the review scored high enough and at least one tool produced a verdict."""
    score = report.review.overall_score
    return (
        valid_score(score)
        and score >= t.review_score_for_tools  # type: ignore[operator]
        and report.tools_skipped_reason is None
        and len(report.tools) > 0
    )


def code_converged(report: CodeValidationReport | None, t: CodeThresholds) -> bool:
    """Phase 2 convergence (WORKFLOW.md): tools, issues, standardization and coverage."""
    if report is None or not tools_ran(report, t):
        return False
    passed = sum(1 for tool in report.tools if tool.status is ToolStatus.PASSED)
    if passed / len(report.tools) < t.tool_pass_rate:
        return False
    critical, minor = code_issue_counts(report)
    if critical is None or minor is None or critical < 0 or minor < 0:
        return False
    if critical > t.max_critical_issues or minor > t.max_minor_issues:
        return False
    if report.standardization.status != "PASSED":
        return False
    cov = report.line_coverage
    return cov is None or (valid_score(cov, 100.0) and cov >= t.min_line_coverage)


class Facts:
    """Everything the rules need about one state, computed once per decision.

    The cheap facts are computed up front; the latest reports and their convergence verdicts
    are looked up on first use, since most states (a plan was written, code was refined)
    never ask for them. Read-only: nothing changes a ``Facts`` after it is built.
    """

    __slots__ = (
        "_code_converged",
        "_plan_converged",
        "_reports",
        "answer",
        "config",
        "decisions_left",
        "failures",
        "machine_state",
        "origin",
        "record",
        "retryable",
        "state",
        "step",
        "step_failed",
        "step_ok",
    )

    def __init__(self, state: WorkflowState, config: WorkflowConfig) -> None:
        self.state = state
        self.config = config
        ms = self.machine_state = state.machine_state
        origin = self.origin = escalation_origin(state) if ms is MachineState.ESCALATED else ms
        step = self.step = STEP_OF_STATE.get(origin)
        base = state.budget_base
        record: StepRecord | None = None
        failures = 0
        if step is not None:
            for rec in reversed(state.history):
                if rec.step is not step:
                    break
                if record is None:
                    record = rec
                if rec.status is StepStatus.COMPLETED:
                    break
                if rec.decision_seq > base.decisions:
                    failures += 1
        self.record = record
        self.failures = failures
        self.step_ok = ok = record is not None and record.status is StepStatus.COMPLETED
        self.step_failed = record is not None and not ok
        error = record.error if record is not None else None
        self.retryable = error is None or error.retryable
        self.answer = state.pending_answer
        self.decisions_left = config.limits.max_decisions - (len(state.decisions) - base.decisions)
        self._reports: _Reports | None = None
        self._plan_converged: bool | None = None
        self._code_converged: bool | None = None

    def _lookup(self) -> _Reports:
        found = self._reports
        if found is None:
            found = self._reports = _latest_reports(self.state.history)
        return found

    @property
    def plan_report(self) -> PlanValidationReport | None:
        """The latest completed plan validation report."""
        return self._lookup()[0]

    @property
    def code_report(self) -> CodeValidationReport | None:
        """The latest completed code validation report."""
        return self._lookup()[1]

    @property
    def has_plan(self) -> bool:
        """A plan has been written."""
        return self._lookup()[2]

    @property
    def has_code(self) -> bool:
        """Code has been written."""
        return self._lookup()[3]

    @property
    def plan_converged(self) -> bool:
        """The latest plan report meets every phase-1 criterion."""
        v = self._plan_converged
        if v is None:
            v = self._plan_converged = plan_converged(
                self.plan_report, self.config.plan_thresholds
            )
        return v

    @property
    def code_converged(self) -> bool:
        """The latest code reports meet every phase-2 criterion."""
        v = self._code_converged
        if v is None:
            v = self._code_converged = code_converged(
                self.code_report, self.config.code_thresholds
            )
        return v

    @property
    def plan_revisions_left(self) -> int:
        """Revisions left before the limit (fresh budgets after an escalation answer)."""
        base = self.state.budget_base
        done = self.state.counters.plan_revisions - base.plan_revisions
        return _granted(self.config.limits.max_plan_revisions, base.decisions) - done

    @property
    def code_refinements_left(self) -> int:
        """Refinements left before the limit (fresh budgets after an escalation answer)."""
        base = self.state.budget_base
        done = self.state.counters.code_refinements - base.code_refinements
        return _granted(self.config.limits.max_code_refinements, base.decisions) - done


def _granted(limit: int, granted_at: int) -> int:
    """A budget; one a human granted at an escalation allows at least one more round."""
    return max(limit, 1) if granted_at else limit


_Reports = tuple[PlanValidationReport | None, CodeValidationReport | None, bool, bool]


def _latest_reports(history: tuple[StepRecord, ...]) -> _Reports:
    plan: PlanValidationReport | None = None
    code: CodeValidationReport | None = None
    has_plan = has_code = False
    for rec in reversed(history):
        if rec.status is not StepStatus.COMPLETED:
            continue
        res = rec.result
        if plan is None and isinstance(res, PlanValidationReport):
            plan = res
        elif code is None and isinstance(res, CodeValidationReport):
            code = res
        step = rec.step
        if step is Step.INITIAL_PLANNING or step is Step.PLAN_REVISION:
            has_plan = True
        elif step is Step.IMPLEMENTATION or step is Step.CODE_REFINEMENT:
            has_code = True
        if plan is not None and code is not None and has_plan and has_code:
            break
    return plan, code, has_plan, has_code


def escalation_origin(state: WorkflowState) -> MachineState:
    """The machine state an escalation interrupted (its decision's ``state_before``)."""
    for rec in reversed(state.decisions):
        if rec.state_after is MachineState.ESCALATED and rec.state_before is not rec.state_after:
            return rec.state_before
    return MachineState.ESCALATED


def compute_facts(state: WorkflowState, config: WorkflowConfig) -> Facts:
    """Evaluate the rules for ``state`` under ``config``."""
    return Facts(state, config)


def just_validated(f: Facts) -> bool:
    """Whether the decision follows a completed validation step (reports are fresh)."""
    return f.step_ok and f.step in _VALIDATION_STEPS
