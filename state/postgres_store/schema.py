"""The store's tables in PostgreSQL, their migrations, and the check made before writing.

``MIGRATIONS[n]`` brings the schema from version n to n+1 with ``cur.execute`` only; all
missing ones run on open in one transaction, under an advisory lock so that workers
opening the database at once migrate it once, and a failed migration changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg

from state.errors import StoreCorruptError, StoreVersionError
from state.postgres_store.connection import Tx
from state.sql_core import apply_migrations, schema_2, schema_3, schema_4, schema_5

Migration = Callable[[psycopg.Cursor[tuple[object, ...]]], None]
"""Brings the schema from version N to N+1 with ``cur.execute`` only (no commit)."""

# Any fixed number: the key of the advisory lock that serializes migrations of one database.
_MIGRATION_LOCK = 0x6F726368  # "orch"

OUR_TABLES = (
    "schema_meta",
    "workflows",
    "ledger",
    "artifacts",
    "leases",
    "records",
    "work_queue",
    "workers",
)


def _migration_1(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    """The first schema: workflows, ledger, artifacts, leases (as in the SQLite store)."""
    cur.execute("CREATE TABLE schema_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # Times are the fixed-width UTC text of state.codec, so text order is time order and
    # both backends read them back through the same validation.
    cur.execute(
        """CREATE TABLE workflows (
            id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
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
    cur.execute("CREATE INDEX workflows_by_status ON workflows (status, updated_at)")
    cur.execute(
        """CREATE TABLE ledger (
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            seq BIGINT NOT NULL,
            kind TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (workflow_id, seq)
        )"""
    )
    # ord keeps the first-recorded order across updates, as SQLite's rowid does.
    cur.execute(
        """CREATE TABLE artifacts (
            ord BIGINT GENERATED ALWAYS AS IDENTITY,
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            PRIMARY KEY (workflow_id, kind, path)
        )"""
    )
    cur.execute(
        """CREATE TABLE leases (
            workflow_id TEXT PRIMARY KEY REFERENCES workflows (id),
            owner TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at TEXT NOT NULL
        )"""
    )


def _migration_2(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    """Commits of constant cost: the snapshot's lists become rows (see ``state.sql_core``)."""
    schema_2(Tx(cur), big_integer="BIGINT")


def _migration_3(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    """The work queue and the workers' heartbeats (``state.queue``)."""
    schema_3(Tx(cur), big_integer="BIGINT", real="DOUBLE PRECISION")


def _migration_4(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    """Record rows point at the ledger entries that hold their text (``sql_core.schema_4``)."""
    schema_4(Tx(cur), rebuild=False)


def _migration_5(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    """Leases say what their holder is doing (``sql_core.schema_5``)."""
    schema_5(Tx(cur))


MIGRATIONS: tuple[Migration, ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
)
"""``MIGRATIONS[n]`` brings the schema from version n to n+1; never edit a released one."""

STORE_SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(cur: psycopg.Cursor[tuple[object, ...]], where: str) -> int:
    """The database's store schema version; 0 when it holds none of our tables.

    Raises:
        StoreCorruptError: some of our tables exist but no valid version is recorded.
    """
    cur.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        (list(OUR_TABLES),),
    )
    tables = {str(r[0]) for r in cur.fetchall()}
    if "schema_meta" not in tables:
        if tables:
            raise StoreCorruptError(
                f"the {where} has tables named like a hybrid-orchestrator store "
                f"({', '.join(sorted(tables))}) but no schema_meta; it was left untouched. "
                "Use another database (or schema) for the store"
            )
        return 0
    cur.execute("SELECT value FROM schema_meta WHERE key = 'schema_version'")
    row = cur.fetchone()
    try:
        version = int(str(row[0])) if row is not None else 0
    except ValueError:
        version = 0
    if version >= 1:
        return version
    raise StoreCorruptError(
        f"the {where}: the schema_meta table has no valid schema_version "
        f"({row[0] if row else 'missing'!r}); it was left untouched. Restore it from a backup"
    )


def newer_store(where: str, version: int, known: int) -> StoreVersionError:
    """The error for a database written by a newer schema than ``known``."""
    return StoreVersionError(
        f"the {where} was written by a newer hybrid-orchestrator (store schema version "
        f"{version}; this one knows up to {known}); nothing was changed. Upgrade "
        "hybrid-orchestrator to open it"
    )


def migrate(
    conn: psycopg.Connection[tuple[object, ...]], where: str, migrations: Sequence[Migration]
) -> None:
    """Check the version and apply the missing migrations, in one transaction.

    Raises:
        StoreVersionError: the database comes from a newer schema; nothing was changed.
        StoreCorruptError: see ``schema_version``.
        StoreError: a migration failed; nothing was changed.
        psycopg.Error: the server failed (the caller translates it).
    """
    target = len(migrations)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        version = schema_version(cur, where)
        if version > target:
            raise newer_store(where, version, target)
        if version == target:
            return
        apply_migrations(
            Tx(cur), cur, version, migrations, where=f"the {where}", passthrough=psycopg.Error
        )
