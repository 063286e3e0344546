"""What is particular to the PostgreSQL store, beyond the contract every backend keeps.

Run against the session's own PostgreSQL server (conftest), a new database per test; they
skip, saying why, where no server can be started. Each pins migrations, error translation
or what several processes or a dropped connection do, none of which the SQLite or memory
store has in this form.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from orchestrator import composition
from orchestrator.running.updates import new_workflow
from state.config import WorkflowConfig
from state.errors import ConfigError, StoreCorruptError, StoreError, StoreVersionError
from state.postgres_store.schema import MIGRATIONS, STORE_SCHEMA_VERSION
from state.postgres_store.store import PostgresStore
from state.store import Commit, EventEntry

from support.postgres import BIN_ENV, PostgresServer

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _filled(url: str) -> None:
    with composition.open_store(url) as store:
        for wid in ("wf-1", "wf-2"):
            store.create(new_workflow(wid, "requirements", "/ws", T0), WorkflowConfig())


def _sql(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


def test_a_postgresql_url_opens_a_postgres_store(postgres_url: str) -> None:
    """open_store picks the PostgreSQL backend for postgresql:// and postgres:// URLs."""
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        with composition.open_store(url) as store:
            assert isinstance(store, PostgresStore)
            assert store.blocking


def test_orchestrator_store_is_the_default_unless_a_data_dir_is_set(
    postgres_url: str, tmp_path: Path
) -> None:
    """With no argument, ORCHESTRATOR_STORE names the store; ORCHESTRATOR_DATA_DIR wins over it."""
    env = {"ORCHESTRATOR_STORE": postgres_url}
    with composition.open_store(environ=env) as store:
        assert isinstance(store, PostgresStore)
    env["ORCHESTRATOR_DATA_DIR"] = str(tmp_path)
    with composition.open_store(environ=env) as store:
        assert not isinstance(store, PostgresStore)
    with pytest.raises(ConfigError, match="postgresql://"):
        composition.open_store(environ={"ORCHESTRATOR_STORE": "mysql://x/y"})


def test_a_newer_store_schema_is_refused_untouched(postgres_url: str) -> None:
    """A database from a newer store schema raises StoreVersionError naming both versions."""
    _filled(postgres_url)
    _sql(postgres_url, "UPDATE schema_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(
        StoreVersionError,
        match=rf"schema version 99; this one knows up to {STORE_SCHEMA_VERSION}.*Upgrade",
    ):
        PostgresStore(postgres_url)
    assert _sql(postgres_url, "SELECT count(*) FROM workflows") == [(2,)]


def test_an_unreadable_schema_version_is_refused(postgres_url: str) -> None:
    """A schema_meta without a valid version raises StoreCorruptError."""
    _filled(postgres_url)
    _sql(postgres_url, "UPDATE schema_meta SET value = 'one' WHERE key = 'schema_version'")
    with pytest.raises(StoreCorruptError, match="no valid schema_version"):
        PostgresStore(postgres_url)


def test_tables_like_ours_without_a_schema_are_refused(postgres_url: str) -> None:
    """A database that has a workflows table of its own is not taken over."""
    _sql(postgres_url, "CREATE TABLE workflows (name TEXT)")
    with pytest.raises(StoreCorruptError, match="no schema_meta; it was left untouched"):
        PostgresStore(postgres_url)
    assert _sql(postgres_url, "SELECT to_regclass('schema_meta') IS NULL") == [(True,)]


def test_new_migrations_run_once_even_when_many_open_at_once(postgres_url: str) -> None:
    """Eight handles opening together apply a new migration once (the advisory lock)."""
    PostgresStore(postgres_url).close()
    runs: list[int] = []

    def add_notes(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
        runs.append(1)
        cur.execute("CREATE TABLE notes (workflow_id TEXT, text TEXT)")

    errors: list[BaseException] = []

    def open_once() -> None:
        try:
            PostgresStore(postgres_url, migrations=(*MIGRATIONS, add_notes)).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_once) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert runs == [1]
    version = _sql(postgres_url, "SELECT value FROM schema_meta WHERE key = 'schema_version'")
    assert version == [(str(STORE_SCHEMA_VERSION + 1),)]


