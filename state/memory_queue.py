"""The work queue of the in-memory store, for tests and single-process pools.

Entries and workers sit beside the store's rows, behind the same lock, so a claim reads
the leases and writes new ones in one step. ``wait_for_work`` waits on a condition of that
lock, which every ``enqueue`` on any handle of the store notifies.

``MemoryQueue`` is a mixin of ``MemoryStore``: it uses the store's data, clock and host,
declared here for the type checker.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from state.codec import ttl
from state.queue import (
    Claim,
    QueueEntry,
    QueueStatus,
    WorkerBeat,
    WorkerInfo,
    claimable,
    holdings,
)
from state.store import Lease

if TYPE_CHECKING:
    from state.memory_store import MemoryData, _Row


@dataclass(slots=True)
class _Queued:
    status: QueueStatus
    wakeups: int
    queued_at: datetime
    note: str | None = None


@dataclass(slots=True)
class _QueueData:
    """The queue and the workers of one in-memory store."""

    woken: threading.Condition
    entries: dict[str, _Queued] = field(default_factory=dict)
    workers: dict[str, tuple[WorkerBeat, datetime]] = field(default_factory=dict)


_QUEUES: weakref.WeakKeyDictionary[Any, _QueueData] = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


class MemoryQueue:
    """``WorkQueue`` on the in-memory store (mixed into ``MemoryStore``)."""

    if TYPE_CHECKING:
        data: MemoryData
        host: str

        def _now(self) -> datetime: ...

        def _open(self) -> None: ...

        def _row(self, workflow_id: str) -> Any: ...

    def _queue(self) -> _QueueData:
        with _QUEUES_LOCK:
            found = _QUEUES.get(self.data)
            if found is None:
                found = _QUEUES[self.data] = _QueueData(threading.Condition(self.data.lock))
            return found

    def enqueue(self, workflow_id: str) -> None:
        """Make the workflow ready and wake idle workers (see ``WorkQueue``)."""
        now = self._now()
        with self.data.lock:
            self._open()
            self._row(workflow_id)
            self._ready_locked(workflow_id, now)

    def _ready_locked(self, workflow_id: str, now: datetime) -> None:
        """``enqueue``'s change, the store's lock held (a commit with ``wake`` calls it too)."""
        queue = self._queue()
        entry = queue.entries.get(workflow_id)
        if entry is None:
            queue.entries[workflow_id] = _Queued(QueueStatus.READY, 1, now)
        else:
            if entry.status is not QueueStatus.READY:
                entry.queued_at = now
            entry.status, entry.note = QueueStatus.READY, None
            entry.wakeups += 1
        queue.woken.notify_all()

    def _held_locked(self, workflow_id: str, owner: str) -> _Row | None:
        """The workflow's row when ``owner`` holds its lease, the store's lock held."""
        row = self.data.rows.get(workflow_id)
        if row is None or row.lease is None or row.lease.owner != owner:
            return None
        return row

    def _release_locked(self, workflow_id: str, owner: str) -> bool:
        """Drop ``owner``'s lease, the store's lock held (``release_lease`` and ``settle``)."""
        row = self._held_locked(workflow_id, owner)
        if row is None:
            return False
        row.lease = None
        return True

    def claim(self, owner: str, ttl_s: float, limit: int) -> list[Claim]:
        """Lease up to ``limit`` ready, unleased workflows to ``owner`` (see ``WorkQueue``)."""
        queue = self._queue()
        now = self._now()
        expires = now + ttl(owner, ttl_s)
        claims: list[Claim] = []
        with self.data.lock:
            self._open()
            ready = sorted(
                (e.queued_at, wid, e.wakeups)
                for wid, e in queue.entries.items()
                if e.status is QueueStatus.READY
            )
            for _, wid, wakeups in ready:
                if len(claims) >= limit:
                    break
                row = self._row(wid)
                if not claimable(row.lease, now=now, host=self.host):
                    continue
                row.lease = Lease(wid, owner, self.host, os.getpid(), expires)
                claims.append(Claim(wid, wakeups, row.lease))
        return claims

    def settle(
        self,
        workflow_id: str,
        wakeups: int,
        *,
        finished: bool,
        note: str | None = None,
        release: str | None = None,
    ) -> bool:
        """Remove a finished workflow, or park one not answered since (see ``WorkQueue``)."""
        queue = self._queue()
        with self.data.lock:
            self._open()
            if release is not None:
                self._release_locked(workflow_id, release)
            entry = queue.entries.get(workflow_id)
            if entry is None:
                return False
            if finished:
                del queue.entries[workflow_id]
                return True
            if entry.wakeups != wakeups:
                return False
            entry.status, entry.note = QueueStatus.PARKED, note
            return True

    def queued(self) -> list[QueueEntry]:
        """Every queued workflow, the oldest-queued first (see ``WorkQueue``)."""
        queue = self._queue()
        with self.data.lock:
            self._open()
            found = [
                QueueEntry(wid, e.status, e.wakeups, e.queued_at, e.note)
                for wid, e in queue.entries.items()
            ]
        return sorted(found, key=lambda e: e.queued_at)

    def wait_for_work(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an ``enqueue`` on any handle of this store."""
        queue = self._queue()
        with queue.woken:
            return queue.woken.wait(timeout_s)

    def beat(self, worker: WorkerBeat) -> None:
        """Record a worker's heartbeat (see ``WorkQueue``)."""
        queue = self._queue()
        now = self._now()
        with self.data.lock:
            self._open()
            queue.workers[worker.worker_id] = (worker, now)

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped (see ``WorkQueue``)."""
        queue = self._queue()
        with self.data.lock:
            self._open()
            queue.workers.pop(worker_id, None)

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker, the most recently started first (see ``WorkQueue``)."""
        queue = self._queue()
        with self.data.lock:
            self._open()
            leases = [
                (row.lease.owner, wid)
                for wid, row in self.data.rows.items()
                if row.lease is not None and row.lease.owner in queue.workers
            ]
            known = list(queue.workers.values())
        held = holdings(leases)
        found = [WorkerInfo(beat, at, held.get(beat.worker_id, ())) for beat, at in known]
        return sorted(found, key=lambda w: w.beat.started_at, reverse=True)
