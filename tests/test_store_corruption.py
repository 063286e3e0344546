"""Damaged, foreign and future store files: a clear error, and the file left byte for byte.

Each test damages a real store file (bytes overwritten, or bad rows written with sqlite3
directly), then checks that ``SQLiteStore`` names the problem and what to do, and that the
file is exactly as it was afterwards: the store never repairs or overwrites what it cannot
read.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.running.updates import complete_step, new_workflow
from state.clock import FixedClock
from state.config import WorkflowConfig
from state.errors import StoreCorruptError, StoreError, StoreVersionError
from state.reports import PlanDraft
from state.sqlite_store import DB_FILENAME, MIGRATIONS, STORE_SCHEMA_VERSION, SQLiteStore
from state.store import DecisionEntry, EventEntry, LedgerEntryIn, StepResultEntry

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A store holding wf-1 (two decisions, a step result, an event) and an empty wf-2."""
    engine = DecisionPipeline(WorkflowMachine(), FixedClock(T0))
    config = WorkflowConfig()
    state = new_workflow("wf-1", "create a data preprocessing step", "/ws", T0)
    with SQLiteStore(tmp_path) as store:
        version = store.create(state, config)
        store.create(new_workflow("wf-2", "r", "/ws", T0), config)
        state, record = engine.decide_by_rule(state, config)
        commits: list[list[LedgerEntryIn]] = [[DecisionEntry(record)]]
        states = [state]
        state = complete_step(state, PlanDraft(version=1, markdown="# Plan"), T0)
        commits.append([StepResultEntry(state.history[-1]), EventEntry("checkpoint")])
        states.append(state)
        state, record = engine.decide_by_rule(state, config)
        commits.append([DecisionEntry(record)])
        states.append(state)
        for st, entries in zip(states, commits, strict=True):
            version = store.commit(
                "wf-1", st, expected_version=version, entries=entries, owner=None
            )
        store.acquire_lease("wf-1", "w1", 60)
    return tmp_path


def _db(data_dir: Path) -> Path:
    return data_dir / DB_FILENAME


def _tamper(data_dir: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Write to the store file behind the store's back (and checkpoint, by closing)."""
    with closing(sqlite3.connect(_db(data_dir))) as conn:
        conn.execute(sql, params)
        conn.commit()


@contextmanager
def _left_unchanged(data_dir: Path) -> Iterator[None]:
    """Assert the database file has the same bytes after the block, and no WAL is left."""
    db = _db(data_dir)
    before = db.read_bytes()
    yield
    assert db.read_bytes() == before
    assert not db.with_name(DB_FILENAME + "-wal").exists()


# -- files SQLite cannot read --------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"wf-1,running\nwf-2,done\n", b"SQLite format 3\x00 but too short", bytes(range(256)) * 16],
    ids=["csv", "short", "binary"],
)
def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    """A non-SQLite file raises StoreCorruptError naming it; no byte or sidecar is written."""
    db = _db(tmp_path)
    db.write_bytes(content)
    with pytest.raises(StoreCorruptError, match=r"orchestrator\.db is not a SQLite database"):
        SQLiteStore(tmp_path)
    assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_FILENAME]


def _truncate(b: bytes) -> bytes:
    return b[: len(b) // 2]


def _garble_header(b: bytes) -> bytes:
    return b[:16] + b"\xff" * 84 + b[100:]


def _garble_schema_page(b: bytes) -> bytes:
    return b[:100] + b"\xab" * 3996 + b[4096:]


@pytest.mark.parametrize("damage", [_truncate, _garble_header, _garble_schema_page])
def test_a_damaged_database_is_refused_untouched(
    data_dir: Path, damage: Callable[[bytes], bytes]
) -> None:
    """A truncated or overwritten file raises StoreCorruptError saying it is damaged."""
    db = _db(data_dir)
    db.write_bytes(damage(db.read_bytes()))
    with (
        _left_unchanged(data_dir),
        pytest.raises(StoreCorruptError, match=r"orchestrator\.db is damaged.*backup"),
    ):
        SQLiteStore(data_dir)


def test_a_damaged_table_page_is_reported_when_read(data_dir: Path) -> None:
    """Garbage in the ledger's pages opens fine but reading it raises StoreCorruptError.

    The state's records that mirror ledger entries keep their text there (schema 4), so a
    load reports the damage too; the listing, which reads only the workflow rows, still works.
    """
    db = _db(data_dir)
    with closing(sqlite3.connect(db)) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ledger'"
        ).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page_size : root * page_size] = b"\x5a" * page_size
    db.write_bytes(bytes(data))
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        assert [w.version for w in store.list_workflows() if w.workflow_id == "wf-1"] == [4]
        with pytest.raises(StoreCorruptError, match=r"workflow wf-1: could not read the ledger"):
            store.ledger("wf-1")
        with pytest.raises(StoreCorruptError, match=r"workflow wf-1: could not load"):
            store.load("wf-1")


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """A SQLite file of another program raises StoreCorruptError; no table is added to it."""
    with closing(sqlite3.connect(_db(tmp_path))) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        conn.commit()
    with (
        _left_unchanged(tmp_path),
        pytest.raises(StoreCorruptError, match=r"not a hybrid-orchestrator store.*photos"),
    ):
        SQLiteStore(tmp_path)


