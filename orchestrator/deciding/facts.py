"""The workflow's rules, evaluated once per decision into a ``Facts`` view.

The guards of the machine's rule table and the classifier's signals all read the same
``Facts``, so a rule is written once: convergence, limits, gate answers and
step failures mean the same thing wherever they are checked.
"""

from __future__ import annotations

from state.config import CodeThresholds, PlanThresholds, WorkflowConfig
from state.fast import STATE_ESCALATED, STEP_IMPLEMENTATION, STEP_STATUS_COMPLETED, TOOL_PASSED
from state.reports import CodeValidationReport, PlanValidationReport
from state.steps import STEP_OF_STATE, MachineState, Step, phase_of_state
from state.workflow import StepRecord, WorkflowState

PLAN_SCORE_FIELDS = ("alignment_score", "standardization_score", "compatibility_score")
_PLAN_THRESHOLD_OF = {
    "alignment_score": "alignment",
    "standardization_score": "standardization",
    "compatibility_score": "compatibility",
}
SCORE_MIN, SCORE_MAX = 0.0, 10.0
_VALIDATION_STEPS = (Step.PLAN_VALIDATION, Step.CODE_VALIDATION, Step.CONVERGENCE_VALIDATION)


def valid_score(value: float | None, top: float = SCORE_MAX) -> bool:
    """A score is usable when present, a number, and on its scale (NaN fails both bounds)."""
    return value is not None and SCORE_MIN <= value <= top


def plan_scores(report: PlanValidationReport) -> tuple[float | None, float | None, float | None]:
    """The three gating scores of a plan report, in the order of ``PLAN_SCORE_FIELDS``."""
    return (report.alignment_score, report.standardization_score, report.compatibility_score)


def plan_shortfalls(report: PlanValidationReport | None, t: PlanThresholds) -> tuple[str, ...]:
    """The phase-1 criteria ``report`` misses (empty: the plan converged).

    Each is named after the report field that misses it: a score that is absent, invalid or
    under its threshold, or ``critical_issues`` absent or over the limit.
    """
    if report is None:
        return ("plan report",)
    out: list[str] = []
    if not _at_least(report.alignment_score, t.alignment):
        out.append("alignment_score")
    if not _at_least(report.standardization_score, t.standardization):
        out.append("standardization_score")
    if not _at_least(report.compatibility_score, t.compatibility):
        out.append("compatibility_score")
    critical = report.critical_issues
    if critical is None or not 0 <= critical <= t.max_critical_issues:
        out.append("critical_issues")
    return tuple(out)


def plan_converged(report: PlanValidationReport | None, t: PlanThresholds) -> bool:
    """Phase 1 convergence: every score valid and at its threshold, critical issues in limit."""
    return not plan_shortfalls(report, t)


def _at_least(value: float | None, threshold: float, top: float = SCORE_MAX) -> bool:
    return valid_score(value, top) and value >= threshold  # type: ignore[operator]


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
    return (
        _at_least(report.review.overall_score, t.review_score_for_tools)
        and report.tools_skipped_reason is None
        and len(report.tools) > 0
    )


def code_shortfalls(report: CodeValidationReport | None, t: CodeThresholds) -> tuple[str, ...]:
    """The phase-2 criteria (see docs/workflow.md) ``report`` misses (empty: the code converged).

    ``overall_score``: the review scored under the bar for the tools (so they did not run);
    ``tools``: they were skipped or produced nothing; ``tool_pass_rate``; ``issue_counts``
    (absent or negative); ``critical_issues``; ``minor_issues``; ``standardization`` (not
    PASSED); ``line_coverage`` (measured and under the minimum).
    """
    if report is None:
        return ("code report",)
    out: list[str] = []
    if not _at_least(report.review.overall_score, t.review_score_for_tools):
        out.append("overall_score")
    elif report.tools_skipped_reason is not None or not report.tools:
        out.append("tools")
    else:
        passed = sum(1 for tool in report.tools if tool.status is TOOL_PASSED)
        if passed / len(report.tools) < t.tool_pass_rate:
            out.append("tool_pass_rate")
    critical, minor = code_issue_counts(report)
    if critical is None or minor is None or critical < 0 or minor < 0:
        out.append("issue_counts")
    else:
        if critical > t.max_critical_issues:
            out.append("critical_issues")
        if minor > t.max_minor_issues:
            out.append("minor_issues")
    if report.standardization.status != "PASSED":
        out.append("standardization")
    cov = report.line_coverage
    if cov is not None and not _at_least(cov, t.min_line_coverage, 100.0):
        out.append("line_coverage")
    return tuple(out)


def code_converged(report: CodeValidationReport | None, t: CodeThresholds) -> bool:
    """Phase 2 convergence: tools, issues, standardization and coverage."""
    return not code_shortfalls(report, t)


