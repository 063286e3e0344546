"""The decision classifier: which signals fire in a state, and so who decides.

Each signal is defined once, in ``SIGNALS``: its name, its route and whether it means the
report the rules would judge cannot be trusted (then, without a usable LLM answer, a human
decides instead of the rules). Small pure functions from ``Facts`` detect them. A state with
no signal is **standard** (the machine decides alone); any complex signal makes it
**complex** (the LLM decides, the machine checks); otherwise any borderline signal makes it
**borderline** (both decide, then reconcile). Adding a signal: a ``SignalName``, its entry
in ``SIGNALS``, and the check that emits it (with its threshold in ``ClassifierSettings``
if it has one).

Complex signals
    ``step_errors_high``      more than ``complex_error_count`` (2) errors on the current step
    ``score_missing``         a gating score, issue count or status is absent from a report
    ``score_out_of_range``    a score outside 0-10 (coverage outside 0-100) or NaN
    ``report_contradiction``  PASS with critical issues; every criterion met but a FAIL verdict
    ``tool_crashed``          a deterministic tool crashed rather than failed
    ``no_improvement``        neither of the last two rounds beat the round before them
    ``score_oscillation``     a score went up then down (or down then up) over three rounds
    ``score_drop``            a score fell by more than ``score_drop`` (1.0) since it was last
                              measured validly
    ``human_free_text``       an escalation answer with guidance that must be mapped to an action

Borderline signals
    ``step_errors``           1-2 errors on the current step
    ``near_threshold``        a gating score within ``borderline_margin`` (0.25) of its threshold,
                              when that score alone decides convergence (the report converged,
                              or that score is the only criterion missed)
    ``last_round``            one round left before a revision, refinement or decision limit
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.deciding.facts import (
    PLAN_SCORE_FIELDS,
    SCORE_MAX,
    Facts,
    code_issue_counts,
    just_validated,
    plan_scores,
    valid_score,
)
from state.decision import Route, Signal
from state.fast import (
    ANSWER_REQUEST_CHANGES,
    STATE_ESCALATED,
    STEP_IMPLEMENTATION,
    STEP_PLAN_VALIDATION,
    STEP_STATUS_COMPLETED,
    TOOL_CRASHED,
    VERDICT_FAIL,
    VERDICT_PASS,
)
from state.reports import (
    CodeValidationReport,
    PlanValidationReport,
)
from state.steps import GATE_OF_STATE

C, B = Route.COMPLEX, Route.BORDERLINE


class SignalName(StrEnum):
    """The classifier's signals (stored in decision records: the values never change)."""

    STEP_ERRORS_HIGH = "step_errors_high"
    SCORE_MISSING = "score_missing"
    SCORE_OUT_OF_RANGE = "score_out_of_range"
    REPORT_CONTRADICTION = "report_contradiction"
    TOOL_CRASHED = "tool_crashed"
    NO_IMPROVEMENT = "no_improvement"
    SCORE_OSCILLATION = "score_oscillation"
    SCORE_DROP = "score_drop"
    HUMAN_FREE_TEXT = "human_free_text"
    STEP_ERRORS = "step_errors"
    NEAR_THRESHOLD = "near_threshold"
    LAST_ROUND = "last_round"


@dataclass(frozen=True, slots=True)
class SignalDef:
    """What a signal means: who decides when it fires, and whether to trust the rules.

    ``untrusted_report``: the rules' verdict on the report it fired on cannot be trusted.
    """

    route: Route
    untrusted_report: bool = False


N = SignalName
SIGNALS: dict[SignalName, SignalDef] = {
    N.STEP_ERRORS_HIGH: SignalDef(C),
    N.SCORE_MISSING: SignalDef(C, untrusted_report=True),
    N.SCORE_OUT_OF_RANGE: SignalDef(C, untrusted_report=True),
    N.REPORT_CONTRADICTION: SignalDef(C, untrusted_report=True),
    N.TOOL_CRASHED: SignalDef(C, untrusted_report=True),
    N.NO_IMPROVEMENT: SignalDef(C),
    N.SCORE_OSCILLATION: SignalDef(C),
    N.SCORE_DROP: SignalDef(C),
    N.HUMAN_FREE_TEXT: SignalDef(C),
    N.STEP_ERRORS: SignalDef(B),
    N.NEAR_THRESHOLD: SignalDef(B),
    N.LAST_ROUND: SignalDef(B),
}


