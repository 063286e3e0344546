"""The listing columns of the ``workflows`` table, written from a state and read back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from state.codec import Damaged, parse_time, ts
from state.steps import Gate, MachineState, Step, WorkflowStatus
from state.store import WorkflowSummary
from state.workflow import WorkflowState

SUMMARY_COLUMNS = (
    "id, status, phase, machine_state, current_step, waiting_gate, version, created_at, updated_at"
)


def summary_values(state: WorkflowState, now: datetime) -> tuple[object, ...]:
    """The listing columns, in table order: status .. updated_at."""
    gate = state.waiting_gate
    return (
        state.status.value,
        state.phase,
        state.machine_state.value,
        int(state.current_step) if state.current_step is not None else None,
        gate.value if gate is not None else None,
        ts(state.updated_at or now),
    )


def summary_of(row: tuple[Any, ...]) -> WorkflowSummary:
    """A listing row as a ``WorkflowSummary``.

    The row: id, status, phase, machine_state, current_step, waiting_gate, version,
    created_at, updated_at.

    Raises:
        Damaged: a column holds a value no state has.
    """
    wid, status, phase, machine_state, step, gate, version, created, updated = row
    try:
        return WorkflowSummary(
            workflow_id=wid,
            status=WorkflowStatus(status),
            phase=int(phase),
            machine_state=MachineState(machine_state),
            current_step=Step(step) if step is not None else None,
            waiting_gate=Gate(gate) if gate is not None else None,
            version=int(version),
            created_at=parse_time(wid, "the created_at column", created),
            updated_at=parse_time(wid, "the updated_at column", updated),
        )
    except (TypeError, ValueError) as exc:
        raise Damaged(wid, "its summary row", str(exc)) from exc