def test_a_failed_migration_changes_nothing(postgres_url: str) -> None:
    """A migration that fails rolls back every migration of that open."""
    _filled(postgres_url)

    def adds_a_table(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
        cur.execute("CREATE TABLE notes (text TEXT)")

    def breaks(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
        raise RuntimeError("boom")

    failing = len(MIGRATIONS) + 2  # the second migration added here
    with pytest.raises(StoreError, match=rf"migration {failing} .*failed \(boom\); nothing was"):
        PostgresStore(postgres_url, migrations=(*MIGRATIONS, adds_a_table, breaks))
    assert _sql(postgres_url, "SELECT to_regclass('notes') IS NULL") == [(True,)]
    with PostgresStore(postgres_url) as store:
        assert store.load("wf-1").version == 1


def test_a_damaged_snapshot_is_reported_and_then_writes_are_refused(postgres_url: str) -> None:
    """A row that fails validation raises StoreCorruptError; that handle then writes nothing."""
    _filled(postgres_url)
    _sql(postgres_url, "UPDATE workflows SET snapshot = '{\"schema_version\": 1' WHERE id = 'wf-1'")
    with PostgresStore(postgres_url) as store:
        with pytest.raises(StoreCorruptError, match=r"workflow wf-1: the stored snapshot"):
            store.load("wf-1")
        assert store.load("wf-2").version == 1  # reading goes on
        with pytest.raises(StoreCorruptError, match="found damaged"):
            store.create(new_workflow("wf-3", "r", "/ws", T0), WorkflowConfig())


def test_connections_the_server_dropped_are_replaced(postgres_url: str) -> None:
    """After the server ends every session of the store, the next call works on a new one."""
    _filled(postgres_url)
    with PostgresStore(postgres_url) as store:
        assert store.load("wf-1").version == 1
        killed = _sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert killed and all(row == (True,) for row in killed)
        assert store.load("wf-1").version == 1


def test_a_server_that_went_away_is_a_store_error_saying_what_to_do(tmp_path: Path) -> None:
    """Stopping the server under an open store makes calls raise StoreError, not psycopg's."""
    server = PostgresServer()
    try:
        server.start()
        url = server.new_database()
        store = PostgresStore(url, connect_timeout_s=2)
        _filled(url)
        server.stop()
        with pytest.raises(StoreError, match=r"could not load the workflow: .*server runs"):
            store.load("wf-1")
        store.close()
    finally:
        server.stop()
    with pytest.raises(
        StoreError,
        match=r"cannot connect to the PostgreSQL database x on .*: .*No such file.*server runs",
    ):
        PostgresStore(f"postgresql://postgres@/x?host={tmp_path}")


_WORKER = """
import sys
from orchestrator.composition import open_store
from state.errors import ConcurrencyError
from state.store import EventEntry
with open_store(sys.argv[1]) as store:
    done = 0
    while done < int(sys.argv[2]):
        loaded = store.load("wf-1")
        try:
            store.commit("wf-1", loaded.state, expected_version=loaded.version,
                         entries=[EventEntry("tick", {"pid": sys.argv[3]})], owner=None)
        except ConcurrencyError:
            continue
        done += 1
"""


def test_processes_commit_concurrently_without_losing_a_seq(postgres_url: str) -> None:
    """Three processes committing to one workflow all finish, leaving seq 1..n, no gap."""
    _filled(postgres_url)
    n, procs = 40, 3
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, postgres_url, str(n), str(i)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    with composition.open_store(postgres_url) as store:
        assert [e.seq for e in store.ledger("wf-1")] == list(range(1, n * procs + 1))
        assert store.load("wf-1").version == 1 + n * procs
        pids = {getattr(e.content, "data", {}).get("pid") for e in store.ledger("wf-1")}
        assert pids == {"0", "1", "2"}


def _tier_without_postgres(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    """One PostgreSQL case run by a pytest that finds no initdb/pg_ctl, with ``CI=ci``."""
    env = {**os.environ, BIN_ENV: str(tmp_path), "PYTHONPATH": str(REPO), "CI": ci}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/test_postgres_store.py",
            "-k",
            "a_postgresql_url_opens",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_tier_skips_with_a_one_line_reason_where_postgresql_is_missing(
    tmp_path: Path,
) -> None:
    """Without initdb/pg_ctl the PostgreSQL cases skip, saying why; the run still passes."""
    done = _tier_without_postgres(tmp_path, ci="")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    reasons = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(reasons) == 1
    assert "PostgreSQL tier skipped: PostgreSQL is not installed" in reasons[0]


def test_in_ci_a_missing_postgresql_fails_the_tier(tmp_path: Path) -> None:
    """With ``CI`` set the same absence is an error: scripts/install must have provided it."""
    done = _tier_without_postgres(tmp_path, ci="true")
    assert done.returncode != 0, done.stdout + done.stderr
    assert "1 error" in done.stdout
    assert "in CI scripts/install must provide it" in done.stdout


def test_a_database_error_in_a_pipelined_batch_falls_back_to_one_by_one(
    postgres_url: str,
) -> None:
    """A commit whose INSERT breaks a key fails alone; the batch's others still commit."""
    with composition.open_store(postgres_url) as store:
        states = [new_workflow(f"wf-{i}", "r", "/ws", T0) for i in range(3)]
        for s in states:
            store.create(s, WorkflowConfig())
        _sql(  # the seq wf-1's next entry would take: its INSERT fails inside the pipeline
            postgres_url,
            "INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload) "
            "SELECT 'wf-1', ledger_seq + 1, 'event', '2026-03-01T12:00:00+00:00', '{}' "
            "FROM workflows WHERE id = 'wf-1'",
        )
        outcomes = store.commit_many(
            [Commit(s.workflow_id, s, 1, (EventEntry("x"),)) for s in states]
        )
        assert outcomes[0] == outcomes[2] == 2
        assert isinstance(outcomes[1], StoreError)
        assert store.load("wf-1").version == 1
        assert store.load("wf-0").version == store.load("wf-2").version == 2