class Facts:
    """Everything the rules need about one state, computed once per decision.

    The cheap facts are computed up front; the latest reports and their convergence verdicts
    are looked up on first use, since most states (a plan was written, code was refined)
    never ask for them. Read-only: nothing changes a ``Facts`` after it is built, except the
    machine's memo of its verdict (``legal`` and the edges that ``passed``), which the same
    facts always reproduce.
    """

    __slots__ = (
        "_code_report",
        "_code_shortfalls",
        "_plan_report",
        "_plan_shortfalls",
        "answer",
        "config",
        "decisions_left",
        "failures",
        "legal",
        "machine_state",
        "origin",
        "passed",
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
        origin = self.origin = escalation_origin(state) if ms is STATE_ESCALATED else ms
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
                if rec.status is STEP_STATUS_COMPLETED:
                    break
                if rec.decision_seq > base.decisions:
                    failures += 1
        self.record = record
        self.failures = failures
        self.step_ok = ok = record is not None and record.status is STEP_STATUS_COMPLETED
        self.step_failed = record is not None and not ok
        error = record.error if record is not None else None
        self.retryable = error is None or error.retryable
        self.answer = state.pending_answer
        self.decisions_left = config.limits.max_decisions - (len(state.decisions) - base.decisions)
        self._plan_report: PlanValidationReport | _Unset | None = _UNSET
        self._code_report: CodeValidationReport | _Unset | None = _UNSET
        self.legal: tuple[str, ...] | None = None
        self.passed: set[object] | None = None
        self._plan_shortfalls: tuple[str, ...] | None = None
        self._code_shortfalls: tuple[str, ...] | None = None

    @property
    def plan_report(self) -> PlanValidationReport | None:
        """The latest completed plan validation report."""
        found = self._plan_report
        if found is _UNSET:
            found = self._plan_report = latest_plan_report(self.state.history)
        return found  # type: ignore[return-value]

    @property
    def code_report(self) -> CodeValidationReport | None:
        """The latest completed code validation report."""
        found = self._code_report
        if found is _UNSET:
            found = self._code_report = latest_code_report(self.state.history)
        return found  # type: ignore[return-value]

    @property
    def has_plan(self) -> bool:
        """A plan has been written."""
        return _wrote(self.state.history, _PLAN_WRITING)

    @property
    def has_code(self) -> bool:
        """Code has been written."""
        return _wrote(self.state.history, _CODE_WRITING)

    @property
    def plan_shortfalls(self) -> tuple[str, ...]:
        """The phase-1 criteria the latest plan report misses (see ``plan_shortfalls``)."""
        v = self._plan_shortfalls
        if v is None:
            v = self._plan_shortfalls = plan_shortfalls(
                self.plan_report, self.config.plan_thresholds
            )
        return v

    @property
    def code_shortfalls(self) -> tuple[str, ...]:
        """The phase-2 criteria the latest code report misses (see ``code_shortfalls``)."""
        v = self._code_shortfalls
        if v is None:
            v = self._code_shortfalls = code_shortfalls(
                self.code_report, self.config.code_thresholds
            )
        return v

    @property
    def plan_converged(self) -> bool:
        """The latest plan report meets every phase-1 criterion."""
        return not self.plan_shortfalls

    @property
    def code_converged(self) -> bool:
        """The latest code reports meet every phase-2 criterion."""
        return not self.code_shortfalls

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


class _Unset:
    """The type of ``_UNSET``: a lazily computed fact not computed yet (None is a value)."""


_UNSET = _Unset()
_PLAN_WRITING = (Step.INITIAL_PLANNING, Step.PLAN_REVISION)
_CODE_WRITING = (Step.IMPLEMENTATION, Step.CODE_REFINEMENT)


def latest_plan_report(history: tuple[StepRecord, ...]) -> PlanValidationReport | None:
    """The latest completed plan validation report in ``history``."""
    for rec in reversed(history):
        if rec.status is STEP_STATUS_COMPLETED:
            result = rec.result
            if isinstance(result, PlanValidationReport):
                return result
    return None


def latest_code_report(history: tuple[StepRecord, ...]) -> CodeValidationReport | None:
    """The latest completed code validation report in ``history``.

    Code is validated only in phase 2, so the scan stops at the first phase-1 step.
    """
    for rec in reversed(history):
        if rec.step < STEP_IMPLEMENTATION:
            return None
        if rec.status is STEP_STATUS_COMPLETED:
            result = rec.result
            if isinstance(result, CodeValidationReport):
                return result
    return None


def _wrote(history: tuple[StepRecord, ...], steps: tuple[Step, Step]) -> bool:
    return any(rec.status is STEP_STATUS_COMPLETED and rec.step in steps for rec in history)


def escalation_origin(state: WorkflowState) -> MachineState:
    """The machine state an escalation interrupted (its decision's ``state_before``)."""
    for rec in reversed(state.decisions):
        if rec.state_after is STATE_ESCALATED and rec.state_before is not rec.state_after:
            return rec.state_before
    return STATE_ESCALATED


def work_to_accept(state: WorkflowState) -> str | None:
    """What a human's accept at an escalation takes as it stands.

    The plan (the escalation interrupted phase 1), the code (phase 2), or None when that work
    was never written.
    """
    origin = escalation_origin(state)
    if (phase_of_state(origin) or state.phase) == 1:
        return "plan" if _wrote(state.history, _PLAN_WRITING) else None
    return "code" if _wrote(state.history, _CODE_WRITING) else None


def compute_facts(state: WorkflowState, config: WorkflowConfig) -> Facts:
    """Evaluate the rules for ``state`` under ``config``."""
    return Facts(state, config)


def just_validated(f: Facts) -> bool:
    """Whether the decision follows a completed validation step (reports are fresh)."""
    return f.step_ok and f.step in _VALIDATION_STEPS
