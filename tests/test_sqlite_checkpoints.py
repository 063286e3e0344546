"""WAL checkpoints run on a thread of the store's, not inside a commit.

The checks read the database file itself, without its ``-wal``: what a checkpoint copied
is there, what only the WAL holds is not.
"""

from __future__ import annotations

import gc
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from structlog.testing import capture_logs

from orchestrator.running.updates import new_workflow
from state.config import WorkflowConfig
from state.sqlite_store import DB_FILENAME, SQLiteStore
from state.sqlite_store.checkpoints import BACKSTOP, EVERY, Checkpointer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _create(store: SQLiteStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.create(new_workflow(f"wf-{i}", "req", "/tmp/ws", T0), WorkflowConfig())


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sqlite-checkpoint")]


def _workflows_in_file_alone(data_dir: Path, tmp: Path) -> int:
    """Workflows the database file holds by itself, its WAL left out (0: not even the table)."""
    tmp.mkdir()
    shutil.copy(data_dir / DB_FILENAME, tmp / DB_FILENAME)
    conn = sqlite3.connect(tmp / DB_FILENAME)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'workflows'").fetchone() is None:
            return 0
        return int(conn.execute("SELECT count(*) FROM workflows").fetchone()[0])
    finally:
        conn.close()


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the checkpoint thread did not run"
        time.sleep(0.01)


def test_commits_reach_the_database_file_through_the_checkpoint_thread(tmp_path: Path) -> None:
    """Every EVERY commits the thread copies the WAL into the file; no commit does it."""
    data = tmp_path / "data"
    with SQLiteStore(data) as store:
        conn = store._connection()  # white-box: pragmas are per connection
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP
        _create(store, EVERY - 1)
        assert not _checkpoint_threads()  # a handle that wrote little starts none
        assert _workflows_in_file_alone(data, tmp_path / "before") == 0
        _create(store, 1, start=EVERY - 1)
        assert len(_checkpoint_threads()) == 1
        checkpoints = store._checkpoints
        assert checkpoints is not None
        _wait_for(lambda: checkpoints.checkpoints >= 1)
        # No commit checkpointed (the backstop is far off): the thread copied them.
        assert _workflows_in_file_alone(data, tmp_path / "after") == EVERY
        _create(store, EVERY, start=EVERY)
        _wait_for(lambda: checkpoints.checkpoints >= 2)
        assert _workflows_in_file_alone(data, tmp_path / "later") == 2 * EVERY
        assert len(_checkpoint_threads()) == 1  # one thread, woken again
    assert not _checkpoint_threads()  # closing the store stopped it


def test_the_store_reads_and_writes_while_the_thread_checkpoints(tmp_path: Path) -> None:
    """Commits, listings and loads go on beside the checkpoints; a reopened store sees all."""
    with SQLiteStore(tmp_path) as store:
        _create(store, 5 * EVERY)
        assert len(store.list_workflows()) == 5 * EVERY
        assert store.load(f"wf-{5 * EVERY - 1}").version == 1
    with SQLiteStore(tmp_path) as again:
        assert len(again.list_workflows()) == 5 * EVERY


def test_a_read_only_store_starts_no_checkpoint_thread(tmp_path: Path) -> None:
    """A handle that cannot write has nothing to checkpoint."""
    with SQLiteStore(tmp_path) as store:
        _create(store, 1)
    with SQLiteStore(tmp_path, read_only=True) as reader:
        for _ in range(EVERY):
            reader.list_workflows()
        assert reader._checkpoints is None
    assert not _checkpoint_threads()


def test_a_full_durability_store_checkpoints_inside_its_commits(tmp_path: Path) -> None:
    """Under FULL the thread would slow the fsyncs down, so SQLite's own checkpoint runs."""
    data = tmp_path / "data"
    with SQLiteStore(data, durability="full") as store:
        conn = store._connection()
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        _create(store, 2 * EVERY)
        assert not _checkpoint_threads()
        assert _workflows_in_file_alone(data, tmp_path / "copy") > 0  # SQLite's own ran


def test_a_checkpointer_that_cannot_open_the_file_says_so_and_stops(tmp_path: Path) -> None:
    """It logs why (SQLite's own checkpoints then do the work) and its thread ends."""
    missing = tmp_path / "gone" / DB_FILENAME
    checkpoints = Checkpointer(missing, 1.0, every=1)
    with capture_logs() as logs:
        checkpoints.committed()
        _wait_for(lambda: not _checkpoint_threads())
    checkpoints.close()
    assert [e["event"] for e in logs] == ["store.checkpoint.unavailable"]
    assert "SQLite's own checkpoints" in logs[0]["advice"]


def test_a_store_dropped_without_closing_stops_its_thread(tmp_path: Path) -> None:
    """Garbage-collecting an unclosed store ends its checkpoint thread too."""
    store = SQLiteStore(tmp_path)
    _create(store, EVERY)
    assert len(_checkpoint_threads()) == 1
    del store
    gc.collect()
    _wait_for(lambda: not _checkpoint_threads())