# -- schema versions -----------------------------------------------------------------------


def test_a_newer_store_schema_is_refused_untouched(data_dir: Path) -> None:
    """A file from a newer store schema raises StoreVersionError naming both versions."""
    _tamper(data_dir, "UPDATE schema_meta SET value = '99' WHERE key = 'schema_version'")
    with (
        _left_unchanged(data_dir),
        pytest.raises(
            StoreVersionError,
            match=rf"schema version 99; this one knows up to {STORE_SCHEMA_VERSION}.*Upgrade",
        ),
    ):
        SQLiteStore(data_dir)


def test_an_unreadable_schema_version_is_refused_untouched(data_dir: Path) -> None:
    """A schema_meta without a valid version raises StoreCorruptError."""
    _tamper(data_dir, "UPDATE schema_meta SET value = 'one' WHERE key = 'schema_version'")
    with (
        _left_unchanged(data_dir),
        pytest.raises(StoreCorruptError, match="no valid schema_version"),
    ):
        SQLiteStore(data_dir)


def test_a_snapshot_from_a_newer_state_schema_is_refused(data_dir: Path) -> None:
    """A snapshot whose schema_version is newer raises StoreVersionError naming the workflow."""
    _tamper(
        data_dir,
        "UPDATE workflows SET snapshot = json_set(snapshot, '$.schema_version', 2, "
        "'$.new_field', 'x') WHERE id = 'wf-1'",
    )
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        with pytest.raises(StoreVersionError, match=r"workflow wf-1: .*newer schema \(version 2"):
            store.load("wf-1")
        assert store.load("wf-2").version == 1  # the other workflows still load


# -- migrations ----------------------------------------------------------------------------