def signal(name: SignalName, detail: str) -> Signal:
    """The ``Signal`` record of ``name`` firing, with its defined route."""
    return Signal(name=name.value, route=SIGNALS[name].route, detail=detail)


def untrusted_reports(signals: Iterable[Signal]) -> list[str]:
    """The sorted names of the signals in ``signals`` that make the judged report untrusted."""
    return sorted(
        s.name
        for s in signals
        if s.name in SIGNALS and SIGNALS[SignalName(s.name)].untrusted_report
    )


@dataclass(frozen=True, slots=True)
class Classification:
    """The classifier's verdict: a route and the signals behind it."""

    route: Route
    signals: tuple[Signal, ...]


STANDARD = Classification(Route.STANDARD, ())

_CODE_NAMES = ("overall_score",)


def _score_vectors(f: Facts, n: int) -> tuple[tuple[str, ...], list[tuple[float | None, ...]]]:
    """The gating scores of the last ``n`` validation rounds of the current phase, oldest first.

    One pass over the history, newest first: this runs after every validation.
    """
    out: list[tuple[float | None, ...]] = []
    if f.step is STEP_PLAN_VALIDATION:
        for rec in reversed(f.state.history):
            result = rec.result
            if rec.status is STEP_STATUS_COMPLETED and isinstance(result, PlanValidationReport):
                out.append(plan_scores(result))
                if len(out) == n:
                    break
        out.reverse()
        return PLAN_SCORE_FIELDS, out
    floor = STEP_IMPLEMENTATION  # code is validated only in phase 2
    for rec in reversed(f.state.history):
        if rec.step < floor:
            break
        result = rec.result
        if rec.status is STEP_STATUS_COMPLETED and isinstance(result, CodeValidationReport):
            out.append((result.review.overall_score,))
            if len(out) == n:
                break
    out.reverse()
    return _CODE_NAMES, out


def step_errors(f: Facts) -> Signal | None:
    """Errors on the current step: 1-2 are borderline, more are complex."""
    if f.step_failed and f.failures > 0:
        high = f.failures > f.config.classifier.complex_error_count
        kind = f.record.error.type if f.record and f.record.error else "interrupted"
        return signal(
            N.STEP_ERRORS_HIGH if high else N.STEP_ERRORS,
            f"{f.failures} failed attempt(s) at step {int(f.step or 0)} (last: {kind})",
        )
    return None


_Gauge = tuple[str, float | None, float, float]


def _gauges(f: Facts) -> tuple[_Gauge, ...]:
    """(name, value, top of scale, threshold) of each gating score in the fresh report."""
    if f.step is STEP_PLAN_VALIDATION:
        r = f.plan_report
        if r is None:
            return ()
        t = f.config.plan_thresholds
        return (
            ("alignment_score", r.alignment_score, SCORE_MAX, t.alignment),
            ("standardization_score", r.standardization_score, SCORE_MAX, t.standardization),
            ("compatibility_score", r.compatibility_score, SCORE_MAX, t.compatibility),
        )
    c = f.code_report
    if c is None:
        return ()
    ct = f.config.code_thresholds
    review: _Gauge = ("overall_score", c.review.overall_score, SCORE_MAX, ct.review_score_for_tools)
    if c.line_coverage is None:
        return (review,)
    return review, ("line_coverage", c.line_coverage, 100.0, ct.min_line_coverage)


