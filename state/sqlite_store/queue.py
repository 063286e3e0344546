"""The work queue in SQLite: claims in one ``BEGIN IMMEDIATE`` transaction.

SQLite has one writer at a time per file, so a claim is a write transaction taken up front
(``BEGIN IMMEDIATE``): it reads the ready entries and their leases and writes the new
leases while no other process can write, which is all it takes for two workers on this
host never to claim one workflow. There is no notification between processes: an idle
worker polls (``wait_for_work`` sleeps), and wakes at once for an ``enqueue`` made through
the same handle.

``SQLiteQueue`` is a mixin of ``SQLiteStore``: it uses the store's transactions, clock and
host, declared here for the type checker.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import AbstractContextManager
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
    entry_of_row,
    holdings,
    worker_of_row,
)
from state.sqlite_store import leases as lease_rows
from state.store import Lease, pid_alive


def _ready_rows(conn: sqlite3.Connection, now: str, limit: int) -> list[tuple[str, int]]:
    """Ready entries with no lease or an expired one, the oldest-queued first."""
    rows = conn.execute(
        "SELECT q.workflow_id, q.wakeups FROM work_queue q "
        "LEFT JOIN leases l ON l.workflow_id = q.workflow_id "
        "WHERE q.status = 'ready' AND (l.workflow_id IS NULL OR l.expires_at <= ?) "
        "ORDER BY q.queued_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return [(str(w), int(n)) for w, n in rows]


def _orphans_of_dead(
    conn: sqlite3.Connection, now: str, host: str, limit: int
) -> list[tuple[str, int]]:
    """Ready entries whose live lease belongs to a process of this host that is gone."""
    pids = conn.execute(
        "SELECT DISTINCT l.pid FROM work_queue q JOIN leases l ON l.workflow_id = q.workflow_id "
        "WHERE q.status = 'ready' AND l.host = ? AND l.expires_at > ?",
        (host, now),
    ).fetchall()
    dead = [int(p) for (p,) in pids if not pid_alive(int(p))]
    if not dead:
        return []
    rows = conn.execute(
        "SELECT q.workflow_id, q.wakeups FROM work_queue q "
        "JOIN leases l ON l.workflow_id = q.workflow_id "
        "WHERE q.status = 'ready' AND l.host = ? "
        "AND l.pid IN (SELECT value FROM json_each(?)) ORDER BY q.queued_at LIMIT ?",
        (host, json.dumps(dead), limit),
    ).fetchall()
    return [(str(w), int(n)) for w, n in rows]


def _claimable(conn: sqlite3.Connection, now: str, host: str, limit: int) -> list[tuple[str, int]]:
    """Up to ``limit`` ready entries a claim may take: unleased, expired, or of dead holders."""
    found = _ready_rows(conn, now, limit)
    if len(found) < limit:
        found += _orphans_of_dead(conn, now, host, limit - len(found))
    return found


class SQLiteQueue:
    """``WorkQueue`` on the SQLite store (mixed into ``SQLiteStore``)."""

    if TYPE_CHECKING:
        host: str

        def _writing(
            self, doing: str, workflow_id: str | None = None
        ) -> AbstractContextManager[sqlite3.Connection]: ...

        def _reading(
            self, doing: str, workflow_id: str | None = None
        ) -> AbstractContextManager[sqlite3.Connection]: ...

        def _now(self) -> datetime: ...

        def _require(self, conn: sqlite3.Connection, workflow_id: str) -> None: ...

    @cached_property
    def _wake(self) -> threading.Event:
        """Set by ``enqueue`` on this handle, so a worker of this process wakes at once."""
        return threading.Event()

    def enqueue(self, workflow_id: str) -> None:
        """Make the workflow ready and wake idle workers (see ``WorkQueue``)."""
        now = ts(self._now())
        with self._writing("queue the workflow", workflow_id) as conn:
            self._require(conn, workflow_id)
            conn.execute(
                "INSERT INTO work_queue (workflow_id, status, wakeups, queued_at, note) "
                "VALUES (?, 'ready', 1, ?, NULL) ON CONFLICT (workflow_id) DO UPDATE SET "
                "status = 'ready', wakeups = work_queue.wakeups + 1, note = NULL, "
                "queued_at = CASE WHEN work_queue.status = 'ready' THEN work_queue.queued_at "
                "ELSE excluded.queued_at END",
                (workflow_id, now),
            )
        self._wake.set()

    def claim(self, owner: str, ttl_s: float, limit: int) -> list[Claim]:
        """Lease up to ``limit`` ready, unleased workflows to ``owner`` (see ``WorkQueue``)."""
        if limit <= 0:
            return []
        now = self._now()
        expires = now + ttl(owner, ttl_s)
        pid = os.getpid()
        claims: list[Claim] = []
        with self._reading("look for claimable workflows") as conn:
            if not _claimable(conn, ts(now), self.host, limit):
                return []  # the usual answer of a busy pool: no write lock taken for it
        with self._writing("claim workflows") as conn:
            for workflow_id, wakeups in _claimable(conn, ts(now), self.host, limit):
                lease = Lease(workflow_id, owner, self.host, pid, expires)
                lease_rows.put(conn, lease)
                claims.append(Claim(workflow_id, wakeups, lease))
        return claims

    def settle(
        self, workflow_id: str, wakeups: int, *, finished: bool, note: str | None = None
    ) -> bool:
        """Remove a finished workflow, or park one not answered since (see ``WorkQueue``)."""
        with self._writing("settle the queued workflow", workflow_id) as conn:
            if finished:
                cur = conn.execute("DELETE FROM work_queue WHERE workflow_id = ?", (workflow_id,))
            else:
                cur = conn.execute(
                    "UPDATE work_queue SET status = 'parked', note = ? "
                    "WHERE workflow_id = ? AND wakeups = ?",
                    (note, workflow_id, wakeups),
                )
            return cur.rowcount > 0

    def queued(self) -> list[QueueEntry]:
        """Every queued workflow, the oldest-queued first (see ``WorkQueue``)."""
        with self._reading("list the work queue") as conn:
            rows = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM work_queue ORDER BY queued_at"  # noqa: S608
            ).fetchall()
        return [entry_of_row(row) for row in rows]

    def wait_for_work(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; woken early by an ``enqueue`` on this handle."""
        event = self._wake
        woken = event.wait(timeout_s)
        event.clear()
        return woken

    def beat(self, worker: WorkerBeat) -> None:
        """Record a worker's heartbeat (see ``WorkQueue``)."""
        now = ts(self._now())
        with self._writing("record the worker's heartbeat") as conn:
            conn.execute(
                "INSERT INTO workers (worker_id, host, pid, started_at, concurrency, "
                "heartbeat_s, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
                "concurrency = excluded.concurrency, heartbeat_s = excluded.heartbeat_s",
                (
                    worker.worker_id,
                    worker.host,
                    worker.pid,
                    ts(worker.started_at),
                    worker.concurrency,
                    worker.heartbeat_s,
                    now,
                ),
            )

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped (see ``WorkQueue``)."""
        with self._writing("remove the worker") as conn:
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker, the most recently started first (see ``WorkQueue``)."""
        with self._reading("list the workers") as conn:
            rows = conn.execute(
                f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY started_at DESC"  # noqa: S608
            ).fetchall()
            leased = conn.execute(
                "SELECT l.owner, l.workflow_id FROM leases l JOIN workers w "
                "ON w.worker_id = l.owner"
            ).fetchall()
        held = holdings((str(o), str(w)) for o, w in leased)
        return [worker_of_row(row, held) for row in rows]
