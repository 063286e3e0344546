"""``SQLiteStore``: the ``Store`` on one SQLite connection, shared safely between threads."""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, Literal, ParamSpec, TypeVar

from state import leasing
from state.clock import Clock, SystemClock
from state.codec import (
    Damaged,
    aware,
    check_commit_target,
    decode_config,
    decode_entry,
    decode_state,
    encode_entry,
    summary_of,
    summary_values,
    ts,
    ttl,
)
from state.config import WorkflowConfig
from state.errors import (
    ConcurrencyError,
    ConfigError,
    StoreCorruptError,
    StoreError,
    UnknownWorkflowError,
)
from state.sqlite_store import artifacts as artifact_rows
from state.sqlite_store import leases as lease_rows
from state.sqlite_store import workflows as workflow_rows
from state.sqlite_store.connection import (
    DATA_DIR_ENV,
    DB_FILENAME,
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
from state.steps import WorkflowStatus
from state.store import (
    Artifact,
    ClosesOnExit,
    Lease,
    LedgerEntry,
    LedgerEntryIn,
    LedgerKind,
    SnapshotEncoder,
    StoredWorkflow,
    WorkflowSummary,
)
from state.workflow import WorkflowState

if TYPE_CHECKING:
    from state.store import Store

Durability = Literal["normal", "full"]

P = ParamSpec("P")
R = TypeVar("R")


def _noting_damage(
    method: Callable[Concatenate[SQLiteStore, P], R],
) -> Callable[Concatenate[SQLiteStore, P], R]:
    """Turn ``Damaged`` into ``StoreCorruptError`` and remember it, refusing later writes."""

    @functools.wraps(method)
    def guarded(self: SQLiteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except Damaged as exc:
            error = exc.to_error(f"The database {self.path}")
            self._damage = self._damage or str(error)
            raise error from exc
        except StoreCorruptError as exc:
            self._damage = self._damage or str(exc)
            raise

    return guarded


class SQLiteStore(ClosesOnExit, SQLiteQueue):
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

    blocking: bool = True
    """Calls wait on the disk and on other processes' locks: async callers offload them."""

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
        self.durability: Durability = durability
        self.host = socket.gethostname()
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._encoder = SnapshotEncoder()
        self._conn: sqlite3.Connection | None = None
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
        if version < len(migrations):
            migrate(conn, self.path, migrations)

    def _error(self, exc: sqlite3.Error, doing: str, workflow_id: str | None = None) -> StoreError:
        return translate(exc, doing, self.path, self._busy_timeout_s, workflow_id)

    def _now(self) -> datetime:
        return aware(self._clock.now())

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store {self.path} is closed; open a new SQLiteStore")
        return self._conn

    @contextmanager
    def _reading(self, doing: str, workflow_id: str | None = None) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that only read (each sees one consistent state)."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(exc, doing, workflow_id) from exc

    @contextmanager
    def _writing(self, doing: str, workflow_id: str | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so that it never fails half-way on a lock."""
        with self._lock:
            conn = self._connection()
            self._refuse_writes(doing, workflow_id)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc, doing, workflow_id) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    # The original error says more; SQLite rolls back on close anyway.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, doing, workflow_id) from exc
                raise

    def _refuse_writes(self, doing: str, workflow_id: str | None) -> None:
        subject = f"workflow {workflow_id}: " if workflow_id else ""
        if self._damage is not None:
            raise StoreCorruptError(
                f"{subject}will not {doing}: this store was found damaged ({self._damage}), "
                "so nothing more is written to it. Reading still works (list, status, "
                "inspect, export); restore the database from a backup to write again"
            )
        if self.read_only:
            raise StoreError(
                f"{subject}cannot {doing}: {self.path} is open read-only (it or its "
                f"directory is not writable); check the permissions, or set {DATA_DIR_ENV} "
                "to a writable directory"
            )

    def _unknown(self, workflow_id: str) -> UnknownWorkflowError:
        return UnknownWorkflowError(
            f"no workflow with id '{workflow_id}' in {self.path}; run `orchestrator list` "
            f"to see the workflows this store holds ({DATA_DIR_ENV} selects another store)"
        )

    def _require(self, conn: sqlite3.Connection, workflow_id: str) -> None:
        if not workflow_rows.exists(conn, workflow_id):
            raise self._unknown(workflow_id)

    # -- workflows -------------------------------------------------------------------------

    @_noting_damage
    def create(self, state: WorkflowState, config: WorkflowConfig) -> int:
        """Store a new workflow and return its first version (1) (see ``Store``)."""
        wid = state.workflow_id
        now = self._now()
        row = (
            wid,
            1,
            *summary_values(state, now),
            ts(state.created_at or now),
            config.model_dump_json(),
            self._encoder.encode(state),
        )
        with self._writing("create the workflow", wid) as conn:
            if workflow_rows.exists(conn, wid):
                raise StoreError(
                    f"workflow {wid} already exists in {self.path}; choose another id, or resume it"
                )
            workflow_rows.insert(conn, row)
        return 1

    @_noting_damage
    def load(self, workflow_id: str) -> StoredWorkflow:
        """The latest snapshot, configuration and version of a workflow (see ``Store``)."""
        with self._reading("load the workflow", workflow_id) as conn:
            row = workflow_rows.select_stored(conn, workflow_id)
        if row is None:
            raise self._unknown(workflow_id)
        version, config_text, snapshot = row
        return StoredWorkflow(
            state=decode_state(workflow_id, snapshot),
            config=decode_config(workflow_id, config_text),
            version=version,
        )

    @_noting_damage
    def commit(
        self,
        workflow_id: str,
        state: WorkflowState,
        *,
        expected_version: int,
        entries: Sequence[LedgerEntryIn] = (),
        owner: str | None,
    ) -> int:
        """Replace the snapshot and append ledger entries in one transaction (see ``Store``)."""
        check_commit_target(workflow_id, state)
        snapshot = self._encoder.encode(state)
        payloads = [encode_entry(self._encoder, workflow_id, entry) for entry in entries]
        now = self._now()
        with self._writing("commit", workflow_id) as conn:
            if not workflow_rows.replace_snapshot(
                conn, workflow_id, summary_values(state, now), snapshot, expected_version
            ):
                stored = workflow_rows.stored_version(conn, workflow_id)
                if stored is None:
                    raise self._unknown(workflow_id)
                raise ConcurrencyError(
                    f"workflow {workflow_id} changed since it was loaded (version "
                    f"{expected_version} expected, {stored} stored): another process "
                    "committed to it; nothing was written. Load it again and redo the step"
                )
            if owner is not None:
                leasing.check_holder(lease_rows.read(conn, workflow_id), workflow_id, owner, now)
            if payloads:
                workflow_rows.append(conn, workflow_id, payloads, ts(now))
        return expected_version + 1

    @_noting_damage
    def list_workflows(self, status: WorkflowStatus | None = None) -> list[WorkflowSummary]:
        """Every workflow (or those with ``status``), the most recently updated first."""
        with self._reading("list the workflows") as conn:
            rows = workflow_rows.select_summaries(conn, status)
        return [summary_of(row) for row in rows]

    # -- ledger ----------------------------------------------------------------------------

    @_noting_damage
    def ledger(
        self,
        workflow_id: str,
        *,
        after_seq: int = 0,
        kinds: Collection[LedgerKind] | None = None,
    ) -> list[LedgerEntry]:
        """The workflow's ledger entries with ``seq > after_seq``, in order (see ``Store``)."""
        with self._reading("read the ledger", workflow_id) as conn:
            rows = workflow_rows.select_ledger(conn, workflow_id, after_seq, kinds)
            if not rows:
                self._require(conn, workflow_id)
        return [decode_entry(workflow_id, *row) for row in rows]

    # -- leases ----------------------------------------------------------------------------

    @_noting_damage
    def acquire_lease(
        self,
        workflow_id: str,
        owner: str,
        ttl_s: float,
        *,
        host: str | None = None,
        pid: int | None = None,
    ) -> Lease:
        """Claim the workflow for ``owner`` for ``ttl_s`` seconds (see ``Store``)."""
        now = self._now()
        lease = Lease(
            workflow_id=workflow_id,
            owner=owner,
            host=host if host is not None else self.host,
            pid=pid if pid is not None else os.getpid(),
            expires_at=now + ttl(workflow_id, ttl_s),
        )
        with self._writing("acquire the lease", workflow_id) as conn:
            self._require(conn, workflow_id)
            current = lease_rows.read(conn, workflow_id)
            leasing.refuse_unless_free(current, owner, now=now, host=self.host)
            lease_rows.put(conn, lease)
        return lease

    @_noting_damage
    def renew_lease(self, workflow_id: str, owner: str, ttl_s: float) -> Lease:
        """Extend ``owner``'s lease to ``ttl_s`` seconds from now (see ``Store``)."""
        expires = self._now() + ttl(workflow_id, ttl_s)
        with self._writing("renew the lease", workflow_id) as conn:
            current = lease_rows.read(conn, workflow_id)
            if current is None:
                self._require(conn, workflow_id)
            held = leasing.refuse_unless_holder(current, workflow_id, owner)
            renewed = Lease(workflow_id, owner, held.host, held.pid, expires)
            lease_rows.put(conn, renewed)
        return renewed

    @_noting_damage
    def release_lease(self, workflow_id: str, owner: str) -> bool:
        """Give up ``owner``'s lease; whether there was one to give up."""
        with self._writing("release the lease", workflow_id) as conn:
            return lease_rows.delete(conn, workflow_id, owner)

    @_noting_damage
    def lease(self, workflow_id: str) -> Lease | None:
        """The workflow's lease, live or expired, or None (see ``Store``)."""
        with self._reading("read the lease", workflow_id) as conn:
            current = lease_rows.read(conn, workflow_id)
            if current is None:
                self._require(conn, workflow_id)
            return current

    # -- artifacts -------------------------------------------------------------------------

    @_noting_damage
    def add_artifact(self, workflow_id: str, kind: str, path: str) -> Artifact:
        """Record a file the workflow produced (see ``Store``)."""
        now = self._now()
        with self._writing("record the artifact", workflow_id) as conn:
            self._require(conn, workflow_id)
            artifact_rows.put(conn, workflow_id, kind, path, now)
        return Artifact(workflow_id, kind, path, now)

    @_noting_damage
    def artifacts(self, workflow_id: str) -> list[Artifact]:
        """The workflow's artifacts, in the order they were first recorded (see ``Store``)."""
        with self._reading("list the artifacts", workflow_id) as conn:
            found = artifact_rows.read(conn, workflow_id)
            if not found:
                self._require(conn, workflow_id)
        return found

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; later calls raise ``StoreError``. Closing twice is fine."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise self._error(exc, "close the database") from exc


if TYPE_CHECKING:

    def _conforms(store: SQLiteStore) -> Store:
        """Mypy checks here that SQLiteStore implements the Store protocol."""
        return store
