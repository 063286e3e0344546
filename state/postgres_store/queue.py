"""The work queue in PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims, LISTEN/NOTIFY wake-ups.

A claim locks the ready entries it picks, with their workflow rows, ``FOR UPDATE SKIP
LOCKED``: workers on any number of hosts claiming at once each get different workflows,
and none waits for another's transaction (a workflow in the middle of a commit or a lease
change is skipped, not waited for). The lease of each locked workflow is read again after
the lock is taken, since lease changes lock the same workflow row: a workflow another
worker claimed a moment ago is seen as leased and left alone.

``enqueue`` sends ``NOTIFY orchestrator_work`` in its transaction, delivered when it
commits; an idle worker waits on a connection of its own that LISTENs there. A lost
connection (a server restart) is dropped and made again at the next wait; meanwhile, and
for notifications sent while nobody listened, the worker's polling interval is the
fallback.

``PostgresQueue`` is a mixin of ``PostgresStore``: it uses the store's transactions, pool,
clock and host, declared here for the type checker.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import AbstractContextManager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

from state.codec import ts, ttl
from state.postgres_store import rows
from state.queue import (
    ENTRY_COLUMNS,
    NOTIFY_CHANNEL,
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

_FREE = (
    "SELECT q.workflow_id, q.wakeups FROM work_queue q "
    "JOIN workflows w ON w.id = q.workflow_id "
    "LEFT JOIN leases l ON l.workflow_id = q.workflow_id "
    "WHERE q.status = 'ready' AND (l.workflow_id IS NULL OR l.expires_at <= %s) "
    "ORDER BY q.queued_at LIMIT %s FOR UPDATE OF q, w SKIP LOCKED"
)
_OF_DEAD = (
    "SELECT q.workflow_id, q.wakeups FROM work_queue q "
    "JOIN workflows w ON w.id = q.workflow_id "
    "JOIN leases l ON l.workflow_id = q.workflow_id "
    "WHERE q.status = 'ready' AND l.host = %s AND l.pid = ANY(%s) "
    "ORDER BY q.queued_at LIMIT %s FOR UPDATE OF q, w SKIP LOCKED"
)


class _Listener:
    """One connection LISTENing on the queue's channel, made again after a failure."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: psycopg.Connection[Any] | None = None

    def wait(self, conninfo: str, timeout_s: float) -> bool:
        with self.lock:
            started = time.monotonic()
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(
                        conninfo, autocommit=True, connect_timeout=max(2, round(timeout_s))
                    )
                    self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                for _ in self.conn.notifies(timeout=timeout_s, stop_after=1):
                    return True
                return False
            except psycopg.Error:
                self.close()
                # Polling fallback: the server is away; wait out the rest of the interval.
                time.sleep(max(0.0, timeout_s - (time.monotonic() - started)))
                return False

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()


_LISTENERS: dict[int, _Listener] = {}
_LISTENERS_LOCK = threading.Lock()


