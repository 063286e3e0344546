"""The work queue: which workflows a pool of workers may pick up, and the workers' health.

A workflow enters the queue when it is submitted (``orchestrator submit``) or answered at a
gate, and leaves it when it finishes. In between its entry is either **ready** (a worker
may claim it) or **parked** (it waits for a human at a gate, or cannot run at all: the note
says why). Who drives a ready workflow is not kept here: the workflow's lease says it, so
a workflow is claimable exactly when it is ready and its lease is absent or stale
(``lease_is_stale``: expired, or held by a dead process on this host). That makes an
orphan of a killed worker claimable with no extra bookkeeping, and keeps the rule that two
processes never drive one workflow in the one place it already lives (``state.leasing``).

Each entry counts its **wakeups**: ``enqueue`` adds one. A worker remembers the count it
claimed at, and parks the workflow at a gate only if the count has not moved since
(``settle``), so an answer recorded while the worker was still finishing is never lost:
the entry stays ready and is claimed again.

Workers report themselves with ``beat`` every ``heartbeat_s`` seconds; a worker whose last
heartbeat is older than ``STALE_BEATS`` intervals is shown as stale (it was killed, its
host died, or it is cut off). The workflows a worker holds are the leases it owns.

Every backend implements ``WorkQueue`` on its store class (``state.sqlite_store.queue``,
``state.postgres_store.queue``, ``state.memory_queue``); ``work_queue(store)`` returns the
queue of a store, or None for a store without one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from state.codec import parse_time
from state.store import Lease, lease_is_stale

STALE_BEATS = 3
"""A worker is stale when its last heartbeat is older than this many heartbeat intervals."""

NOTIFY_CHANNEL = "orchestrator_work"
"""The PostgreSQL channel ``enqueue`` notifies and idle workers listen on."""


class QueueStatus(StrEnum):
    """Where a queued workflow stands."""

    READY = "ready"  # a worker may claim it (when its lease is free)
    PARKED = "parked"  # it waits for a human at a gate, or cannot run (see the note)


@dataclass(frozen=True, slots=True)
class Claim:
    """A workflow a worker claimed: its lease, and the wakeup count it was claimed at."""

    workflow_id: str
    wakeups: int
    lease: Lease


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One workflow in the queue, as ``queued`` lists it."""

    workflow_id: str
    status: QueueStatus
    wakeups: int
    queued_at: datetime
    note: str | None


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """What a worker says of itself at each heartbeat."""

    worker_id: str
    host: str
    pid: int
    started_at: datetime
    concurrency: int
    heartbeat_s: float


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as the store last heard of it.

    Attributes:
        beat: what it said of itself.
        heartbeat_at: when the store recorded its last heartbeat.
        holding: the workflows whose leases it owns (live or expired), sorted.
    """

    beat: WorkerBeat
    heartbeat_at: datetime
    holding: tuple[str, ...]

    def is_stale(self, now: datetime) -> bool:
        """Whether the worker missed ``STALE_BEATS`` heartbeats by ``now``."""
        return now - self.heartbeat_at > timedelta(seconds=STALE_BEATS * self.beat.heartbeat_s)


@runtime_checkable
class WorkQueue(Protocol):
    """The queue of runnable workflows and the registry of workers, kept in a store.

    Every method raises ``StoreError`` (or a subclass) on failure, as the store does.
    """

    def enqueue(self, workflow_id: str) -> None:
        """Make the workflow ready (adding it to the queue if needed) and wake idle workers.

        Raises:
            UnknownWorkflowError: no workflow has this id.
        """
        ...

    def claim(self, owner: str, ttl_s: float, limit: int) -> list[Claim]:
        """Take the leases of up to ``limit`` ready workflows whose leases are free or stale.

        The oldest-queued first; ``owner`` holds each lease for ``ttl_s`` seconds, from this
        host and process. Two claimants never get the same workflow.
        """
        ...

    def settle(
        self,
        workflow_id: str,
        wakeups: int,
        *,
        finished: bool,
        note: str | None = None,
        release: str | None = None,
    ) -> bool:
        """Take a finished workflow out of the queue, or park one that waits or cannot run.

        A workflow is parked only when its wakeup count is still ``wakeups`` (nobody
        answered it since it was claimed); otherwise it stays ready. A finished one leaves
        the queue whatever the count. With ``release`` that owner's lease on it is given
        up in the same transaction, whatever the entry's fate: no other worker can find a
        settling workflow ready and free in between, and the claimant writes once.

        Returns:
            Whether the entry was removed or parked (False: it stays ready, or is gone).
        """
        ...

    def queued(self) -> list[QueueEntry]:
        """Every queued workflow, the oldest-queued first."""
        ...

    def wait_for_work(self, timeout_s: float) -> bool:
        """Block until a workflow may have become ready, or ``timeout_s`` passed.

        Returns:
            True when woken by an ``enqueue`` (of any process, where the backend can tell),
            False on the timeout. Either way the caller claims again: this is a hint.
        """
        ...

    def beat(self, worker: WorkerBeat) -> None:
        """Record a worker's heartbeat (registering it on the first)."""
        ...

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker, the most recently started first."""
        ...


def work_queue(store: object) -> WorkQueue | None:
    """The work queue of ``store``, or None when its backend keeps none."""
    return store if isinstance(store, WorkQueue) else None


def claimable(lease: Lease | None, *, now: datetime, host: str) -> bool:
    """Whether a ready workflow with ``lease`` may be claimed: no lease, or a stale one."""
    return lease is None or lease_is_stale(lease, now=now, host=host)


def holdings(leases: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """The workflows each owner holds a lease on, sorted, by owner, from (owner, id) pairs."""
    found: dict[str, list[str]] = {}
    for owner, workflow_id in leases:
        found.setdefault(owner, []).append(workflow_id)
    return {owner: tuple(sorted(ids)) for owner, ids in found.items()}


WORKER_COLUMNS = "worker_id, host, pid, started_at, concurrency, heartbeat_s, heartbeat_at"
"""The columns of the ``workers`` table, in the order ``worker_of_row`` reads them."""

ENTRY_COLUMNS = "workflow_id, status, wakeups, queued_at, note"
"""The columns of the ``work_queue`` table, in the order ``entry_of_row`` reads them."""


def worker_of_row(row: Sequence[Any], held: Mapping[str, tuple[str, ...]]) -> WorkerInfo:
    """A ``workers`` row (``WORKER_COLUMNS``) as a value, with the leases its worker holds.

    Raises:
        Damaged: a stored time is not a time.
    """
    wid, host, pid, started, concurrency, every, beat_at = row
    worker_id = str(wid)
    return WorkerInfo(
        WorkerBeat(
            worker_id,
            str(host),
            int(pid),
            parse_time(worker_id, "its worker row", started),
            int(concurrency),
            float(every),
        ),
        parse_time(worker_id, "its worker row", beat_at),
        held.get(worker_id, ()),
    )


def entry_of_row(row: Sequence[Any]) -> QueueEntry:
    """A ``work_queue`` row (``ENTRY_COLUMNS``) as a value.

    Raises:
        Damaged: a stored time is not a time.
    """
    wid, status, wakeups, queued_at, note = row
    return QueueEntry(
        str(wid),
        QueueStatus(status),
        int(wakeups),
        parse_time(str(wid), "its queue entry", queued_at),
        None if note is None else str(note),
    )
