"""Copying every workflow of one store into another backend, and checking the copy.

The ``Store`` protocol has no way to write a ledger entry with a given time or a workflow at
a given version, so the copy replays: it creates each workflow with its latest snapshot,
then commits the source's ledger entries group by group (the entries of one commit share
its time) under a clock that reads the time they were first recorded, pads with empty
commits up to the source's version, and records the artifacts the same way. Every backend
numbers the entries 1, 2, 3... as the source did, so the copy has the same versions,
ledger entries (seq, time, content), snapshots, summaries and artifacts; ``copy_store``
reads both sides back to check it. Leases are not copied: workflows must not run while
they are copied, and one with a live lease is refused.

The work queue is copied after the workflows, oldest entry first: a ready entry (submitted
or answered, not yet driven) is queued in the target, so a worker there picks it up; a
parked one is queued and parked with its note. Its queue time becomes the time of the
copy, and its wakeup count starts again; both only order and guard later claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import groupby

from state.clock import Clock, SystemClock
from state.errors import ConcurrencyError, StoreError
from state.queue import QueueEntry, QueueStatus, work_queue
from state.store import Store, WorkflowSummary


@dataclass(frozen=True, slots=True)
class CopiedWorkflow:
    """One workflow as copied: its version, entries, artifacts and place in the queue.

    ``queued`` is None when it was not in the source's work queue.
    """

    workflow_id: str
    version: int
    entries: int
    artifacts: int
    queued: QueueStatus | None = None


class _ReplayClock:
    """A clock that reads whatever time the copy is replaying."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


def copy_store(
    source: Store, open_target: Callable[[Clock], Store], *, clock: Clock | None = None
) -> list[CopiedWorkflow]:
    """Copy every workflow of ``source`` into the store ``open_target`` opens, and check it.

    Args:
        source: the store to copy from; it is only read.
        open_target: opens the target store on the clock it is given (the copy sets that
            clock to the times it replays); the target is closed at the end.
        clock: the time that decides whether a source lease is live (default: the system's).

    Returns:
        What was copied, oldest workflow first.

    Raises:
        ConcurrencyError: a workflow runs (its lease is live) or changed during the copy.
        StoreError: the target already holds one of the workflows (nothing is copied), or
            the copy differs from the source (naming the workflow and what differs).
    """
    now = (clock or SystemClock()).now()
    summaries = sorted(source.list_workflows(), key=lambda s: (s.created_at, s.workflow_id))
    for summary in summaries:
        lease = source.lease(summary.workflow_id)
        if lease is not None and lease.is_live(now):
            raise ConcurrencyError(
                f"workflow {summary.workflow_id} is being run by {lease.describe()}; stop it "
                "(or wait for it to finish) before copying the store; nothing was copied"
            )
    replay = _ReplayClock()
    target = open_target(replay)
    try:
        clash = sorted({s.workflow_id for s in target.list_workflows()} & _ids(summaries))
        if clash:
            raise StoreError(
                f"the target store already holds {len(clash)} of the workflows to copy "
                f"({', '.join(clash[:5])}); nothing was copied. Copy into an empty store"
            )
        copied = [_copy_one(source, target, replay, summary) for summary in summaries]
        for summary in summaries:
            _check(source, target, summary.workflow_id)
        replay.at = now  # the queue entries are made now
        copied = _copy_queue(source, target, copied)
    finally:
        target.close()
    return copied


def _ids(summaries: Sequence[WorkflowSummary]) -> set[str]:
    return {s.workflow_id for s in summaries}


def _copy_one(
    source: Store, target: Store, replay: _ReplayClock, summary: WorkflowSummary
) -> CopiedWorkflow:
    wid = summary.workflow_id
    stored = source.load(wid)
    ledger = source.ledger(wid)
    artifacts = source.artifacts(wid)
    replay.at = summary.created_at
    version = target.create(stored.state, stored.config)
    groups = [list(g) for _, g in groupby(ledger, key=lambda e: e.recorded_at)]
    if len(groups) > stored.version - 1:
        raise StoreError(
            f"workflow {wid}: its {len(ledger)} ledger entries carry {len(groups)} "
            f"commit times but it is at version {stored.version}, so the copy cannot keep "
            "both; the copy in the target is incomplete. Report this as a bug"
        )
    for group in groups:
        replay.at = group[0].recorded_at
        version = target.commit(
            wid,
            stored.state,
            expected_version=version,
            entries=[e.content for e in group],
            owner=None,
        )
    replay.at = summary.updated_at
    while version < stored.version:
        version = target.commit(wid, stored.state, expected_version=version, owner=None)
    for artifact in artifacts:
        replay.at = artifact.recorded_at
        target.add_artifact(wid, artifact.kind, artifact.path)
    return CopiedWorkflow(wid, version, len(ledger), len(artifacts))


def _copy_queue(source: Store, target: Store, copied: list[CopiedWorkflow]) -> list[CopiedWorkflow]:
    """Queue in ``target`` what ``source`` has queued, parked ones with their notes; check it.

    Raises:
        StoreError: the target has no work queue while the source has queued workflows, or
            its queue differs from the source's after the copy.
    """
    source_queue = work_queue(source)
    entries = source_queue.queued() if source_queue is not None else []
    if not entries:
        return copied
    target_queue = work_queue(target)
    if target_queue is None:
        raise StoreError(
            f"the target store has no work queue, but {len(entries)} workflow(s) are queued "
            "in the source; the workflows were copied, the queue was not. Copy into a "
            "SQLite or PostgreSQL store"
        )
    for entry in entries:
        target_queue.enqueue(entry.workflow_id)
    wakeups = {e.workflow_id: e.wakeups for e in target_queue.queued()}
    for entry in entries:
        if entry.status is QueueStatus.PARKED:
            wid = entry.workflow_id
            target_queue.settle(wid, wakeups[wid], finished=False, note=entry.note)
    if _queue_view(target_queue.queued()) != _queue_view(entries):
        raise StoreError(
            "the target's work queue differs from the source's after the copy (a worker on "
            "the target may have claimed a workflow meanwhile); compare them with "
            "orchestrator workers on both stores"
        )
    status = {e.workflow_id: e.status for e in entries}
    return [replace(c, queued=status.get(c.workflow_id)) for c in copied]


def _queue_view(entries: Sequence[QueueEntry]) -> set[tuple[str, QueueStatus, str | None]]:
    return {(e.workflow_id, e.status, e.note) for e in entries}


def _check(source: Store, target: Store, wid: str) -> None:
    """Raise unless ``target`` holds ``wid`` exactly as ``source`` does now."""
    ours, theirs = source.load(wid), target.load(wid)
    if ours.version != theirs.version:
        raise ConcurrencyError(
            f"workflow {wid} changed while it was copied (version {ours.version} in the "
            f"source, {theirs.version} copied); stop what runs it, empty the target and "
            "copy again"
        )
    differs = [
        what
        for what, same in (
            ("snapshot", ours.state == theirs.state),
            ("configuration", ours.config == theirs.config),
            ("ledger", source.ledger(wid) == target.ledger(wid)),
            ("artifacts", source.artifacts(wid) == target.artifacts(wid)),
            ("summary", _summary(source, wid) == _summary(target, wid)),
        )
        if not same
    ]
    if differs:
        raise StoreError(
            f"workflow {wid}: the copy differs from the source in its {', '.join(differs)}; "
            "the target is left as it is for a look. Report this as a bug"
        )


def _summary(store: Store, wid: str) -> WorkflowSummary | None:
    return next((s for s in store.list_workflows() if s.workflow_id == wid), None)
