"""Reconciliation: from what the machine and the other deciders said, the decision to apply.

Whatever the deciders answered, the decision applied is legal in the machine (the LLM and
scripts only choose among the legal actions). When the LLM or the script cannot give a
usable answer, the machine's decision stands (``programmatic_fallback``), or, where the
rules have no trustworthy answer (the report they would judge is anomalous), the workflow
escalates to a human.
"""

from __future__ import annotations

from orchestrator.deciding.actions import build_decision
from orchestrator.deciding.analysis import Analysis
from orchestrator.deciding.classifier import untrusted_reports
from orchestrator.deciding.llm_decider import LLMOutcome
from orchestrator.deciding.record import Choice, machine_source
from orchestrator.deciding.table import ESCALATE
from state.decision import (
    Decision,
    DecisionSource,
    EscalationReason,
    LLMCallInfo,
    LLMCallOutcome,
)


def forced(analysis: Analysis, model_name: str) -> Choice:
    """A routed state with one legal action: the machine's move, the LLM not asked.

    Whatever the LLM answered, the outcome would be that action (the LLM chooses an
    action, never its parameters), so the call would cost seconds and tokens for nothing.
    """
    only = analysis.legal_actions[0]
    info = LLMCallInfo(
        model=model_name,
        outcome=LLMCallOutcome.NOT_NEEDED,
        validation_errors=(f"only one legal action ({only}): nothing for the LLM to choose",),
    )
    return Choice(analysis.programmatic, machine_source(analysis), llm=info)


def not_asked(analysis: Analysis, model_name: str, outcome: LLMCallOutcome, why: str) -> Choice:
    """The LLM could not be asked (no LLM, budget spent): fall back, recording why."""
    info = LLMCallInfo(model=model_name, outcome=outcome, validation_errors=(why,))
    return fallback(analysis, info, why)


def from_llm(analysis: Analysis, outcome: LLMOutcome) -> Choice:
    """Complex states and ``llm`` mode: the LLM's checked decision, or the fallback."""
    if outcome.decision is not None and outcome.confident:
        return _overriding(analysis, outcome.decision, DecisionSource.LLM, outcome.info)
    return fallback(analysis, outcome.info, _why_unusable(outcome))


def reconcile(analysis: Analysis, outcome: LLMOutcome) -> Choice:
    """Borderline states: agree -> the machine's; conflict -> the LLM's only if legal and sure."""
    prog = analysis.programmatic
    llm_decision = outcome.decision
    if llm_decision is None:
        return Choice(
            prog,
            DecisionSource.PROGRAMMATIC_FALLBACK,
            conflict=f"no usable LLM decision: {_why_unusable(outcome)}",
            llm=outcome.info,
        )
    if llm_decision.same_action(prog):
        return Choice(prog, DecisionSource.RECONCILED_AGREE, llm=outcome.info)
    conflict = conflict_reason(llm_decision, prog)
    if outcome.confident:
        return Choice(
            llm_decision,
            DecisionSource.LLM_OVERRIDE,
            alternative=prog,
            conflict=conflict,
            llm=outcome.info,
        )
    return Choice(
        prog,
        DecisionSource.PROGRAMMATIC_FALLBACK,
        alternative=llm_decision,
        conflict=f"{conflict}; the LLM's confidence is below the threshold",
        llm=outcome.info,
    )


def from_script(analysis: Analysis, decision: Decision | None) -> Choice:
    """The script's decision (None: it deferred to the machine's)."""
    if decision is None:
        return Choice(analysis.programmatic, DecisionSource.SCRIPT)
    return _overriding(analysis, decision, DecisionSource.SCRIPT, None)


def fallback(analysis: Analysis, info: LLMCallInfo | None, why: str) -> Choice:
    """The machine's decision, or an escalation where the rules cannot be trusted."""
    untrusted = untrusted_reports(analysis.classification.signals)
    if untrusted and ESCALATE in analysis.legal_actions:
        decision = build_decision(
            ESCALATE,
            analysis.facts,
            rationale="no usable LLM decision and the report the rules would judge is "
            f"anomalous ({', '.join(untrusted)}): a human must decide",
            escalation_reason=EscalationReason.UNDECIDABLE,
        )
        return Choice(
            decision,
            DecisionSource.PROGRAMMATIC_FALLBACK,
            alternative=analysis.programmatic,
            conflict=why,
            llm=info,
        )
    return Choice(
        analysis.programmatic, DecisionSource.PROGRAMMATIC_FALLBACK, conflict=why, llm=info
    )


def conflict_reason(chosen: Decision, other: Decision) -> str:
    """How the chosen decision differs from the rules' (for the record)."""

    def name(d: Decision) -> str:
        step = f" step {int(d.step)}" if d.step is not None else ""
        gate = f" gate {d.gate.value}" if d.gate is not None else ""
        return f"{d.action.value}{step}{gate}"

    return f"LLM chose {name(chosen)}, the rules chose {name(other)}"


def _overriding(
    analysis: Analysis, decision: Decision, source: DecisionSource, info: LLMCallInfo | None
) -> Choice:
    """``decision`` as chosen by ``source``; the machine's is the alternative if they differ."""
    prog = analysis.programmatic
    differs = not decision.same_action(prog)
    return Choice(
        decision,
        source,
        alternative=prog if differs else None,
        conflict=conflict_reason(decision, prog) if differs else None,
        llm=info,
    )


def _why_unusable(outcome: LLMOutcome) -> str:
    return "; ".join(outcome.info.validation_errors) or outcome.info.outcome.value
