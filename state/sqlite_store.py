"""``SQLiteStore``: the embedded default store, one SQLite file under a data directory.

The file is ``orchestrator.db`` in ``default_data_dir()`` unless another directory is given.
It runs in WAL mode, so readers never wait for the writer, and every write is one
``BEGIN IMMEDIATE`` transaction, so two processes queue on the write lock (``busy_timeout``)
instead of failing half-way. ``durability="normal"`` (synchronous=NORMAL) survives a crash of
the process; ``durability="full"`` (synchronous=FULL) also survives a power loss, at the cost
of an fsync per commit.

The file is never overwritten or repaired: a file that is not a SQLite database, a damaged
one, one written by a newer schema, or a row that fails validation raises an error and leaves
the file as it was. Migrations (``MIGRATIONS``, one function per schema version) run on open,
all in one transaction.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, assert_never

from pydantic import ValidationError

from state.config import WorkflowConfig
from state.decision import DecisionRecord
from state.errors import (
    ConcurrencyError,
    ConfigError,
    StoreCorruptError,
    StoreError,
    StoreVersionError,
    UnknownWorkflowError,
)
from state.steps import Gate, MachineState, Step, WorkflowStatus
from state.store import (
    Artifact,
    DecisionEntry,
    EventEntry,
    HumanAnswerEntry,
    Lease,
    LedgerEntry,
    LedgerEntryIn,
    LedgerKind,
    SnapshotEncoder,
    StepResultEntry,
    StoredWorkflow,
    WorkflowSummary,
    lease_is_stale,
)
from state.validation import describe_validation_error
from state.workflow import SCHEMA_VERSION, HumanAnswer, StepRecord, StepStatus, WorkflowState

if TYPE_CHECKING:
    from state.store import Store

DB_FILENAME = "orchestrator.db"
APP_DIR_NAME = "hybrid-orchestrator"
DATA_DIR_ENV = "ORCHESTRATOR_DATA_DIR"

Durability = Literal["normal", "full"]
Migration = Callable[[sqlite3.Connection], None]
"""Brings the schema from version N to N+1 with ``conn.execute`` only (no commit)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _migration_1(conn: sqlite3.Connection) -> None:
    """The first schema: workflows, ledger, artifacts, leases."""
    conn.execute("CREATE TABLE schema_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # The large JSON columns come last: listing reads the small ones without touching the
    # snapshot's overflow pages.
    conn.execute(
        """CREATE TABLE workflows (
            id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            phase INTEGER NOT NULL,
            machine_state TEXT NOT NULL,
            current_step INTEGER,
            waiting_gate TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            config TEXT NOT NULL,
            snapshot TEXT NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX workflows_by_status ON workflows (status, updated_at)")
    conn.execute(
        """CREATE TABLE ledger (
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (workflow_id, seq)
        )"""
    )
    conn.execute(
        """CREATE TABLE artifacts (
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            PRIMARY KEY (workflow_id, kind, path)
        )"""
    )
    conn.execute(
        """CREATE TABLE leases (
            workflow_id TEXT PRIMARY KEY REFERENCES workflows (id),
            owner TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at TEXT NOT NULL
        )"""
    )


MIGRATIONS: tuple[Migration, ...] = (_migration_1,)
"""``MIGRATIONS[n]`` brings the schema from version n to n+1; never edit a released one."""

STORE_SCHEMA_VERSION = len(MIGRATIONS)


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the store lives when no directory is given.

    ``$ORCHESTRATOR_DATA_DIR`` if set, else ``$XDG_DATA_HOME/hybrid-orchestrator`` (when that
    is an absolute path, as the XDG spec requires), else
    ``~/.local/share/hybrid-orchestrator``.

    Args:
        environ: the environment to read (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    explicit = env.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP_DIR_NAME
    return Path.home() / ".local" / "share" / APP_DIR_NAME


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ts(dt: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


class SQLiteStore:
    """The embedded ``Store``: one SQLite file, safe to share between threads and processes.

    Args:
        data_dir: the directory holding ``orchestrator.db`` (created if missing); default
            ``default_data_dir()``.
        durability: ``"normal"`` survives process crashes; ``"full"`` also power loss.
        busy_timeout_s: how long to wait for another process's write before giving up.
        now: the clock for ledger times and lease expiry (timezone-aware UTC).
        migrations: the schema's migrations; tests pass their own.

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
        now: Callable[[], datetime] | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        if durability not in ("normal", "full"):
            raise ConfigError(f"store durability must be 'normal' or 'full', not {durability!r}")
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.path = self.data_dir / DB_FILENAME
        self.durability: Durability = durability
        self.host = socket.gethostname()
        self._busy_timeout_s = busy_timeout_s
        self._clock = now or _utc_now
        self._lock = threading.RLock()
        self._encoder = SnapshotEncoder()
        self._conn: sqlite3.Connection | None = None
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the data directory {self.data_dir} ({exc.strerror}); "
                f"set {DATA_DIR_ENV} to a writable directory"
            ) from exc
        self._check_header()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
            )
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
        return f"SQLiteStore({str(self.path)!r}, durability={self.durability!r})"

    # -- opening -------------------------------------------------------------------------

    def _check_header(self) -> None:
        """Refuse, before SQLite touches it, a file that is not a SQLite database."""
        try:
            with self.path.open("rb") as f:
                head = f.read(100)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(
                f"cannot read the store {self.path} ({exc.strerror}); check its permissions "
                f"or set {DATA_DIR_ENV} to another directory"
            ) from exc
        if head and (len(head) < 100 or not head.startswith(_SQLITE_MAGIC)):
            raise StoreCorruptError(
                f"{self.path} is not a SQLite database (it lacks the SQLite header); it was "
                f"left untouched. Move it away, or set {DATA_DIR_ENV} to another directory"
            )

    def _open(self, conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
        """Check the schema version (reading only), then switch to WAL and migrate."""
        conn.execute("PRAGMA foreign_keys = ON")
        target = len(migrations)
        version = self._schema_version(conn)
        if version > target:
            raise self._newer_store(version, target)
        # From here on the file may be written: it is ours and not from the future.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{self.path}: SQLite cannot use WAL mode on this file system (got "
                f"{mode!r}); set {DATA_DIR_ENV} to a directory on a local disk"
            )
        sync = "FULL" if self.durability == "full" else "NORMAL"
        conn.execute(f"PRAGMA synchronous = {sync}")
        if self.durability == "full":
            conn.execute("PRAGMA fullfsync = ON")  # macOS: fsync alone skips the disk cache
        if version < target:
            self._migrate(conn, migrations)

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        """The file's schema version; 0 for a new, empty database."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_meta" not in tables:
            if tables:
                raise StoreCorruptError(
                    f"{self.path} is a SQLite database but not a hybrid-orchestrator store "
                    f"(it has tables {', '.join(sorted(tables)[:5])} and no schema_meta); it "
                    f"was left untouched. Move it away, or set {DATA_DIR_ENV} to another "
                    "directory"
                )
            return 0
        row = conn.execute("SELECT value FROM schema_meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else 0
        except (TypeError, ValueError):
            version = 0
        if version >= 1:
            return version
        raise StoreCorruptError(
            f"{self.path}: the schema_meta table has no valid schema_version "
            f"({row[0] if row else 'missing'!r}); the file was left untouched. Restore it "
            "from a backup"
        )

    def _newer_store(self, version: int, known: int) -> StoreVersionError:
        return StoreVersionError(
            f"{self.path} was written by a newer hybrid-orchestrator (store schema version "
            f"{version}; this one knows up to {known}); nothing was changed. Upgrade "
            "hybrid-orchestrator to open it"
        )

    def _migrate(self, conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
        """Apply the missing migrations in one transaction (another process may race us)."""
        target = len(migrations)
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version(conn)  # again, now that we hold the write lock
            if version > target:
                raise self._newer_store(version, target)
            for number in range(version, target):
                try:
                    migrations[number](conn)
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    raise StoreError(
                        f"{self.path}: migration {number + 1} of the store schema failed "
                        f"({exc}); nothing was changed. Report this as a bug"
                    ) from exc
            conn.execute(
                "INSERT INTO schema_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(target),),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- plumbing ------------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error, doing: str, workflow_id: str | None = None) -> StoreError:
        """Translate a sqlite3 error into ours, saying what to do about it."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        subject = f"workflow {workflow_id}: " if workflow_id else ""
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
            type(exc) is sqlite3.DatabaseError and not code
        ):
            return StoreCorruptError(
                f"{subject}could not {doing}: the database {self.path} is damaged ({exc}); "
                "it was left as it is. Restore it from a backup, or move it away to start "
                "a new store"
            )
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreError(
                f"{subject}could not {doing}: {self.path} stayed locked by another process "
                f"for more than {self._busy_timeout_s:g}s; retry when it is done"
            )
        if code == sqlite3.SQLITE_FULL:
            return StoreError(
                f"{subject}could not {doing}: the disk holding {self.path} is full; free "
                "some space and retry"
            )
        if code in (
            sqlite3.SQLITE_READONLY,
            sqlite3.SQLITE_CANTOPEN,
            sqlite3.SQLITE_PERM,
            sqlite3.SQLITE_IOERR,
        ):
            return StoreError(
                f"{subject}could not {doing}: cannot read or write {self.path} ({exc}); "
                f"check its permissions, or set {DATA_DIR_ENV} to a writable directory"
            )
        return StoreError(f"{subject}could not {doing} in {self.path}: {exc}")

    def _now(self) -> datetime:
        """The clock's time, made timezone-aware (naive times are taken as UTC)."""
        now = self._clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

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

    def _unknown(self, workflow_id: str) -> UnknownWorkflowError:
        return UnknownWorkflowError(
            f"no workflow with id '{workflow_id}' in {self.path}; run `orchestrator list` "
            f"to see the workflows this store holds ({DATA_DIR_ENV} selects another store)"
        )

    def _require(self, conn: sqlite3.Connection, workflow_id: str) -> None:
        if conn.execute("SELECT 1 FROM workflows WHERE id = ?", (workflow_id,)).fetchone() is None:
            raise self._unknown(workflow_id)

    def _corrupt(self, workflow_id: str, what: str, problem: str) -> StoreCorruptError:
        return StoreCorruptError(
            f"workflow {workflow_id}: {what} is damaged: {problem}. The database {self.path} "
            "was left unchanged; restore it from a backup"
        )

    def _time(self, workflow_id: str, what: str, text: object) -> datetime:
        try:
            value = datetime.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            value = None
        if value is None:
            raise self._corrupt(workflow_id, what, f"{text!r} is not an ISO-8601 time")
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    # -- workflows -----------------------------------------------------------------------

    def create(self, state: WorkflowState, config: WorkflowConfig) -> int:
        """Store a new workflow and return its first version (1).

        Raises:
            StoreError: a workflow with this id already exists; nothing is changed.
        """
        wid = state.workflow_id
        now = self._now()
        row = (
            wid,
            1,
            *_summary(state, now),
            _ts(state.created_at or now),
            config.model_dump_json(),
            self._encoder.encode(state),
        )
        with self._writing("create the workflow", wid) as conn:
            if conn.execute("SELECT 1 FROM workflows WHERE id = ?", (wid,)).fetchone():
                raise StoreError(
                    f"workflow {wid} already exists in {self.path}; choose another id, or resume it"
                )
            conn.execute(
                "INSERT INTO workflows (id, version, status, phase, machine_state, "
                "current_step, waiting_gate, updated_at, created_at, config, snapshot) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return 1

    def load(self, workflow_id: str) -> StoredWorkflow:
        """The latest snapshot, configuration and version of a workflow.

        Raises:
            UnknownWorkflowError: no workflow has this id.
            StoreCorruptError: the stored snapshot or configuration fails validation.
            StoreVersionError: the snapshot comes from a newer schema.
        """
        with self._reading("load the workflow", workflow_id) as conn:
            row = conn.execute(
                "SELECT version, config, snapshot FROM workflows WHERE id = ?", (workflow_id,)
            ).fetchone()
        if row is None:
            raise self._unknown(workflow_id)
        version, config_text, snapshot = row
        return StoredWorkflow(
            state=self._decode_state(workflow_id, snapshot),
            config=self._decode_config(workflow_id, config_text),
            version=version,
        )

    def _decode_state(self, workflow_id: str, text: object) -> WorkflowState:
        if not isinstance(text, str | bytes):
            raise self._corrupt(workflow_id, "the stored snapshot", "it is not JSON text")
        try:
            state = WorkflowState.model_validate_json(text)
        except ValidationError as exc:
            newer = _newer_schema_version(text)
            if newer is not None:
                raise StoreVersionError(
                    f"workflow {workflow_id}: its snapshot was written by a newer schema "
                    f"(version {newer}; this program reads version {SCHEMA_VERSION}); nothing "
                    "was changed. Upgrade hybrid-orchestrator to load it"
                ) from exc
            raise self._corrupt(
                workflow_id, "the stored snapshot", describe_validation_error(exc)
            ) from exc
        if state.workflow_id != workflow_id:
            raise self._corrupt(
                workflow_id,
                "the stored snapshot",
                f"it belongs to workflow {state.workflow_id!r}",
            )
        return state

    def _decode_config(self, workflow_id: str, text: object) -> WorkflowConfig:
        if not isinstance(text, str | bytes):
            raise self._corrupt(workflow_id, "the stored configuration", "it is not JSON text")
        try:
            return WorkflowConfig.model_validate_json(text)
        except ValidationError as exc:
            raise self._corrupt(
                workflow_id, "the stored configuration", describe_validation_error(exc)
            ) from exc

    def commit(
        self,
        workflow_id: str,
        state: WorkflowState,
        *,
        expected_version: int,
        entries: Sequence[LedgerEntryIn] = (),
        owner: str | None,
    ) -> int:
        """Replace the snapshot and append ledger entries in one transaction.

        Args:
            workflow_id: the workflow; ``state.workflow_id`` must be the same.
            state: the new snapshot.
            expected_version: the version the caller loaded or last committed.
            entries: appended in order, numbered after the ledger's last entry.
            owner: when given, the commit happens only while this owner holds a live lease.

        Returns:
            The new version.

        Raises:
            UnknownWorkflowError: no workflow has this id.
            ConcurrencyError: the version moved on, or ``owner`` holds no live lease.
            StoreError: the state is another workflow's, or an entry cannot be stored.
        """
        if state.workflow_id != workflow_id:
            raise StoreError(
                f"workflow {workflow_id}: cannot commit the state of workflow "
                f"{state.workflow_id}; nothing was written"
            )
        snapshot = self._encoder.encode(state)
        payloads = [self._encode_entry(workflow_id, entry) for entry in entries]
        now = self._now()
        with self._writing("commit", workflow_id) as conn:
            cur = conn.execute(
                "UPDATE workflows SET version = version + 1, status = ?, phase = ?, "
                "machine_state = ?, current_step = ?, waiting_gate = ?, updated_at = ?, "
                "snapshot = ? WHERE id = ? AND version = ?",
                (*_summary(state, now), snapshot, workflow_id, expected_version),
            )
            if cur.rowcount != 1:
                row = conn.execute(
                    "SELECT version FROM workflows WHERE id = ?", (workflow_id,)
                ).fetchone()
                if row is None:
                    raise self._unknown(workflow_id)
                raise ConcurrencyError(
                    f"workflow {workflow_id} changed since it was loaded (version "
                    f"{expected_version} expected, {row[0]} stored): another process "
                    "committed to it; nothing was written. Load it again and redo the step"
                )
            if owner is not None:
                self._check_holder(conn, workflow_id, owner, now)
            if payloads:
                (last,) = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE workflow_id = ?",
                    (workflow_id,),
                ).fetchone()
                recorded = _ts(now)
                conn.executemany(
                    "INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (workflow_id, last + i, kind, recorded, payload)
                        for i, (kind, payload) in enumerate(payloads, start=1)
                    ],
                )
        return expected_version + 1

    def _encode_entry(self, workflow_id: str, entry: LedgerEntryIn) -> tuple[str, str]:
        """The entry's (kind, payload JSON); refuses what could not be read back."""
        match entry:
            case DecisionEntry(record=record):
                return entry.kind.value, self._encoder.record_json(workflow_id, record)
            case StepResultEntry(record=record):
                if record.status is StepStatus.RUNNING:
                    raise StoreError(
                        f"workflow {workflow_id}: step {int(record.step)} is still running; a "
                        "step_result ledger entry records a completed or failed attempt. "
                        "Nothing was written"
                    )
                return entry.kind.value, self._encoder.record_json(workflow_id, record)
            case HumanAnswerEntry(answer=answer):
                return entry.kind.value, self._encoder.record_json(workflow_id, answer)
            case EventEntry(event=event, data=data):
                if not event or "event" in data:
                    raise StoreError(
                        f"workflow {workflow_id}: an event needs a non-empty name and no 'event' "
                        f"key in its data (got {event!r}); nothing was written"
                    )
                try:
                    text = json.dumps(
                        {"event": event, **data},
                        ensure_ascii=False,
                        allow_nan=False,
                        separators=(",", ":"),
                    )
                except (TypeError, ValueError) as exc:
                    raise StoreError(
                        f"workflow {workflow_id}: event {event!r} cannot be stored as JSON "
                        f"({exc}); give it strings, numbers, booleans, None, lists and dicts. "
                        "Nothing was written"
                    ) from exc
                return entry.kind.value, text
            case _:
                assert_never(entry)

    def _check_holder(
        self, conn: sqlite3.Connection, workflow_id: str, owner: str, now: datetime
    ) -> None:
        lease = self._lease_row(conn, workflow_id)
        if lease is None or lease.owner != owner:
            held = f"; it is held by {lease.describe()}" if lease else ""
            raise ConcurrencyError(
                f"workflow {workflow_id}: {owner} holds no lease on it{held}; nothing was "
                "written. Acquire the lease (or stop: another worker runs it) before committing"
            )
        if not lease.is_live(now):
            raise ConcurrencyError(
                f"workflow {workflow_id}: the lease of {owner} expired at "
                f"{_ts(lease.expires_at)}; nothing was written. Renew it more often than its "
                "time-to-live, then load the workflow again"
            )

    def list_workflows(self, status: WorkflowStatus | None = None) -> list[WorkflowSummary]:
        """Every workflow (or those with ``status``), the most recently updated first."""
        sql = (
            "SELECT id, status, phase, machine_state, current_step, waiting_gate, version, "
            "created_at, updated_at FROM workflows"
        )
        params: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (WorkflowStatus(status).value,)
        sql += " ORDER BY updated_at DESC, id"
        with self._reading("list the workflows") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [self._summary_of(row) for row in rows]

    def _summary_of(self, row: tuple[Any, ...]) -> WorkflowSummary:
        wid, status, phase, machine_state, step, gate, version, created, updated = row
        try:
            return WorkflowSummary(
                workflow_id=wid,
                status=WorkflowStatus(status),
                phase=int(phase),
                machine_state=MachineState(machine_state),
                current_step=Step(step) if step is not None else None,
                waiting_gate=Gate(gate) if gate is not None else None,
                version=int(version),
                created_at=self._time(wid, "the created_at column", created),
                updated_at=self._time(wid, "the updated_at column", updated),
            )
        except (TypeError, ValueError) as exc:
            raise self._corrupt(wid, "its summary row", str(exc)) from exc

    # -- ledger --------------------------------------------------------------------------

    def ledger(
        self,
        workflow_id: str,
        *,
        after_seq: int = 0,
        kinds: Collection[LedgerKind] | None = None,
    ) -> list[LedgerEntry]:
        """The workflow's ledger entries with ``seq > after_seq``, in order, validated.

        Raises:
            UnknownWorkflowError: no workflow has this id.
            StoreCorruptError: an entry fails validation (naming its seq and the problem).
        """
        sql = "SELECT seq, kind, recorded_at, payload FROM ledger WHERE workflow_id = ? AND seq > ?"
        params: list[object] = [workflow_id, after_seq]
        if kinds is not None:
            wanted = sorted({LedgerKind(k).value for k in kinds})
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
            params += wanted
        sql += " ORDER BY seq"
        with self._reading("read the ledger", workflow_id) as conn:
            rows = conn.execute(sql, params).fetchall()
            if not rows:
                self._require(conn, workflow_id)
        return [self._decode_entry(workflow_id, *row) for row in rows]

    def _decode_entry(
        self, workflow_id: str, seq: int, kind: object, recorded_at: object, payload: object
    ) -> LedgerEntry:
        what = f"ledger entry seq {seq} ({kind})"
        try:
            content = _decode_content(LedgerKind(str(kind)), payload)
        except ValidationError as exc:
            raise self._corrupt(workflow_id, what, describe_validation_error(exc)) from exc
        except (TypeError, ValueError) as exc:
            raise self._corrupt(workflow_id, what, str(exc)) from exc
        return LedgerEntry(
            workflow_id=workflow_id,
            seq=seq,
            recorded_at=self._time(workflow_id, what, recorded_at),
            content=content,
        )

    # -- leases --------------------------------------------------------------------------

    def acquire_lease(
        self,
        workflow_id: str,
        owner: str,
        ttl_s: float,
        *,
        host: str | None = None,
        pid: int | None = None,
    ) -> Lease:
        """Claim the workflow for ``owner`` for ``ttl_s`` seconds (see ``Store``).

        Raises:
            UnknownWorkflowError: no workflow has this id.
            ConcurrencyError: another owner holds a live lease, naming it.
        """
        now = self._now()
        lease = Lease(
            workflow_id=workflow_id,
            owner=owner,
            host=host if host is not None else self.host,
            pid=pid if pid is not None else os.getpid(),
            expires_at=now + _ttl(workflow_id, ttl_s),
        )
        with self._writing("acquire the lease", workflow_id) as conn:
            self._require(conn, workflow_id)
            current = self._lease_row(conn, workflow_id)
            if (
                current is not None
                and current.owner != owner
                and not lease_is_stale(current, now=now, host=self.host)
            ):
                raise ConcurrencyError(
                    f"workflow {workflow_id} is being run by {current.describe()}; wait for "
                    "it to finish or for its lease to expire, or stop that process and "
                    "resume the workflow again"
                )
            conn.execute(
                "INSERT INTO leases (workflow_id, owner, host, pid, expires_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO UPDATE SET "
                "owner = excluded.owner, host = excluded.host, pid = excluded.pid, "
                "expires_at = excluded.expires_at",
                (workflow_id, lease.owner, lease.host, lease.pid, _ts(lease.expires_at)),
            )
        return lease

    def renew_lease(self, workflow_id: str, owner: str, ttl_s: float) -> Lease:
        """Extend ``owner``'s lease to ``ttl_s`` seconds from now.

        Raises:
            UnknownWorkflowError: no workflow has this id.
            ConcurrencyError: ``owner`` does not hold the lease (any more).
        """
        now = self._now()
        expires = now + _ttl(workflow_id, ttl_s)
        with self._writing("renew the lease", workflow_id) as conn:
            current = self._lease_row(conn, workflow_id)
            if current is None:
                self._require(conn, workflow_id)
            if current is None or current.owner != owner:
                held = f"it is held by {current.describe()}" if current else "nobody holds it"
                raise ConcurrencyError(
                    f"workflow {workflow_id}: {owner} no longer holds its lease ({held}); "
                    "stop working on it, then load it again and acquire the lease"
                )
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE workflow_id = ?",
                (_ts(expires), workflow_id),
            )
        return Lease(workflow_id, owner, current.host, current.pid, expires)

    def release_lease(self, workflow_id: str, owner: str) -> bool:
        """Give up ``owner``'s lease; whether there was one to give up."""
        with self._writing("release the lease", workflow_id) as conn:
            cur = conn.execute(
                "DELETE FROM leases WHERE workflow_id = ? AND owner = ?", (workflow_id, owner)
            )
            return cur.rowcount > 0

    def lease(self, workflow_id: str) -> Lease | None:
        """The workflow's lease, live or expired, or None.

        Raises:
            UnknownWorkflowError: no workflow has this id.
        """
        with self._reading("read the lease", workflow_id) as conn:
            current = self._lease_row(conn, workflow_id)
            if current is None:
                self._require(conn, workflow_id)
            return current

    def _lease_row(self, conn: sqlite3.Connection, workflow_id: str) -> Lease | None:
        row = conn.execute(
            "SELECT owner, host, pid, expires_at FROM leases WHERE workflow_id = ?",
            (workflow_id,),
        ).fetchone()
        if row is None:
            return None
        owner, host, pid, expires = row
        if not isinstance(pid, int):
            raise self._corrupt(workflow_id, "its lease", f"pid {pid!r} is not an integer")
        return Lease(
            workflow_id, str(owner), str(host), pid, self._time(workflow_id, "its lease", expires)
        )

    # -- artifacts -----------------------------------------------------------------------

    def add_artifact(self, workflow_id: str, kind: str, path: str) -> Artifact:
        """Record a file the workflow produced; recording a path again updates its time.

        Raises:
            UnknownWorkflowError: no workflow has this id.
        """
        now = self._now()
        with self._writing("record the artifact", workflow_id) as conn:
            self._require(conn, workflow_id)
            conn.execute(
                "INSERT INTO artifacts (workflow_id, kind, path, recorded_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (workflow_id, kind, path) "
                "DO UPDATE SET recorded_at = excluded.recorded_at",
                (workflow_id, kind, path, _ts(now)),
            )
        return Artifact(workflow_id, kind, path, now)

    def artifacts(self, workflow_id: str) -> list[Artifact]:
        """The workflow's artifacts, in the order they were first recorded.

        Raises:
            UnknownWorkflowError: no workflow has this id.
        """
        with self._reading("list the artifacts", workflow_id) as conn:
            rows = conn.execute(
                "SELECT kind, path, recorded_at FROM artifacts WHERE workflow_id = ? "
                "ORDER BY rowid",
                (workflow_id,),
            ).fetchall()
            if not rows:
                self._require(conn, workflow_id)
        return [
            Artifact(workflow_id, kind, path, self._time(workflow_id, f"artifact {path}", at))
            for kind, path, at in rows
        ]

    # -- lifetime ------------------------------------------------------------------------

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

    def __enter__(self) -> Self:
        """The store itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()


def _summary(state: WorkflowState, now: datetime) -> tuple[object, ...]:
    """The listing columns, in table order: status .. updated_at."""
    gate = state.waiting_gate
    return (
        state.status.value,
        state.phase,
        state.machine_state.value,
        int(state.current_step) if state.current_step is not None else None,
        gate.value if gate is not None else None,
        _ts(state.updated_at or now),
    )


def _ttl(workflow_id: str, ttl_s: float) -> timedelta:
    if not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise StoreError(
            f"workflow {workflow_id}: a lease needs a positive, finite time-to-live, not "
            f"{ttl_s!r} seconds"
        )
    return timedelta(seconds=ttl_s)


def _decode_content(kind: LedgerKind, payload: object) -> LedgerEntryIn:
    """Validate one stored payload.

    Raises:
        pydantic.ValidationError, TypeError or ValueError: naming the problem.
    """
    if not isinstance(payload, str | bytes):
        raise TypeError("its payload is not JSON text")
    match kind:
        case LedgerKind.DECISION:
            return DecisionEntry(DecisionRecord.model_validate_json(payload))
        case LedgerKind.STEP_RESULT:
            record = StepRecord.model_validate_json(payload)
            if record.status is StepStatus.RUNNING:
                raise ValueError("it records a step that is still running")
            return StepResultEntry(record)
        case LedgerKind.HUMAN_ANSWER:
            return HumanAnswerEntry(HumanAnswer.model_validate_json(payload))
        case LedgerKind.EVENT:
            try:
                data = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise ValueError(f"its payload is not valid JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise ValueError(f"its payload is a JSON {type(data).__name__}, not an object")
            event = data.pop("event", None)
            if not isinstance(event, str) or not event:
                raise ValueError("its payload has no 'event' name")
            return EventEntry(event, data)
        case _:
            assert_never(kind)


def _newer_schema_version(text: str | bytes) -> int | None:
    """The snapshot's schema_version when it is newer than this program's, else None."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return version
    return None


if TYPE_CHECKING:

    def _conforms(store: SQLiteStore) -> Store:
        """mypy checks here that SQLiteStore implements the Store protocol."""
        return store
