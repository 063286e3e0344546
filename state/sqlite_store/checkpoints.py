"""WAL checkpoints on a thread of their own, so that no commit waits for one.

In WAL mode a commit appends its pages to the ``-wal`` file; a checkpoint copies them back
into the database file and syncs it. SQLite runs one automatically inside the commit that
pushes the WAL past 1,000 pages, and that commit then takes several milliseconds instead
of about twenty microseconds: spread over the commits, about half of what a commit costs.
SQLite's documentation offers the alternative used here: a separate connection, on its own
thread, checkpoints while the store's connection goes on committing (``PASSIVE``: it
never waits for, nor blocks, a reader or a writer). The ``sqlite3`` module lets go of the
GIL while SQLite works, so on a machine with two cores the copy costs the committing
thread nothing.

The store's own connection keeps an automatic checkpoint as a backstop, at ``BACKSTOP``
pages, for when this thread falls behind (a reader holding an old snapshot keeps a
``PASSIVE`` checkpoint from finishing) or has stopped.

Only ``durability="normal"`` stores run the thread. Under ``"full"`` every commit waits
for an fsync of the WAL, and a checkpoint writing and syncing the database file beside
those fsyncs made them slower: the median commit went from about 240 to about 500 µs
(measured with ``bench.durable``'s trace), so there SQLite checkpoints inside the commit
as it always did.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

from state.sqlite_store.connection import configure, connect

log = structlog.get_logger(__name__)

EVERY = 200
"""Write transactions between two checkpoints (about 1,000 WAL pages for the runner's
commits, which put about 5 pages each: SQLite's own default interval)."""

BACKSTOP = 10_000
"""WAL pages at which the store's connection checkpoints inside a commit after all."""


class Checkpointer:
    """Checkpoints ``path``'s WAL on a daemon thread every ``every`` noted commits.

    The thread and its connection are made at the first checkpoint, so a handle that only
    reads, or writes a little, never starts one. Not thread-safe by itself: the store calls
    ``committed`` and ``close`` under its own lock.

    Args:
        path: the database file, already in WAL mode, written with synchronous=NORMAL.
        busy_timeout_s: the store's, for opening the thread's connection.
        every: write transactions between two checkpoints.
    """

    def __init__(self, path: Path, busy_timeout_s: float, *, every: int = EVERY) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._every = every
        self._since = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        """Checkpoints the thread has run (for tests and benches)."""

    def committed(self) -> None:
        """Note one write transaction; every ``every`` of them, wake the thread."""
        self._since += 1
        if self._since < self._every:
            return
        self._since = 0
        if self._thread is None:
            if self._stopping:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"sqlite-checkpoint {self.path.name}", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after the checkpoint it may be running; closing twice is fine."""
        self._stopping = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        try:
            conn = connect(self.path, read_only=False, busy_timeout_s=self._busy_timeout_s)
            configure(conn, self.path, "normal")  # a checkpoint syncs the file as NORMAL does
        except Exception as exc:  # the backstop still checkpoints; say why this thread won't
            log.warning(
                "store.checkpoint.unavailable",
                path=str(self.path),
                error=str(exc),
                advice="commits will run SQLite's own checkpoints instead",
            )
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    log.warning("store.checkpoint.failed", path=str(self.path), error=str(exc))
        finally:
            conn.close()