class PostgresQueue:
    """``WorkQueue`` on the PostgreSQL store (mixed into ``PostgresStore``)."""

    if TYPE_CHECKING:
        host: str

        def _transaction(
            self, doing: str, workflow_id: str | None = None, *, write: bool = True
        ) -> AbstractContextManager[rows.Cursor]: ...

        def _now(self) -> datetime: ...

        def _require(self, cur: rows.Cursor, workflow_id: str, *, lock: bool = False) -> None: ...

        def _current_pool(self) -> ConnectionPool: ...

    def _listener(self) -> _Listener:
        with _LISTENERS_LOCK:
            return _LISTENERS.setdefault(id(self), _Listener())

    def close_listener(self) -> None:
        """Close the connection ``wait_for_work`` listens on (the store's ``close`` does)."""
        with _LISTENERS_LOCK:
            listener = _LISTENERS.pop(id(self), None)
        if listener is not None:
            with listener.lock:
                listener.close()

    def enqueue(self, workflow_id: str) -> None:
        """Make the workflow ready and notify idle workers (see ``WorkQueue``)."""
        now = ts(self._now())
        with self._transaction("queue the workflow", workflow_id) as cur:
            self._require(cur, workflow_id)
            cur.execute(
                "INSERT INTO work_queue (workflow_id, status, wakeups, queued_at, note) "
                "VALUES (%s, 'ready', 1, %s, NULL) ON CONFLICT (workflow_id) DO UPDATE SET "
                "status = 'ready', wakeups = work_queue.wakeups + 1, note = NULL, "
                "queued_at = CASE WHEN work_queue.status = 'ready' THEN work_queue.queued_at "
                "ELSE excluded.queued_at END",
                (workflow_id, now),
            )
            cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, workflow_id))

    def claim(self, owner: str, ttl_s: float, limit: int) -> list[Claim]:
        """Lease up to ``limit`` ready, unleased workflows to ``owner`` (see ``WorkQueue``)."""
        if limit <= 0:
            return []
        now = self._now()
        expires = now + ttl(owner, ttl_s)
        pid = os.getpid()
        claims: list[Claim] = []
        with self._transaction("claim workflows") as cur:
            cur.execute(_FREE, (ts(now), limit))
            found = [(str(w), int(n)) for w, n in cur.fetchall()]
            if len(found) < limit:
                cur.execute(
                    "SELECT DISTINCT l.pid FROM work_queue q JOIN leases l "
                    "ON l.workflow_id = q.workflow_id WHERE q.status = 'ready' "
                    "AND l.host = %s AND l.expires_at > %s",
                    (self.host, ts(now)),
                )
                dead = [int(p) for (p,) in cur.fetchall() if not pid_alive(int(p))]
                if dead:
                    cur.execute(_OF_DEAD, (self.host, dead, limit - len(found)))
                    found += [(str(w), int(n)) for w, n in cur.fetchall()]
            for workflow_id, wakeups in found:
                # Read again under the row lock: another claim may have committed since.
                if not claimable(rows.read_lease(cur, workflow_id), now=now, host=self.host):
                    continue
                lease = Lease(workflow_id, owner, self.host, pid, expires)
                rows.put_lease(cur, lease)
                claims.append(Claim(workflow_id, wakeups, lease))
        return claims

    def settle(
        self, workflow_id: str, wakeups: int, *, finished: bool, note: str | None = None
    ) -> bool:
        """Remove a finished workflow, or park one not answered since (see ``WorkQueue``)."""
        with self._transaction("settle the queued workflow", workflow_id) as cur:
            if finished:
                cur.execute("DELETE FROM work_queue WHERE workflow_id = %s", (workflow_id,))
            else:
                cur.execute(
                    "UPDATE work_queue SET status = 'parked', note = %s "
                    "WHERE workflow_id = %s AND wakeups = %s",
                    (note, workflow_id, wakeups),
                )
            return cur.rowcount > 0

    def queued(self) -> list[QueueEntry]:
        """Every queued workflow, the oldest-queued first (see ``WorkQueue``)."""
        with self._transaction("list the work queue", write=False) as cur:
            cur.execute(
                f"SELECT {ENTRY_COLUMNS} FROM work_queue ORDER BY queued_at"  # noqa: S608
            )
            found = cur.fetchall()
        return [entry_of_row(row) for row in found]

    def wait_for_work(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a NOTIFY of ``enqueue`` from any process."""
        info = self._current_pool().conninfo
        return self._listener().wait(info() if callable(info) else info, timeout_s)

    def beat(self, worker: WorkerBeat) -> None:
        """Record a worker's heartbeat (see ``WorkQueue``)."""
        now = ts(self._now())
        with self._transaction("record the worker's heartbeat") as cur:
            cur.execute(
                "INSERT INTO workers (worker_id, host, pid, started_at, concurrency, "
                "heartbeat_s, heartbeat_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
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
        with self._transaction("remove the worker") as cur:
            cur.execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker, the most recently started first (see ``WorkQueue``)."""
        with self._transaction("list the workers", write=False) as cur:
            cur.execute(
                f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY started_at DESC"  # noqa: S608
            )
            found = cur.fetchall()
            cur.execute(
                "SELECT l.owner, l.workflow_id FROM leases l JOIN workers w "
                "ON w.worker_id = l.owner"
            )
            held = holdings((str(o), str(w)) for o, w in cur.fetchall())
        return [worker_of_row(row, held) for row in found]
