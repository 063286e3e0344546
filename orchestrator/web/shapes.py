"""The console's JSON: workflow records shaped for the API and the pages.

Pure functions of the state's data; nothing here reads the store or runs anything.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from orchestrator.reporting import describe_decision
from orchestrator.web.svg import EdgeUse
from state.decision import DecisionRecord, DecisionSource
from state.steps import GATE_OF_STATE, MachineState
from state.store import (
    DecisionEntry,
    EventEntry,
    HumanAnswerEntry,
    LedgerEntry,
    WorkflowSummary,
)
from state.workflow import WorkflowState

# Who took an edge of the machine, as the diagram counts it.
_SOURCE_GROUP: dict[DecisionSource, str] = {
    DecisionSource.PROGRAMMATIC: "programmatic",
    DecisionSource.PROGRAMMATIC_FALLBACK: "programmatic",
    DecisionSource.SCRIPT: "programmatic",
    DecisionSource.LLM: "llm",
    DecisionSource.LLM_OVERRIDE: "llm",
    DecisionSource.RECONCILED_AGREE: "reconciled",
    DecisionSource.HUMAN: "human",
}


def iso(at: datetime | None) -> str | None:
    """``at`` as ISO 8601 text, None for no time."""
    return at.isoformat() if at is not None else None


def summary_row(s: WorkflowSummary) -> dict[str, Any]:
    """A ``list_workflows`` row as JSON."""
    return {
        "workflow_id": s.workflow_id,
        "status": s.status.value,
        "phase": s.phase,
        "machine_state": s.machine_state.value,
        "current_step": int(s.current_step) if s.current_step is not None else None,
        "waiting_gate": s.waiting_gate.value if s.waiting_gate is not None else None,
        "version": s.version,
        "created_at": s.created_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
    }


def timeline_entry(rec: DecisionRecord) -> dict[str, Any]:
    """One decision of the timeline: who decided, why, what it beat, what the LLM cost."""
    return {
        "seq": rec.seq,
        "at": rec.decided_at.isoformat(),
        "source": rec.source.value,
        "route": rec.route.value,
        "signals": [s.model_dump(mode="json") for s in rec.signals],
        "from": rec.state_before.value,
        "to": rec.state_after.value,
        "chosen": describe_decision(rec.decision),
        "rationale": rec.decision.rationale,
        "legal_actions": list(rec.legal_actions),
        "alternative": describe_decision(rec.programmatic_alternative)
        if rec.programmatic_alternative is not None
        else None,
        "conflict_reason": rec.conflict_reason,
        "llm": rec.llm.model_dump(mode="json") if rec.llm is not None else None,
    }


def edge_uses(state: WorkflowState) -> list[EdgeUse]:
    """How often each edge was taken, by whom; leaving a gate counts as the human's move."""
    counts: dict[tuple[MachineState, MachineState, str], int] = {}
    for rec in state.decisions:
        who = "human" if rec.state_before in GATE_OF_STATE else _SOURCE_GROUP.get(rec.source, "llm")
        key = (rec.state_before, rec.state_after, who)
        counts[key] = counts.get(key, 0) + 1
    return [EdgeUse(src, dest, who, n) for (src, dest, who), n in counts.items()]


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats as the strings "NaN", "Infinity", "-Infinity".

    JSON has no such numbers, and a NaN score is an anomaly worth showing, not a missing one.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def question(state: WorkflowState) -> dict[str, Any]:
    """What a waiting workflow asks and since when (the decision that stopped it there)."""
    last = state.decisions[-1] if state.decisions else None
    return {
        "asked": last.decision.rationale if last is not None else "",
        "reason": last.decision.escalation_reason.value
        if last is not None and last.decision.escalation_reason is not None
        else None,
        "waiting_since": iso(last.decided_at if last is not None else state.updated_at),
    }


def ledger_json(entry: LedgerEntry) -> dict[str, Any]:
    """A ledger entry as ``orchestrator export`` writes it."""
    content = entry.content
    payload: Any
    if isinstance(content, DecisionEntry):
        payload = content.record.model_dump(mode="json")
    elif isinstance(content, HumanAnswerEntry):
        payload = content.answer.model_dump(mode="json")
    elif isinstance(content, EventEntry):
        payload = {"event": content.event, **dict(content.data)}
    else:
        payload = content.record.model_dump(mode="json")
    return {
        "workflow_id": entry.workflow_id,
        "seq": entry.seq,
        "kind": entry.kind.value,
        "recorded_at": entry.recorded_at.isoformat(),
        "payload": payload,
    }