def _missing_counts(f: Facts) -> tuple[str, ...]:
    """Issue counts and statuses the fresh report lacks (scores are checked as gauges)."""
    if f.step is STEP_PLAN_VALIDATION:
        r = f.plan_report
        if r is None:
            return ("plan report",)
        return ("critical_issues",) if r.critical_issues is None else ()
    c = f.code_report
    if c is None:
        return ("code report",)
    missing: tuple[str, ...] = ()
    if code_issue_counts(c)[0] is None:
        missing += ("issue counts",)
    if c.standardization.status is None:
        missing += ("standardization status",)
    return missing


def _contradiction(f: Facts) -> str | None:
    if f.step is STEP_PLAN_VALIDATION:
        r = f.plan_report
        if r is None:
            return None
        if r.verdict is VERDICT_PASS and (r.critical_issues or 0) > 0:
            return f"verdict PASS with {r.critical_issues} critical issue(s)"
        if r.verdict is VERDICT_FAIL and f.plan_converged:
            return "every score passes its threshold but the verdict is FAIL"
        return None
    c = f.code_report
    if c is None:
        return None
    if c.standardization.status == "PASSED" and (c.standardization.critical_issues or 0) > 0:
        return f"standardization PASSED with {c.standardization.critical_issues} critical issue(s)"
    if c.review.verdict is VERDICT_PASS and (c.review.critical_issues or 0) > 0:
        return f"review PASS with {c.review.critical_issues} critical issue(s)"
    if c.review.verdict is VERDICT_FAIL and f.code_converged:
        return (
            "every metric passes (tools, issues, standardization, coverage) but the review "
            "verdict is FAIL"
        )
    return None


def _pivotal(f: Facts, name: str) -> bool:
    """Whether the gating score ``name`` decides convergence on its own.

    It does when the report converged (the score falling under its threshold would undo
    that) or when it is the only criterion missed (the score rising to its threshold would
    converge). A near-threshold score beside another criterion that fails cannot change the
    decision, so it does not make the state borderline.
    """
    short = f.plan_shortfalls if f.step is STEP_PLAN_VALIDATION else f.code_shortfalls
    return not short or short == (name,)


def report_signals(
    f: Facts, anomalies: list[Signal] | None = None
) -> tuple[list[Signal], Signal | None]:
    """One pass over a fresh report: its anomalies and its near-threshold scores.

    Anomalies (complex signals) are appended to ``anomalies``.
    """
    if anomalies is None:
        anomalies = []
    margin = f.config.classifier.borderline_margin
    missing: list[str] = []
    bad: list[str] = []
    close: list[str] = []
    for name, value, top, limit in _gauges(f):
        if value is None:
            missing.append(name)
        elif not valid_score(value, top):
            bad.append(f"{name}={value}")
        elif abs(value - limit) <= margin and _pivotal(f, name):
            close.append(f"{name} {value:g} vs {limit:g}")
    missing += _missing_counts(f)
    if missing:
        anomalies.append(signal(N.SCORE_MISSING, "missing: " + ", ".join(missing)))
    if bad:
        anomalies.append(signal(N.SCORE_OUT_OF_RANGE, ", ".join(bad)))
    contradiction = _contradiction(f)
    if contradiction:
        anomalies.append(signal(N.REPORT_CONTRADICTION, contradiction))
    if f.step is not STEP_PLAN_VALIDATION and f.code_report is not None:
        crashed = [t.name for t in f.code_report.tools if t.status is TOOL_CRASHED]
        if crashed:
            anomalies.append(signal(N.TOOL_CRASHED, "crashed: " + ", ".join(crashed)))
    near = signal(N.NEAR_THRESHOLD, ", ".join(close)) if close else None
    return anomalies, near


