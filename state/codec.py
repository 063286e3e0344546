"""How every store backend writes values down and reads them back.

Backends keep snapshots, configurations and ledger payloads as JSON text and times as
fixed-width UTC text, so that what one backend refuses to store (an event that JSON cannot
carry, a running step as a step result) every backend refuses, with the same message, and
what comes back is validated the same way. Reading raises ``Damaged`` naming the part and
the problem; the backend turns it into a ``StoreCorruptError`` that says where the data is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from pydantic import BaseModel, TypeAdapter, ValidationError

from state.config import WorkflowConfig
from state.decision import DecisionRecord, ShadowRecord
from state.errors import StoreCorruptError, StoreError, StoreVersionError
from state.steps import Gate, MachineState, Step, WorkflowStatus
from state.store import (
    DecisionEntry,
    EventEntry,
    HumanAnswerEntry,
    LedgerEntry,
    LedgerEntryIn,
    LedgerKind,
    ShadowEntry,
    StepResultEntry,
    WorkflowSummary,
)
from state.validation import describe_validation_error
from state.workflow import SCHEMA_VERSION, HumanAnswer, StepRecord, StepStatus, WorkflowState


class Damaged(Exception):
    """A stored value failed validation.

    Args:
        workflow_id: the workflow it belongs to.
        what: which part, e.g. "the stored snapshot" or "ledger entry seq 3 (event)".
        problem: what is wrong with it.
    """

    def __init__(self, workflow_id: str, what: str, problem: str) -> None:
        super().__init__(f"workflow {workflow_id}: {what} is damaged: {problem}")
        self.workflow_id = workflow_id
        self.what = what
        self.problem = problem

    def to_error(self, where: str) -> StoreCorruptError:
        """The error to raise, ``where`` naming the store (e.g. "The database /x/y.db")."""
        return StoreCorruptError(f"{self}. {where} was left unchanged; restore it from a backup")


def ts(dt: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def aware(dt: datetime) -> datetime:
    """``dt`` made timezone-aware (a naive time is taken as UTC)."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def parse_time(workflow_id: str, what: str, text: object) -> datetime:
    """A stored time back as a timezone-aware datetime.

    Raises:
        Damaged: ``text`` is not an ISO-8601 time.
    """
    try:
        value = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if value is None:
        raise Damaged(workflow_id, what, f"{text!r} is not an ISO-8601 time")
    return aware(value)


def ttl(workflow_id: str, ttl_s: float) -> timedelta:
    """A lease's time-to-live, refused unless positive and finite.

    Raises:
        StoreError: ``ttl_s`` is zero, negative or not finite.
    """
    if not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise StoreError(
            f"workflow {workflow_id}: a lease needs a positive, finite time-to-live, not "
            f"{ttl_s!r} seconds"
        )
    return timedelta(seconds=ttl_s)


def summary_values(state: WorkflowState, now: datetime) -> tuple[object, ...]:
    """A workflow's listing columns, in table order.

    Status, phase, machine_state, current_step, waiting_gate, updated_at.
    """
    gate = state.waiting_gate
    return (
        state.status.value,
        state.phase,
        state.machine_state.value,
        int(state.current_step) if state.current_step is not None else None,
        gate.value if gate is not None else None,
        ts(state.updated_at or now),
    )


_STATUSES: dict[object, WorkflowStatus] = {m.value: m for m in WorkflowStatus}
_STATES: dict[object, MachineState] = {m.value: m for m in MachineState}
_STEPS: dict[object, Step] = {m.value: m for m in Step}
_GATES: dict[object, Gate] = {m.value: m for m in Gate}


def summary_of(row: tuple[Any, ...]) -> WorkflowSummary:
    """A listing row as a ``WorkflowSummary``.

    The row: id, status, phase, machine_state, current_step, waiting_gate, version,
    created_at, updated_at.

    Raises:
        Damaged: a column holds a value no state has.
    """
    wid, status, phase, machine_state, step, gate, version, created, updated = row
    try:
        # The tables first (a listing of thousands spent most of its time in the enums'
        # constructors), the constructors for what they miss, which also say what is wrong.
        return WorkflowSummary(
            workflow_id=wid,
            status=_STATUSES.get(status) or WorkflowStatus(status),
            phase=int(phase),
            machine_state=_STATES.get(machine_state) or MachineState(machine_state),
            current_step=(_STEPS.get(step) or Step(step)) if step is not None else None,
            waiting_gate=(_GATES.get(gate) or Gate(gate)) if gate is not None else None,
            version=int(version),
            created_at=parse_time(wid, "the created_at column", created),
            updated_at=parse_time(wid, "the updated_at column", updated),
        )
    except (TypeError, ValueError) as exc:
        raise Damaged(wid, "its summary row", str(exc)) from exc


