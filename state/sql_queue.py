"""The work queue over ``Tx`` transactions, written once for both SQL backends.

A workflow in ``work_queue`` is *ready* (a worker may claim it) or *parked* (it waits for a
human, or cannot run, with a note saying why); who drives a workflow is decided by its
lease alone (``state.leasing``), so the queue only says which workflows are worth a claim.
A claim takes, in one write transaction, up to ``limit`` ready workflows that nobody holds
(no lease, an expired one, or one of a dead process of this host) and writes a lease for
each; the lease of every candidate is read again inside that transaction, so a workflow
another worker claimed a moment ago is left alone.

What differs per backend is small and lives in each backend's ``queue`` module: the
claim's SQL (PostgreSQL locks the rows it picks ``FOR UPDATE SKIP LOCKED``, so claimers on
many hosts never wait for one another; SQLite's write transaction is already exclusive),
how a list of process ids is passed, and how idle workers are woken (PostgreSQL's
LISTEN/NOTIFY; an event in this process for SQLite, with polling between processes).

``SqlQueue`` is a mixin of ``state.sql_core.SqlStore``: it uses the store's transactions,
clock, host and lease rows, declared here for the type checker.
"""

from __future__ import annotations

import json
import os
import threading
from abc import abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from state.codec import ts, ttl
from state.queue import (
    ENTRY_COLUMNS,
    WORKER_COLUMNS,
    Claim,
    QueueEntry,
    WorkerBeat,
    WorkerInfo,
    claimable,
    entry_of_row,
    holdings,
    worker_of_row,
)
from state.store import Lease, pid_alive

if TYPE_CHECKING:
    from state.sql_core import Statements, Tx


@dataclass(frozen=True, slots=True)
class QueueStatements:
    """The queue's SQL, with ``?`` placeholders; a backend overrides what it words otherwise.

    Attributes:
        free: ready entries with no lease or an expired one, oldest first: (now, limit).
        held_pids: the pids of live leases of this host on ready entries: (host, now).
        of_dead: ready entries leased by the given pids of this host: (host, pids, limit).
        lock: appended to ``free`` and ``of_dead`` in the claim's write transaction (e.g.
            ``FOR UPDATE ... SKIP LOCKED``); the look before it reads without it.
    """

    free: str = (
        "SELECT q.workflow_id, q.wakeups FROM work_queue q "
        "LEFT JOIN leases l ON l.workflow_id = q.workflow_id "
        "WHERE q.status = 'ready' AND (l.workflow_id IS NULL OR l.expires_at <= ?) "
        "ORDER BY q.queued_at LIMIT ?"
    )
    held_pids: str = (
        "SELECT DISTINCT l.pid FROM work_queue q JOIN leases l "
        "ON l.workflow_id = q.workflow_id WHERE q.status = 'ready' "
        "AND l.host = ? AND l.expires_at > ?"
    )
    of_dead: str = (
        "SELECT q.workflow_id, q.wakeups FROM work_queue q "
        "JOIN leases l ON l.workflow_id = q.workflow_id "
        "WHERE q.status = 'ready' AND l.host = ? "
        "AND l.pid IN (SELECT value FROM json_each(?)) ORDER BY q.queued_at LIMIT ?"
    )
    lock: str = ""
    enqueue: str = (
        "INSERT INTO work_queue (workflow_id, status, wakeups, queued_at, note) "
        "VALUES (?, 'ready', 1, ?, NULL) ON CONFLICT (workflow_id) DO UPDATE SET "
        "status = 'ready', wakeups = work_queue.wakeups + 1, note = NULL, "
        "queued_at = CASE WHEN work_queue.status = 'ready' THEN work_queue.queued_at "
        "ELSE excluded.queued_at END"
    )
    beat: str = (
        "INSERT INTO workers (worker_id, host, pid, started_at, concurrency, "
        "heartbeat_s, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
        "concurrency = excluded.concurrency, heartbeat_s = excluded.heartbeat_s"
    )


