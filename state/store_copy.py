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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

from state.clock import Clock, SystemClock
from state.errors import ConcurrencyError, StoreError
from state.store import Store, WorkflowSummary


@dataclass(frozen=True, slots=True)
class CopiedWorkflow:
    """One workflow as copied: its version and how many entries and artifacts it has."""

    workflow_id: str
    version: int
    entries: int
    artifacts: int


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
