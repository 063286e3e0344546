"""Store schema 2 on both SQL backends: a store written by schema 1 converts on open.

Schema 1 kept each workflow's whole state in one snapshot column, rewritten by every
commit; schema 2 (``state.sql_core``) keeps the state's head there and its records in rows.
Each test makes the schema-1 layout by opening a store with only the first migration and
writing its rows as schema 1 wrote them (the whole snapshot as JSON, the ledger), then opens
it with every migration, on SQLite in a temporary directory and on the session's
PostgreSQL server (skipped, saying why, without one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from orchestrator.running.updates import new_workflow
from state.codec import encode_entry, summary_values, ts
from state.config import WorkflowConfig
from state.errors import StoreCorruptError
from state.postgres_store import schema as postgres_schema
from state.postgres_store.store import PostgresStore
from state.sqlite_store import DB_FILENAME, SQLiteStore
from state.sqlite_store import schema as sqlite_schema
from state.store import LedgerEntryIn, Store
from state.workflow import WorkflowState

from support.histories import T0, long_history


@dataclass
class Backend:
    """How to open a store at a given schema, and to write rows behind its back."""

    open: Callable[[int | None], Store]
    write: Callable[[str, Sequence[object]], None]


def _sqlite(tmp_path: Path) -> Backend:
    def write(sql: str, params: Sequence[object]) -> None:
        with closing(sqlite3.connect(tmp_path / DB_FILENAME)) as conn:
            conn.execute(sql, params)
            conn.commit()

    def open_at(upto: int | None) -> Store:
        return SQLiteStore(tmp_path, migrations=sqlite_schema.MIGRATIONS[:upto])

    return Backend(open_at, write)


def _postgres(url: str) -> Backend:
    def write(sql: str, params: Sequence[object]) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), params)

    def open_at(upto: int | None) -> Store:
        return PostgresStore(url, migrations=postgres_schema.MIGRATIONS[:upto])

    return Backend(open_at, write)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield _sqlite(tmp_path)
    else:
        yield _postgres(request.getfixturevalue("postgres_url"))


def _write_v1(
    backend: Backend,
    state: WorkflowState,
    version: int,
    commits: Sequence[Sequence[LedgerEntryIn]],
    snapshot: str | None = None,
) -> None:
    """One workflow's rows as schema 1 wrote them: the whole state in ``snapshot``."""
    wid = state.workflow_id
    backend.write(
        "INSERT INTO workflows (id, version, status, phase, machine_state, current_step, "
        "waiting_gate, updated_at, created_at, config, snapshot) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            wid,
            version,
            *summary_values(state, T0),
            ts(T0),
            WorkflowConfig().model_dump_json(),
            state.model_dump_json() if snapshot is None else snapshot,
        ),
    )
    seq = 0
    for entries in commits:
        for entry in entries:
            seq += 1
            kind, payload = encode_entry(lambda r: r.model_dump_json(), wid, entry)
            backend.write(
                "INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                (wid, seq, kind, ts(T0), payload),
            )


def test_a_schema_1_store_converts_and_keeps_every_workflow(backend: Backend) -> None:
    """After migration 2 the states load equal, the ledger is whole, and commits go on."""
    backend.open(1).close()  # the schema-1 tables, empty
    history = long_history("wf-1", 60)
    done, more = history[:40], history[40:]
    state = done[-1][0]
    _write_v1(backend, state, 1 + len(done), [entries for _, entries in done])
    fresh = new_workflow("wf-3", "requirements", "/ws", T0)
    _write_v1(backend, fresh, 1, [])
    with backend.open(None) as store:
        loaded = store.load("wf-1")
        assert (loaded.state, loaded.version) == (state, 41)
        assert store.load("wf-3").state == fresh
        assert [e.seq for e in store.ledger("wf-1")] == list(range(1, 41))
        version = loaded.version
        for next_state, entries in more:
            version = store.commit(
                "wf-1", next_state, expected_version=version, entries=entries, owner=None
            )
    with backend.open(None) as store:
        assert store.load("wf-1").state == more[-1][0]
        assert [e.seq for e in store.ledger("wf-1")] == list(range(1, 61))
        assert {s.workflow_id for s in store.list_workflows()} == {"wf-1", "wf-3"}


def test_a_damaged_schema_1_snapshot_is_still_named_after_converting(backend: Backend) -> None:
    """Migration 2 leaves a snapshot it cannot read as it was; loading it names the damage."""
    backend.open(1).close()
    healthy = new_workflow("wf-1", "requirements", "/ws", T0)
    _write_v1(backend, healthy, 1, [])
    _write_v1(backend, new_workflow("wf-2", "r", "/ws", T0), 1, [], snapshot="garbage")
    with backend.open(None) as store:
        assert store.load("wf-1").state == healthy
        with pytest.raises(
            StoreCorruptError, match=r"workflow wf-2: the stored snapshot is damaged: .*JSON"
        ):
            store.load("wf-2")


def test_schema_4_stores_a_record_its_ledger_entry_mirrors_once(tmp_path: Path) -> None:
    """A record the commit's ledger entry mirrors keeps only the entry's seq; it loads equal."""
    history = long_history("wf-1", 12)
    with SQLiteStore(tmp_path) as store:
        version = store.create(history[0][0], WorkflowConfig())
        for state, entries in history[1:]:
            version = store.commit(
                "wf-1", state, expected_version=version, entries=entries, owner=None
            )
    with closing(sqlite3.connect(tmp_path / DB_FILENAME)) as conn:
        (pointers,) = conn.execute(
            "SELECT COUNT(seq) FROM records WHERE workflow_id = 'wf-1'"
        ).fetchone()
        (mirrored,) = conn.execute(
            "SELECT COUNT(*) FROM records r JOIN ledger l ON l.workflow_id = r.workflow_id "
            "AND l.seq = r.seq WHERE r.payload IS NULL"
        ).fetchone()
    assert pointers > 0 and mirrored == pointers  # every pointer finds its entry
    with SQLiteStore(tmp_path) as store:
        assert store.load("wf-1").state == history[-1][0]