def convergence_problems(f: Facts) -> list[Signal]:
    """No improvement, oscillation or a sharp drop over the last validation rounds.

    Called after a validation step (``classify`` checks ``just_validated``).
    """
    # A phase has at most one validation round more than its revisions or refinements.
    counters = f.state.counters
    done = counters.plan_revisions if f.step is STEP_PLAN_VALIDATION else counters.code_refinements
    if done == 0:
        return []
    names, rounds = _score_vectors(f, 3)
    if len(rounds) < 2:
        return []
    found: list[Signal] = []
    drop = f.config.classifier.score_drop
    last, prev, first = rounds[-1], rounds[-2], rounds[0]
    drops = []
    for i, q in enumerate(last):
        if not valid_score(q):
            continue
        # Against the latest earlier valid value: an invalid round in between (missing,
        # NaN, out of range) must not hide a drop.
        p = prev[i]
        if not valid_score(p):
            p = first[i]  # the round before it (prev itself when there are two)
            if not valid_score(p):
                continue
        if p - q > drop:  # type: ignore[operator]
            drops.append(f"{names[i]} {p:g}->{q:g}")
    if drops:
        found.append(signal(N.SCORE_DROP, ", ".join(drops)))
    if len(rounds) < 3:
        return found
    if all(valid_score(v) for r in rounds for v in r):
        sums = [math.fsum(v for v in r if v is not None) for r in rounds]
        if max(sums[1], sums[2]) <= sums[0]:
            found.append(
                signal(
                    N.NO_IMPROVEMENT,
                    "score totals over the last three rounds: " + ", ".join(f"{s:g}" for s in sums),
                )
            )
    swings = []
    margin = f.config.classifier.borderline_margin
    for i, n in enumerate(names):
        a, b, c = (r[i] for r in rounds)
        if not (valid_score(a) and valid_score(b) and valid_score(c)):
            continue
        d1, d2 = b - a, c - b  # type: ignore[operator]
        if d1 * d2 < 0 and min(abs(d1), abs(d2)) >= margin:
            swings.append(f"{n} {a:g}->{b:g}->{c:g}")
    if swings:
        found.append(signal(N.SCORE_OSCILLATION, ", ".join(swings)))
    return found


def human_free_text(f: Facts) -> Signal | None:
    """An escalation answered with guidance: free text to be mapped to an action."""
    a = f.answer
    if (
        a is not None
        and f.machine_state is STATE_ESCALATED
        and a.answer is ANSWER_REQUEST_CHANGES
        and a.changes
    ):
        return signal(N.HUMAN_FREE_TEXT, " | ".join(a.changes)[:200])
    return None


def last_round(f: Facts, validated: bool) -> Signal | None:
    """One round left before a limit, at the decision that would spend it."""
    if f.decisions_left == 1:
        return signal(N.LAST_ROUND, "one decision left before max_decisions")
    if not validated:
        return None
    if f.step is STEP_PLAN_VALIDATION:
        if not f.plan_converged and f.plan_revisions_left == 1:
            return signal(N.LAST_ROUND, "one plan revision left")
    elif not f.code_converged and f.code_refinements_left == 1:
        return signal(N.LAST_ROUND, "one code refinement left")
    return None


def classify(f: Facts) -> Classification:
    """Route the state in ``f``: standard, complex or borderline, with the signals seen."""
    validated = just_validated(f)
    if not f.step_failed and f.answer is None and f.decisions_left > 1 and not validated:
        return STANDARD  # no signal can fire: no error, no fresh report, no human text
    if f.machine_state in GATE_OF_STATE:
        # A human answered: the reports were judged before the gate, and the answer decides.
        # Only free text to interpret needs judgement here.
        text = human_free_text(f)
        return Classification(Route.COMPLEX, (text,)) if text is not None else STANDARD
    signals: list[Signal] = []
    errors = step_errors(f)
    if errors is not None:
        signals.append(errors)
    near: Signal | None = None
    if validated:
        signals, near = report_signals(f, signals)
        signals += convergence_problems(f)
    text = human_free_text(f)
    if text is not None:
        signals.append(text)
    if near is not None:
        signals.append(near)
    last = last_round(f, validated)
    if last is not None:
        signals.append(last)
    if not signals:
        return STANDARD
    for sig in signals:
        if sig.route is C:
            return Classification(Route.COMPLEX, tuple(signals))
    return Classification(Route.BORDERLINE, tuple(signals))
