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

The claim itself, settling, listing and heartbeats are ``state.sql_queue``'s, shared with
SQLite. ``PostgresQueue`` is a mixin of ``PostgresStore``: it uses the store's pool,
declared here for the type checker.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

from state.queue import NOTIFY_CHANNEL
from state.sql_queue import QueueStatements, SqlQueue

if TYPE_CHECKING:
    from state.sql_core import Tx

_READY = (
    "SELECT q.workflow_id, q.wakeups FROM work_queue q JOIN workflows w ON w.id = q.workflow_id "
)
POSTGRES_QUEUE_SQL = dataclasses.replace(
    QueueStatements(),
    # Lease changes lock the workflow row (``exists_locked``): locking it too keeps a claim
    # from racing an acquire_lease.
    free=_READY + "LEFT JOIN leases l ON l.workflow_id = q.workflow_id "
    "WHERE q.status = 'ready' AND (l.workflow_id IS NULL OR l.expires_at <= ?) "
    "ORDER BY q.queued_at LIMIT ?",
    of_dead=_READY + "JOIN leases l ON l.workflow_id = q.workflow_id "
    "WHERE q.status = 'ready' AND l.host = ? AND l.pid = ANY(?) "
    "ORDER BY q.queued_at LIMIT ?",
    lock=" FOR UPDATE OF q, w SKIP LOCKED",
)
"""The queue's statements as PostgreSQL words them: arrays for pids, row locks skipped."""


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


class PostgresQueue(SqlQueue):
    """``WorkQueue`` on the PostgreSQL store (mixed into ``PostgresStore``)."""

    queue_sql = POSTGRES_QUEUE_SQL

    if TYPE_CHECKING:

        def _current_pool(self) -> ConnectionPool: ...

    def _pids_param(self, pids: list[int]) -> object:
        """The pids as a PostgreSQL array."""
        return pids

    def _announce(self, tx: Tx, workflow_id: str) -> None:
        """``NOTIFY`` the queue's channel; delivered when the transaction commits."""
        tx.one("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, workflow_id))

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

    def wait_for_work(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a NOTIFY of ``enqueue`` from any process."""
        info = self._current_pool().conninfo
        return self._listener().wait(info() if callable(info) else info, timeout_s)