def test_sqlite_applies_new_migrations_once(tmp_path: Path) -> None:
    """A migration added after the file was made runs once on open and bumps the version."""
    SQLiteStore(tmp_path).close()
    runs: list[int] = []

    def add_notes(conn: sqlite3.Connection) -> None:
        runs.append(1)
        conn.execute("CREATE TABLE notes (workflow_id TEXT, text TEXT)")

    for _ in range(2):
        SQLiteStore(tmp_path, migrations=(*MIGRATIONS, add_notes)).close()
    assert runs == [1]
    with closing(sqlite3.connect(tmp_path / DB_FILENAME)) as conn:
        (version,) = conn.execute(
            "SELECT value FROM schema_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert int(version) == STORE_SCHEMA_VERSION + 1


def test_sqlite_failed_migration_changes_nothing(data_dir: Path) -> None:
    """A migration that fails rolls back every migration of that open; the file is unchanged."""
    tmp_path = data_dir
    before = (tmp_path / DB_FILENAME).read_bytes()

    def adds_a_table(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE notes (text TEXT)")

    def breaks(conn: sqlite3.Connection) -> None:
        raise RuntimeError("boom")

    failing = len(MIGRATIONS) + 2  # the second migration added here
    with pytest.raises(StoreError, match=rf"migration {failing} .*failed \(boom\); nothing was"):
        SQLiteStore(tmp_path, migrations=(*MIGRATIONS, adds_a_table, breaks))
    assert (tmp_path / DB_FILENAME).read_bytes() == before
    with SQLiteStore(tmp_path) as store:
        assert store.load("wf-1").version == 4


# -- rows that fail validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot_sql", "problem"),
    [
        ("'{\"schema_version\": 1, '", "Invalid JSON"),
        ("json_set(snapshot, '$.machine_state', 'dancing')", "field 'machine_state'"),
        ("json_remove(snapshot, '$.workflow_id')", "field 'workflow_id': Field required"),
        ("json_set(snapshot, '$.workflow_id', 'wf-2')", "belongs to workflow 'wf-2'"),
        ("'[1, 2]'", "field '(top level)': Input should be an object"),
    ],
    ids=["truncated-json", "bad-enum", "missing-field", "other-workflow", "not-an-object"],
)
def test_a_damaged_snapshot_names_workflow_and_problem(
    data_dir: Path, snapshot_sql: str, problem: str
) -> None:
    """An invalid snapshot raises StoreCorruptError with the workflow id and the problem."""
    _tamper(data_dir, f"UPDATE workflows SET snapshot = {snapshot_sql} WHERE id = 'wf-1'")
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        with pytest.raises(StoreCorruptError) as err:
            store.load("wf-1")
        message = str(err.value)
        assert message.startswith("workflow wf-1: the stored snapshot is damaged")
        assert problem in message
        assert "restore it from a backup" in message


# A record row's text, its own or that of the ledger entry it points at (schema 4).
_TEXT = (
    "COALESCE(payload, (SELECT l.payload FROM ledger l WHERE l.workflow_id = "
    "records.workflow_id AND l.seq = records.seq))"
)


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        (
            f"UPDATE records SET seq = NULL, payload = json_set({_TEXT}, '$.status', 'resting') "
            "WHERE workflow_id = 'wf-1' AND list_name = 'history' AND idx = 0",
            "the stored snapshot (history record 0) is damaged: field '0.status'",
        ),
        (
            f"UPDATE records SET seq = NULL, payload = substr({_TEXT}, 1, 30) "
            "WHERE workflow_id = 'wf-1' AND list_name = 'decisions' AND idx = 1",
            "the stored snapshot (decisions) is damaged: field '(top level)': Invalid JSON",
        ),
        (
            "UPDATE records SET seq = 999, payload = NULL "
            "WHERE workflow_id = 'wf-1' AND list_name = 'decisions' AND idx = 0",
            "decisions record 0 points at ledger entry seq 999, which is missing",
        ),
        (
            "DELETE FROM records WHERE workflow_id = 'wf-1' AND list_name = 'decisions' "
            "AND idx = 1",
            "it has 2 decisions records but 1 are stored",
        ),
        (
            "DELETE FROM records WHERE workflow_id = 'wf-1' AND list_name = 'decisions' "
            "AND idx = 0",
            "decisions record 1 is out of place",
        ),
    ],
    ids=["bad-field", "truncated", "dangling", "missing-last", "missing-first"],
)
def test_a_damaged_record_row_names_workflow_and_record(
    data_dir: Path, sql: str, problem: str
) -> None:
    """A record row that fails validation, or a missing one, names the workflow and the list."""
    _tamper(data_dir, sql)
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        with pytest.raises(StoreCorruptError) as err:
            store.load("wf-1")
        message = str(err.value)
        assert message.startswith("workflow wf-1: the stored snapshot")
        assert problem in message
        assert store.load("wf-2").version == 1  # the other workflows still load


def test_a_damaged_config_names_workflow_and_field(data_dir: Path) -> None:
    """An invalid stored configuration raises StoreCorruptError naming the field."""
    _tamper(
        data_dir,
        "UPDATE workflows SET config = json_set(config, '$.limits.max_decisions', -3) "
        "WHERE id = 'wf-1'",
    )
    with (
        _left_unchanged(data_dir),
        SQLiteStore(data_dir) as store,
        pytest.raises(
            StoreCorruptError,
            match=r"workflow wf-1: the stored configuration is damaged: field "
            r"'limits\.max_decisions'",
        ),
    ):
        store.load("wf-1")


@pytest.mark.parametrize(
    ("seq", "update", "problem"),
    [
        (
            1,
            "payload = json_set(payload, '$.source', 'oracle')",
            "(decision) is damaged: field 'source'",
        ),
        (1, "payload = json_remove(payload, '$.decided_at')", "field 'decided_at': Field required"),
        (2, "payload = json_set(payload, '$.status', 'running')", "step that is still running"),
        (
            2,
            "payload = substr(payload, 1, 20)",
            "(step_result) is damaged: field '(top level)': Invalid JSON",
        ),
        (3, "payload = '[\"checkpoint\"]'", "(event) is damaged: its payload is a JSON list"),
        (3, "payload = '{\"at\": 1}'", "its payload has no 'event' name"),
        (3, "payload = '{\"event\":'", "its payload is not valid JSON"),
        (4, "kind = 'telemetry'", "(telemetry) is damaged: 'telemetry' is not a valid LedgerKind"),
        (4, "kind = 'human_answer'", "(human_answer) is damaged: field 'gate': Field required"),
        (4, "recorded_at = 'yesterday'", "'yesterday' is not an ISO-8601 time"),
    ],
)
def test_a_damaged_ledger_row_names_workflow_seq_and_problem(
    data_dir: Path, seq: int, update: str, problem: str
) -> None:
    """A ledger row that fails validation raises StoreCorruptError naming id, seq and problem."""
    _tamper(data_dir, f"UPDATE ledger SET {update} WHERE workflow_id = 'wf-1' AND seq = ?", (seq,))
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        with pytest.raises(StoreCorruptError) as err:
            store.ledger("wf-1")
        message = str(err.value)
        assert message.startswith(f"workflow wf-1: ledger entry seq {seq} (")
        assert problem in message
        assert len(store.ledger("wf-1", after_seq=seq)) == 4 - seq  # later entries still read


