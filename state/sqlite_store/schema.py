"""The store's tables, their migrations, and the checks made before a file is written.

``MIGRATIONS[n]`` brings the schema from version n to n+1 with ``conn.execute`` only; all
missing ones run on open in one transaction, so a failed migration changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from state.errors import StoreCorruptError, StoreVersionError
from state.sql_core import apply_migrations, schema_2, schema_3, schema_4, schema_5
from state.sqlite_store.connection import DATA_DIR_ENV, Tx

Migration = Callable[[sqlite3.Connection], None]
"""Brings the schema from version N to N+1 with ``conn.execute`` only (no commit)."""


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


def _migration_2(conn: sqlite3.Connection) -> None:
    """Commits of constant cost: the snapshot's lists become rows (see ``state.sql_core``)."""
    schema_2(Tx(conn), big_integer="INTEGER")


def _migration_3(conn: sqlite3.Connection) -> None:
    """The work queue and the workers' heartbeats (``state.queue``)."""
    schema_3(Tx(conn), big_integer="INTEGER", real="REAL")


def _migration_4(conn: sqlite3.Connection) -> None:
    """Record rows point at the ledger entries that hold their text (``sql_core.schema_4``)."""
    schema_4(Tx(conn), rebuild=True)


def _migration_5(conn: sqlite3.Connection) -> None:
    """Leases say what their holder is doing (``sql_core.schema_5``)."""
    schema_5(Tx(conn))


MIGRATIONS: tuple[Migration, ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
)
"""``MIGRATIONS[n]`` brings the schema from version n to n+1; never edit a released one."""

STORE_SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; 0 for a new, empty database.

    Raises:
        StoreCorruptError: a foreign database, or no valid version recorded.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "schema_meta" not in tables:
        if tables:
            raise StoreCorruptError(
                f"{path} is a SQLite database but not a hybrid-orchestrator store "
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
        f"{path}: the schema_meta table has no valid schema_version "
        f"({row[0] if row else 'missing'!r}); the file was left untouched. Restore it "
        "from a backup"
    )


def newer_store(path: Path, version: int, known: int) -> StoreVersionError:
    """The error for a file written by a newer schema than ``known``."""
    return StoreVersionError(
        f"{path} was written by a newer hybrid-orchestrator (store schema version "
        f"{version}; this one knows up to {known}); nothing was changed. Upgrade "
        "hybrid-orchestrator to open it"
    )


def check_readable(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> int:
    """The file's schema version, refused when it is newer than ``migrations`` know.

    Raises:
        StoreVersionError: the file comes from a newer schema.
        StoreCorruptError: see ``schema_version``.
    """
    version = schema_version(conn, path)
    if version > len(migrations):
        raise newer_store(path, version, len(migrations))
    return version


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> None:
    """Apply the missing migrations in one transaction (another process may race us).

    Raises:
        StoreError: a migration failed; nothing was changed.
        sqlite3.Error: SQLite failed (the caller translates it).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = check_readable(conn, path, migrations)  # again, now that we hold the lock
        apply_migrations(
            Tx(conn), conn, version, migrations, where=str(path), passthrough=sqlite3.Error
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