def check_commit_target(workflow_id: str, state: WorkflowState) -> None:
    """Refuse to commit another workflow's state under ``workflow_id``.

    Raises:
        StoreError: the ids differ; nothing is written.
    """
    if state.workflow_id != workflow_id:
        raise StoreError(
            f"workflow {workflow_id}: cannot commit the state of workflow "
            f"{state.workflow_id}; nothing was written"
        )


def encode_entry(
    text_of: Callable[[BaseModel], str], workflow_id: str, entry: LedgerEntryIn
) -> tuple[str, str]:
    """The entry's (kind, payload JSON); refuses what could not be read back.

    ``text_of`` gives a record's JSON text (``SnapshotDelta.text_of``: the text the same
    commit writes for the state's copy of the record, serialized once).

    Raises:
        StoreError: a running step as a step result, or an event JSON cannot carry.
    """
    match entry:
        case DecisionEntry(record=record):
            return entry.kind.value, text_of(record)
        case StepResultEntry(record=record):
            if record.status is StepStatus.RUNNING:
                raise StoreError(
                    f"workflow {workflow_id}: step {int(record.step)} is still running; a "
                    "step_result ledger entry records a completed or failed attempt. "
                    "Nothing was written"
                )
            return entry.kind.value, text_of(record)
        case HumanAnswerEntry(answer=answer):
            return entry.kind.value, text_of(answer)
        case ShadowEntry(record=shadow):
            return entry.kind.value, shadow.model_dump_json()
        case EventEntry(event=event, data=data):
            if not event or "event" in data:
                raise StoreError(
                    f"workflow {workflow_id}: an event needs a non-empty name and no 'event' "
                    f"key in its data (got {event!r}); nothing was written"
                )
            try:
                text = json.dumps(
                    {"event": event, **data},
                    ensure_ascii=False,
                    allow_nan=False,
                    separators=(",", ":"),
                )
            except (TypeError, ValueError) as exc:
                raise StoreError(
                    f"workflow {workflow_id}: event {event!r} cannot be stored as JSON "
                    f"({exc}); give it strings, numbers, booleans, None, lists and dicts. "
                    "Nothing was written"
                ) from exc
            return entry.kind.value, text
        case _:
            assert_never(entry)