def test_a_damaged_summary_row_is_named_by_list(data_dir: Path) -> None:
    """A listing column with an unknown value makes list_workflows name the workflow."""
    _tamper(data_dir, "UPDATE workflows SET status = 'sleeping' WHERE id = 'wf-2'")
    with (
        _left_unchanged(data_dir),
        SQLiteStore(data_dir) as store,
        pytest.raises(StoreCorruptError, match=r"workflow wf-2: its summary row is damaged"),
    ):
        store.list_workflows()


def test_a_damaged_version_is_named_by_versions(data_dir: Path) -> None:
    """A version that is not an integer makes Store.versions name the workflow."""
    _tamper(data_dir, "UPDATE workflows SET version = 'four' WHERE id = 'wf-2'")
    with (
        _left_unchanged(data_dir),
        SQLiteStore(data_dir) as store,
        pytest.raises(StoreCorruptError, match=r"workflow wf-2: its version column is damaged"),
    ):
        store.versions()


def test_a_damaged_lease_row_is_named(data_dir: Path) -> None:
    """A lease whose expiry is not a time raises StoreCorruptError instead of being replaced."""
    _tamper(data_dir, "UPDATE leases SET expires_at = 'soon' WHERE workflow_id = 'wf-1'")
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        with pytest.raises(StoreCorruptError, match=r"workflow wf-1: its lease is damaged"):
            store.acquire_lease("wf-1", "w2", 30)
        with pytest.raises(StoreCorruptError, match="'soon' is not an ISO-8601 time"):
            store.lease("wf-1")


def test_damage_in_one_workflow_leaves_the_others_usable(data_dir: Path) -> None:
    """A damaged wf-1 does not stop wf-2 from loading or listing."""
    _tamper(data_dir, "UPDATE workflows SET snapshot = 'garbage' WHERE id = 'wf-1'")
    with SQLiteStore(data_dir, clock=FixedClock(T0 + timedelta(hours=1))) as store:
        assert store.load("wf-2").state.workflow_id == "wf-2"
        assert {s.workflow_id for s in store.list_workflows()} == {"wf-1", "wf-2"}


# -- after damage is found -----------------------------------------------------------------


def test_a_handle_that_met_a_damaged_row_writes_nothing_more(data_dir: Path) -> None:
    """After a snapshot fails to decode, writes to any workflow raise; reads still work."""
    _tamper(
        data_dir, "UPDATE workflows SET snapshot = '{\"schema_version\": 1, ' WHERE id = 'wf-1'"
    )
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        healthy = store.load("wf-2")
        with pytest.raises(StoreCorruptError, match="stored snapshot is damaged"):
            store.load("wf-1")
        with pytest.raises(
            StoreCorruptError,
            match=r"workflow wf-2: will not commit: this store was found damaged \(workflow "
            r"wf-1: the stored snapshot.*nothing more is written.*list, status, inspect, export",
        ):
            store.commit("wf-2", healthy.state, expected_version=1, owner=None)
        with pytest.raises(StoreCorruptError, match="will not acquire the lease"):
            store.acquire_lease("wf-2", "w2", 30)
        assert store.load("wf-2").version == 1  # reading goes on
        assert {s.workflow_id for s in store.list_workflows()} == {"wf-1", "wf-2"}


def test_a_handle_that_met_a_damaged_page_writes_nothing_more(data_dir: Path) -> None:
    """After SQLite reports a corrupt page, no write is attempted on the file."""
    db = _db(data_dir)
    with closing(sqlite3.connect(db)) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ledger'"
        ).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page_size : root * page_size] = b"\x5a" * page_size
    db.write_bytes(bytes(data))
    with _left_unchanged(data_dir), SQLiteStore(data_dir) as store:
        with pytest.raises(StoreCorruptError):
            store.ledger("wf-1")
        with pytest.raises(StoreCorruptError, match="will not record the artifact"):
            store.add_artifact("wf-2", "plan", "p.md")


def test_the_cli_reports_a_damaged_row_with_exit_2(data_dir: Path) -> None:
    """`orchestrator status` on a damaged snapshot prints one line saying what to do; exit 2."""
    _tamper(data_dir, "UPDATE workflows SET snapshot = 'garbage' WHERE id = 'wf-1'")
    with _left_unchanged(data_dir):
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "status", "wf-1", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(Path(__file__).parents[1])},
            timeout=120,
            check=False,
        )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: workflow wf-1: the stored snapshot is damaged")
    assert "restore it from a backup" in line
