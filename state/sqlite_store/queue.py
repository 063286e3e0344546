"""The work queue in SQLite: claims in one ``BEGIN IMMEDIATE`` transaction.

SQLite has one writer at a time per file, so a claim is a write transaction taken up front
(``BEGIN IMMEDIATE``): it reads the ready entries and their leases and writes the new
leases while no other process can write, which is all it takes for two workers on this
host never to claim one workflow. There is no notification between processes: an idle
worker polls (``wait_for_work`` sleeps), and wakes at once for an ``enqueue`` made through
the same handle. Everything else is ``state.sql_queue``'s, shared with PostgreSQL.
"""

from __future__ import annotations

from state.sql_queue import SqlQueue


class SQLiteQueue(SqlQueue):
    """``WorkQueue`` on the SQLite store (mixed into ``SQLiteStore``)."""

    def wait_for_work(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; woken early by an ``enqueue`` on this handle."""
        event = self._wake
        woken = event.wait(timeout_s)
        event.clear()
        return woken
