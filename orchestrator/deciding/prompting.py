"""What the LLM decider is shown: a compact, factual summary of the workflow state.

Reports, plans and human text are quoted as data (truncated), never spliced into the
instructions, so a report that says "ignore the rules" stays a report.
"""

from __future__ import annotations

import hashlib
import random
from enum import StrEnum

from orchestrator.deciding import table as m
from orchestrator.deciding.actions import action_of, target_step
from orchestrator.deciding.facts import Facts, plan_scores, valid_score
from state.config import WorkflowConfig
from state.reports import CodeValidationReport, PlanValidationReport
from state.steps import STEP_SPECS, MachineState
from state.workflow import StepStatus

_QUOTE_LIMIT = 600


class Presentation(StrEnum):
    """The order in which the legal actions are shown to the LLM (see ``presented``)."""

    TABLE = "table"  # the rule table's order: the rules' own choice comes first
    REVERSED = "reversed"  # the table order backwards
    SHUFFLED = "shuffled"  # a permutation seeded per decision (the default)


def presented(
    legal: tuple[str, ...],
    workflow_id: str,
    seq: int,
    order: Presentation = Presentation.SHUFFLED,
) -> tuple[str, ...]:
    """The legal actions in the order the LLM sees them, in its prompt and its schema.

    The machine lists the legal actions in rule-table order, so its own choice always comes
    first; a model that leans to the first option (small models do) would then agree with
    the rules by position, not by reading the state, and any agreement figure would be
    inflated. The default is therefore a permutation seeded by the workflow id and the
    decision's number: the same decision is always shown the same way (a replay, a rerun
    and a cassette see exactly the prompt that was recorded), while across decisions the
    rules' choice is first no more often than chance. A neutral canonical order such as
    alphabetical was rejected: it is just as reproducible, but it is still a fixed order,
    so whichever action sorts first (``escalate`` before ``invoke_step*``) would be favoured
    systematically, which correlates position with content in its own way. Only the
    presentation changes: the answer is still checked against the real legal set.

    Args:
        legal: the legal actions, in the machine's order.
        workflow_id: the workflow deciding.
        seq: the 1-based number of the decision being made.
        order: ``table`` and ``reversed`` exist to measure position bias (the benchmark).
    """
    if order is Presentation.TABLE or len(legal) < 2:
        return legal
    if order is Presentation.REVERSED:
        return legal[::-1]
    digest = hashlib.sha256(f"{workflow_id}\x00{seq}".encode()).digest()
    shuffled = list(legal)
    # Not for secrecy: a reproducible shuffle, which is what a seeded PRNG is for.
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(shuffled)  # noqa: S311
    return tuple(shuffled)


def quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """``text`` as quoted data, truncated."""
    text = text.strip().replace("\r", "")
    if len(text) > limit:
        text = text[:limit] + f" [... {len(text) - limit} more characters]"
    return "> " + text.replace("\n", "\n> ") if text else "(empty)"


def describe_action(trigger: str, f: Facts) -> str:
    """What choosing ``trigger`` does, for the prompt."""
    step = target_step(trigger, f)
    if step is not None:
        spec = STEP_SPECS[step]
        verb = "retry" if trigger == m.RETRY else "run"
        return f"{trigger}: {verb} step {int(step)} ({spec.name}) with the {spec.agent.value}"
    text = {
        m.ESCALATE: "stop and ask a human (always safe when unsure)",
        m.COMPLETE: "finish the workflow as completed",
        m.FAIL: "end the workflow as failed",
        m.REJECT: "end the workflow as rejected (a human rejected it)",
    }.get(trigger)
    if text is None:
        text = action_of(trigger).value.replace("_", " ") + " " + trigger.split("_", 1)[-1]
    return f"{trigger}: {text}"


def state_summary(f: Facts) -> str:
    """Where the workflow stands: step, attempts, counters and its last step's outcome."""
    s = f.state
    lines = [
        f"requirements: {quote(s.requirements, 300)}",
        f"plan revisions done: {s.counters.plan_revisions} (left: {f.plan_revisions_left}); "
        f"code refinements done: {s.counters.code_refinements} "
        f"(left: {f.code_refinements_left}); decisions left: {f.decisions_left}",
    ]
    if f.origin is not f.machine_state:
        lines.append(f"escalated from: {f.origin.value}")
    rec = f.record
    if rec is not None:
        lines.append(f"last step: {int(rec.step)} attempt {rec.attempt}, {rec.status.value}")
        if rec.error is not None:
            lines.append(
                f"error: {rec.error.type}: {quote(rec.error.message, 300)} "
                f"({f.failures} failed attempt(s) since the last human answer)"
            )
        if rec.status is StepStatus.RUNNING:
            lines.append("the step was interrupted before it recorded a result")
    return "\n".join(lines)


