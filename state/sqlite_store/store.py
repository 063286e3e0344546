"""``SQLiteStore``: the ``Store`` on one SQLite connection, shared safely between threads.

What it stores and how a commit runs is ``state.sql_core``'s; this module opens the file,
runs transactions on its one connection, and words SQLite's errors.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from state.clock import Clock, SystemClock
from state.errors import ConfigError, StoreError, UnknownWorkflowError
from state.sql_core import SqlStore
from state.sqlite_store.checkpoints import BACKSTOP, Checkpointer
from state.sqlite_store.connection import (
    DATA_DIR_ENV,
    DB_FILENAME,
    Tx,
    can_write,
    check_header,
    configure,
    connect,
    default_data_dir,
    prepare_data_dir,
    tighten_files,
    translate,
)
from state.sqlite_store.queue import SQLiteQueue
from state.sqlite_store.schema import MIGRATIONS, Migration, check_readable, migrate
from state.store import SnapshotEncoder

if TYPE_CHECKING:
    from state.store import Store

Durability = Literal["normal", "full"]


class SQLiteStore(SqlStore, SQLiteQueue):
    """The embedded ``Store``: one SQLite file, safe to share between threads and processes.

    A handle that met damaged data (a row that fails validation, a page SQLite reports as
    corrupt) writes nothing more: every later write raises ``StoreCorruptError`` naming the
    first damage, while reads go on, so a user can still list, inspect and export.

    Args:
        data_dir: the directory holding ``orchestrator.db`` (created 0700 if missing);
            default ``default_data_dir()``.
        durability: ``"normal"`` survives process crashes; ``"full"`` also power loss.
        busy_timeout_s: how long to wait for another process's write before giving up.
        clock: the time of ledger entries and lease expiry (default: the system clock).
        migrations: the schema's migrations; tests pass their own.
        read_only: open for reading only; None (the default) does so when the directory or
            the file is not writable (a read-only mount, a copy without write permission).

    Raises:
        ConfigError: ``durability`` is not "normal" or "full".
        StoreCorruptError: the file is not a SQLite database or is damaged.
        StoreVersionError: the file was written by a newer schema.
        StoreError: the directory or file cannot be created, read or written.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        durability: Durability = "normal",
        busy_timeout_s: float = 10.0,
        clock: Clock | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
        read_only: bool | None = None,
    ) -> None:
        if durability not in ("normal", "full"):
            raise ConfigError(f"store durability must be 'normal' or 'full', not {durability!r}")
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.path = self.data_dir / DB_FILENAME
        self._place = str(self.path)
        self.durability: Durability = durability
        self.host = socket.gethostname()
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._encoder = SnapshotEncoder()
        self._conn: sqlite3.Connection | None = None
        self._checkpoints: Checkpointer | None = None
        self._damage: str | None = None
        if read_only is None:
            read_only = self.data_dir.is_dir() and not can_write(self.data_dir, self.path)
        self.read_only = read_only
        if not read_only:
            prepare_data_dir(self.data_dir)
        check_header(self.path)
        if not read_only:
            tighten_files(self.path)
        try:
            conn = connect(self.path, read_only=read_only, busy_timeout_s=busy_timeout_s)
        except sqlite3.Error as exc:
            raise self._error(exc, "open the database") from exc
        try:
            self._open(conn, migrations)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, "open the database") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if not read_only and durability == "normal":
            self._checkpoints = Checkpointer(self.path, busy_timeout_s)
            # A store dropped without close() still stops its thread.
            weakref.finalize(self, self._checkpoints.close)

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        return f"SQLiteStore({str(self.path)!r}, durability={self.durability!r}{mode})"

    # -- opening and plumbing --------------------------------------------------------------

    def _open(self, conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
        """Check the schema version (reading only), then switch to WAL and migrate."""
        conn.execute("PRAGMA foreign_keys = ON")
        version = check_readable(conn, self.path, migrations)
        if self.read_only:
            if version < len(migrations):
                raise StoreError(
                    f"{self.path} has store schema version {version} and this program "
                    f"writes version {len(migrations)}, but it is open read-only; open it "
                    "once where it is writable to upgrade it"
                )
            return
        # From here on the file may be written: it is ours and not from the future.
        configure(conn, self.path, self.durability)
        if self.durability == "normal":
            # Checkpoints run on a thread (``checkpoints``); SQLite's own is the backstop.
            conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP}")
        if version < len(migrations):
            migrate(conn, self.path, migrations)

    def _error(self, exc: sqlite3.Error, doing: str, workflow_id: str | None = None) -> StoreError:
        return translate(exc, doing, self.path, self._busy_timeout_s, workflow_id)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store {self.path} is closed; open a new SQLiteStore")
        return self._conn

    @contextmanager
    def _transaction(
        self,
        doing: str,
        workflow_id: str | None = None,
        *,
        write: bool = True,
        consistent: bool = False,
        single: bool = False,
    ) -> Iterator[Tx]:
        """One transaction on the connection (see ``SqlStore._transaction``).

        A write of several statements takes the write lock up front (``BEGIN IMMEDIATE``), so
        that it never fails half-way on a lock; reads that must agree share one read
        transaction; a lone statement is a transaction by itself.
        """
        with self._lock:
            conn = self._connection()
            if write:
                self._refuse_writes(doing, workflow_id)
            begin = None
            if write and not single:
                begin = "BEGIN IMMEDIATE"
            elif consistent:
                begin = "BEGIN"
            try:
                if begin is not None:
                    conn.execute(begin)
                yield Tx(conn)
                if begin is not None:
                    conn.execute("COMMIT")
                if write and self._checkpoints is not None:
                    self._checkpoints.committed()
            except BaseException as exc:
                if conn.in_transaction:
                    # The original error says more; SQLite rolls back on close anyway.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, doing, workflow_id) from exc
                raise

    def _refuse_writes(self, doing: str, workflow_id: str | None) -> None:
        super()._refuse_writes(doing, workflow_id)
        if self.read_only:
            subject = f"workflow {workflow_id}: " if workflow_id else ""
            raise StoreError(
                f"{subject}cannot {doing}: {self.path} is open read-only (it or its "
                f"directory is not writable); check the permissions, or set {DATA_DIR_ENV} "
                "to a writable directory"
            )

    def damage_where(self) -> str:
        """The store's name in a damage message: "The database PATH"."""
        return f"The database {self.path}"

    def _unknown(self, workflow_id: str) -> UnknownWorkflowError:
        return UnknownWorkflowError(
            f"no workflow with id '{workflow_id}' in {self.path}; run `orchestrator list` "
            f"to see the workflows this store holds ({DATA_DIR_ENV} selects another store)"
        )

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; later calls raise ``StoreError``. Closing twice is fine."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if self._checkpoints is not None:
                self._checkpoints.close()
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise self._error(exc, "close the database") from exc


if TYPE_CHECKING:

    def _conforms(store: SQLiteStore) -> Store:
        """Mypy checks here that SQLiteStore implements the Store protocol."""
        return store