class SqlQueue:
    """``WorkQueue`` on a SQL store (see ``state.queue.WorkQueue`` for each method's contract)."""

    queue_sql: QueueStatements = QueueStatements()

    if TYPE_CHECKING:
        host: str
        sql: Statements

        def _transaction(
            self,
            doing: str,
            workflow_id: str | None = None,
            *,
            write: bool = True,
            consistent: bool = False,
            single: bool = False,
        ) -> AbstractContextManager[Tx]: ...

        def _now(self) -> datetime: ...

        def _require(self, tx: Tx, workflow_id: str, *, lock: bool = False) -> None: ...

        def _read_lease(self, tx: Tx, workflow_id: str) -> Lease | None: ...

        def _put_lease(self, tx: Tx, lease: Lease) -> None: ...

    # -- what a backend supplies -----------------------------------------------------------

    def _pids_param(self, pids: list[int]) -> object:
        """The list of process ids as ``of_dead`` takes it (default: a JSON array)."""
        return json.dumps(pids)

    def _announce(self, tx: Tx, workflow_id: str) -> None:
        """Tell idle workers elsewhere, inside ``enqueue``'s transaction (default: nothing)."""

    @abstractmethod
    def wait_for_work(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an ``enqueue``; whether one woke the wait."""

    # -- the queue -------------------------------------------------------------------------

    @cached_property
    def _wake(self) -> threading.Event:
        """Set by ``enqueue`` on this handle, so a worker of this process wakes at once."""
        return threading.Event()

    def enqueue(self, workflow_id: str) -> None:
        """Make the workflow ready and wake idle workers."""
        now = ts(self._now())
        with self._transaction("queue the workflow", workflow_id) as tx:
            self._require(tx, workflow_id)
            self._enqueue_in(tx, workflow_id, now)
        self._woke()

    def _enqueue_in(self, tx: Tx, workflow_id: str, at: str) -> None:
        """Make the workflow ready inside ``tx``.

        ``enqueue`` calls it, and so do a ``create`` and a ``commit`` with ``wake``.
        """
        tx.run(self.queue_sql.enqueue, (workflow_id, at))
        self._announce(tx, workflow_id)

    def _woke(self) -> None:
        """After the transaction that queued a workflow: wake this process's idle worker."""
        self._wake.set()

    def _candidates(
        self, tx: Tx, now: datetime, limit: int, *, lock: bool
    ) -> list[tuple[str, int]]:
        """Up to ``limit`` ready entries a claim may take: unleased, expired, of dead holders."""
        q = self.queue_sql
        suffix = q.lock if lock else ""
        found = [(str(w), int(n)) for w, n in tx.all(q.free + suffix, (ts(now), limit))]
        if len(found) < limit:
            pids = tx.all(q.held_pids, (self.host, ts(now)))
            dead = [int(p) for (p,) in pids if not pid_alive(int(p))]
            if dead:
                params = (self.host, self._pids_param(dead), limit - len(found))
                found += [(str(w), int(n)) for w, n in tx.all(q.of_dead + suffix, params)]
        return found

    def claim(self, owner: str, ttl_s: float, limit: int) -> list[Claim]:
        """Lease up to ``limit`` ready, unleased workflows to ``owner``."""
        if limit <= 0:
            return []
        now = self._now()
        expires = now + ttl(owner, ttl_s)
        pid = os.getpid()
        with self._transaction("look for claimable workflows", write=False) as tx:
            if not self._candidates(tx, now, limit, lock=False):
                return []  # the usual answer of a busy pool: no write lock taken for it
        claims: list[Claim] = []
        with self._transaction("claim workflows") as tx:
            for workflow_id, wakeups in self._candidates(tx, now, limit, lock=True):
                # Read again in this transaction: another claim may have committed since.
                if not claimable(self._read_lease(tx, workflow_id), now=now, host=self.host):
                    continue
                lease = Lease(workflow_id, owner, self.host, pid, expires)
                self._put_lease(tx, lease)
                claims.append(Claim(workflow_id, wakeups, lease))
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
        """Remove a finished workflow, or park one nobody answered since its claim."""
        single = release is None
        with self._transaction("settle the queued workflow", workflow_id, single=single) as tx:
            if finished:
                settled = tx.run("DELETE FROM work_queue WHERE workflow_id = ?", (workflow_id,))
            else:
                settled = tx.run(
                    "UPDATE work_queue SET status = 'parked', note = ? "
                    "WHERE workflow_id = ? AND wakeups = ?",
                    (note, workflow_id, wakeups),
                )
            if release is not None:
                tx.run(self.sql.delete_lease, (workflow_id, release))
            return settled > 0

    def queued(self) -> list[QueueEntry]:
        """Every queued workflow, the oldest-queued first."""
        with self._transaction("list the work queue", write=False) as tx:
            rows = tx.all(f"SELECT {ENTRY_COLUMNS} FROM work_queue ORDER BY queued_at")  # noqa: S608
        return [entry_of_row(row) for row in rows]

    def beat(self, worker: WorkerBeat) -> None:
        """Record a worker's heartbeat."""
        now = ts(self._now())
        row = (
            worker.worker_id,
            worker.host,
            worker.pid,
            ts(worker.started_at),
            worker.concurrency,
            worker.heartbeat_s,
            now,
        )
        with self._transaction("record the worker's heartbeat", single=True) as tx:
            tx.run(self.queue_sql.beat, row)

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        with self._transaction("remove the worker", single=True) as tx:
            tx.run("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker, the most recently started first."""
        with self._transaction("list the workers", write=False, consistent=True) as tx:
            rows = tx.all(f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY started_at DESC")  # noqa: S608
            leased = tx.all(
                "SELECT l.owner, l.workflow_id FROM leases l JOIN workers w "
                "ON w.worker_id = l.owner"
            )
        held = holdings((str(o), str(w)) for o, w in leased)
        return [worker_of_row(row, held) for row in rows]