def _fmt(value: float | None, limit: float, top: float = 10.0) -> str:
    if value is None:
        return f"missing (threshold {limit:g})"
    if not valid_score(value, top):
        return f"{value} INVALID (scale 0-{top:g}, threshold {limit:g})"
    verdict = "meets" if value >= limit else "below"
    return f"{value:g} {verdict} threshold {limit:g}"


def scores_block(f: Facts, config: WorkflowConfig) -> str:
    """The latest reports' scores beside their thresholds, and the convergence verdicts."""
    lines: list[str] = []
    plan = f.plan_report
    if isinstance(plan, PlanValidationReport):
        t = config.plan_thresholds
        names = ("alignment", "standardization", "compatibility")
        limits = (t.alignment, t.standardization, t.compatibility)
        for name, value, limit in zip(names, plan_scores(plan), limits, strict=True):
            lines.append(f"plan {name}: {_fmt(value, limit)}")
        lines.append(
            f"plan critical issues: {plan.critical_issues} (max {t.max_critical_issues}); "
            f"verdict {plan.verdict.value if plan.verdict else 'missing'}; "
            f"converged: {f.plan_converged}"
        )
        if plan.markdown:
            lines.append("plan report (data):\n" + quote(plan.markdown, 400))
    code = f.code_report
    if isinstance(code, CodeValidationReport):
        ct = config.code_thresholds
        lines.append(
            f"code review score: {_fmt(code.review.overall_score, ct.review_score_for_tools)}"
        )
        tools = ", ".join(f"{t.name}={t.status.value}" for t in code.tools) or "not run"
        lines.append(
            f"tools: {tools}"
            + (f" ({code.tools_skipped_reason})" if code.tools_skipped_reason else "")
        )
        lines.append(
            f"standardization: {code.standardization.status or 'missing'}; coverage: "
            + (
                _fmt(code.line_coverage, ct.min_line_coverage, 100.0)
                if code.line_coverage is not None
                else "not measured"
            )
            + f"; converged: {f.code_converged}"
        )
        if code.review.markdown:
            lines.append("code review (data):\n" + quote(code.review.markdown, 400))
    return "\n".join(lines) or "no validation report yet"


def recent_decisions(f: Facts, n: int = 5) -> str:
    """The last ``n`` decisions, one line each."""
    recs = f.state.decisions[-n:]
    if not recs:
        return "none yet"
    return "\n".join(
        f"#{r.seq} {r.state_before.value} -> {r.state_after.value} by {r.source.value}"
        f" ({r.decision.action.value})"
        for r in recs
    )


def human_text(f: Facts) -> str:
    """A pending human answer's guidance or comment, quoted."""
    a = f.answer
    if a is None:
        return "none"
    parts = [f"{a.answer.value} at the {a.gate.value} gate by {a.by}"]
    parts += [quote(c, 400) for c in a.changes]
    if a.comment:
        parts.append("comment: " + quote(a.comment, 300))
    return "\n".join(parts)


def prompt_variables(
    f: Facts, config: WorkflowConfig, legal: tuple[str, ...], signals: str
) -> dict[str, str]:
    """Every variable of the ``orchestrator_decision`` template."""
    return {
        "workflow_id": f.state.workflow_id,
        "phase": str(f.state.phase),
        "machine_state": f.machine_state.value
        + (
            f" (escalated from {f.origin.value})"
            if f.machine_state is MachineState.ESCALATED
            else ""
        ),
        "state_summary": state_summary(f),
        "scores": scores_block(f, config),
        "recent_decisions": recent_decisions(f),
        "signals": signals or "none",
        "human_text": human_text(f),
        "legal_actions": "\n".join(f"- {describe_action(t, f)}" for t in legal),
        "confidence_threshold": f"{config.llm.confidence_threshold:g}",
    }