def decode_entry(
    workflow_id: str, seq: int, kind: object, recorded_at: object, payload: object
) -> LedgerEntry:
    """One stored ledger row back as a validated ``LedgerEntry``.

    Raises:
        Damaged: naming the seq and the problem.
    """
    what = f"ledger entry seq {seq} ({kind})"
    try:
        content = _decode_content(LedgerKind(str(kind)), payload)
    except ValidationError as exc:
        raise Damaged(workflow_id, what, describe_validation_error(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise Damaged(workflow_id, what, str(exc)) from exc
    return LedgerEntry(
        workflow_id=workflow_id,
        seq=seq,
        recorded_at=parse_time(workflow_id, what, recorded_at),
        content=content,
    )


def _decode_content(kind: LedgerKind, payload: object) -> LedgerEntryIn:
    if not isinstance(payload, str | bytes):
        raise TypeError("its payload is not JSON text")
    match kind:
        case LedgerKind.DECISION:
            return DecisionEntry(DecisionRecord.model_validate_json(payload))
        case LedgerKind.STEP_RESULT:
            record = StepRecord.model_validate_json(payload)
            if record.status is StepStatus.RUNNING:
                raise ValueError("it records a step that is still running")
            return StepResultEntry(record)
        case LedgerKind.HUMAN_ANSWER:
            return HumanAnswerEntry(HumanAnswer.model_validate_json(payload))
        case LedgerKind.SHADOW:
            return ShadowEntry(ShadowRecord.model_validate_json(payload))
        case LedgerKind.EVENT:
            try:
                data = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise ValueError(f"its payload is not valid JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise ValueError(f"its payload is a JSON {type(data).__name__}, not an object")
            event = data.pop("event", None)
            if not isinstance(event, str) or not event:
                raise ValueError("its payload has no 'event' name")
            return EventEntry(event, data)
        case _:
            assert_never(kind)


def decode_state(workflow_id: str, text: object) -> WorkflowState:
    """A stored snapshot back as a validated ``WorkflowState``.

    Raises:
        Damaged: it fails validation or belongs to another workflow.
        StoreVersionError: it was written by a newer schema.
    """
    what = "the stored snapshot"
    if not isinstance(text, str | bytes):
        raise Damaged(workflow_id, what, "it is not JSON text")
    try:
        state = WorkflowState.model_validate_json(text)
    except ValidationError as exc:
        newer = _newer_schema_version(text)
        if newer is not None:
            raise StoreVersionError(
                f"workflow {workflow_id}: its snapshot was written by a newer schema "
                f"(version {newer}; this program reads version {SCHEMA_VERSION}); nothing "
                "was changed. Upgrade hybrid-orchestrator to load it"
            ) from exc
        raise Damaged(workflow_id, what, describe_validation_error(exc)) from exc
    if state.workflow_id != workflow_id:
        raise Damaged(workflow_id, what, f"it belongs to workflow {state.workflow_id!r}")
    return state


def decode_config(workflow_id: str, text: object) -> WorkflowConfig:
    """A stored configuration back as a validated ``WorkflowConfig``.

    Raises:
        Damaged: it fails validation.
    """
    what = "the stored configuration"
    if not isinstance(text, str | bytes):
        raise Damaged(workflow_id, what, "it is not JSON text")
    try:
        return WorkflowConfig.model_validate_json(text)
    except ValidationError as exc:
        raise Damaged(workflow_id, what, describe_validation_error(exc)) from exc


def _newer_schema_version(text: str | bytes) -> int | None:
    """The snapshot's schema_version when it is newer than this program's, else None."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return version
    return None


_RECORD_LISTS: dict[str, TypeAdapter[tuple[Any, ...]]] = {
    "history": TypeAdapter(tuple[StepRecord, ...]),
    "human_answers": TypeAdapter(tuple[HumanAnswer, ...]),
    "decisions": TypeAdapter(tuple[DecisionRecord, ...]),
}


def decode_records(
    workflow_id: str,
    head: WorkflowState,
    counts: Sequence[object],
    rows: Sequence[tuple[Any, ...]],
) -> tuple[WorkflowState, list[list[str]]]:
    """The state a stored head and its record rows make, and the rows' texts per list.

    Args:
        workflow_id: the workflow.
        head: the stored head, validated (``decode_state``): the state without its lists.
        counts: how many records each list of ``SnapshotEncoder.SPLICED`` has, in order.
        rows: (list name, index, JSON text[, seq]) rows, ordered by list name and index;
            the text comes from the ledger entry ``seq`` when the row points at one.

    Raises:
        Damaged: a record is missing, misplaced or fails validation, naming it.
    """
    names = tuple(_RECORD_LISTS)
    texts: dict[str, list[str]] = {name: [] for name in names}
    for name, idx, payload, *seq in rows:
        got = texts.get(name)
        if got is not None and idx == len(got) and payload is None and seq and seq[0] is not None:
            raise Damaged(
                workflow_id,
                "the stored snapshot",
                f"{name} record {idx} points at ledger entry seq {seq[0]}, which is missing",
            )
        if got is None or idx != len(got) or not isinstance(payload, str):
            where = f"{name} record {idx}" if got is not None else f"record {name!r} {idx}"
            raise Damaged(
                workflow_id,
                "the stored snapshot",
                f"{where} is out of place or not JSON text (the records of a list are "
                "numbered 0, 1, 2...)",
            )
        got.append(payload)
    update: dict[str, Any] = {}
    for name, count in zip(names, counts, strict=True):
        found = texts[name]
        if len(found) != count:
            raise Damaged(
                workflow_id,
                "the stored snapshot",
                f"it has {count!r} {name} records but {len(found)} are stored",
            )
        if not count:
            continue
        try:
            update[name] = records = _RECORD_LISTS[name].validate_json(f"[{','.join(found)}]")
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]["loc"]
            which = f"{name} record {first[0]}" if first else name
            raise Damaged(
                workflow_id, f"the stored snapshot ({which})", describe_validation_error(exc)
            ) from exc
        if len(records) != count:  # a row's text held more than one record
            raise Damaged(
                workflow_id,
                "the stored snapshot",
                f"its {count} {name} rows hold {len(records)} records",
            )
    state = head.model_copy(update=update) if update else head
    return state, [texts[name] for name in names]
