"""Group commit: concurrent workflows' commits are written together, each with its own outcome.

The commits queue up for real: another process holds SQLite's write lock while the tasks
commit, so they wait in ``AsyncStore``'s queue as they do behind a slow disk, and are
handed to ``Store.commit_many`` together once the lock is let go.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.running.updates import new_workflow
from state.async_store import AsyncStore, SharedAsyncStore
from state.config import WorkflowConfig
from state.errors import ConcurrencyError, StoreError
from state.sqlite_store import DB_FILENAME, SQLiteStore
from state.sqlite_store.connection import Tx
from state.store import Commit, CommitOutcome, EventEntry
from state.workflow import WorkflowState

from support.sqlite_lock import write_lock_held

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class CountingStore(SQLiteStore):
    """The SQLite store, noting each ``commit_many`` batch and each write transaction."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, busy_timeout_s=30)
        self.batches: list[int] = []
        self.writes: list[str] = []

    def commit_many(self, commits: Sequence[Commit]) -> list[CommitOutcome]:
        """Note the batch's size, then write it."""
        self.batches.append(len(commits))
        return super().commit_many(commits)

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
        if write:
            self.writes.append(doing)
        with super()._transaction(
            doing, workflow_id, write=write, consistent=consistent, single=single
        ) as tx:
            yield tx


def _made(store: SQLiteStore, n: int) -> list[WorkflowState]:
    states = [new_workflow(f"wf-{i}", "r", "/ws", T0) for i in range(n)]
    for s in states:
        store.create(s, WorkflowConfig())
    return states


async def _settle_queue() -> None:
    for _ in range(20):  # every task reaches its commit and queues it
        await asyncio.sleep(0)


@contextmanager
def _counting(tmp_path: Path) -> Iterator[CountingStore]:
    store = CountingStore(tmp_path)
    try:
        yield store
    finally:
        store.close()


async def test_commits_queued_together_are_written_in_one_transaction(tmp_path: Path) -> None:
    """Eight tasks committing while the disk is busy cost two transactions, not eight."""
    with _counting(tmp_path) as store:
        states = _made(store, 8)
        store.writes.clear()
        async with write_lock_held(tmp_path / DB_FILENAME) as release, AsyncStore(store) as astore:
            tasks = [
                asyncio.create_task(
                    astore.commit(
                        s.workflow_id, s, expected_version=1, entries=[EventEntry("x")], owner=None
                    )
                )
                for s in states
            ]
            await _settle_queue()
            release.set()
            versions = await asyncio.gather(*tasks)
        assert versions == [2] * 8
        # The first commit was taken alone and waited on the lock; the rest queued behind it.
        assert sum(store.batches) >= 7
        assert len(store.writes) <= 2
        for s in states:
            assert [e.kind for e in store.ledger(s.workflow_id)][-1] == "event"
            assert store.load(s.workflow_id).version == 2


async def test_a_refused_commit_fails_only_its_own_caller(tmp_path: Path) -> None:
    """A stale version in the batch raises ConcurrencyError for that task; the rest commit."""
    with _counting(tmp_path) as store:
        states = _made(store, 4)
        async with write_lock_held(tmp_path / DB_FILENAME) as release, AsyncStore(store) as astore:
            tasks = [
                asyncio.create_task(
                    astore.commit(
                        s.workflow_id,
                        s,
                        expected_version=7 if i == 2 else 1,
                        entries=[EventEntry("x")],
                        owner=None,
                    )
                )
                for i, s in enumerate(states)
            ]
            await _settle_queue()
            release.set()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert outcomes[0] == outcomes[1] == outcomes[3] == 2
        assert isinstance(outcomes[2], ConcurrencyError)
        assert store.load("wf-2").version == 1
        assert store.ledger("wf-2") == []  # nothing of the refused commit


async def test_a_database_error_in_the_batch_falls_back_to_one_by_one(tmp_path: Path) -> None:
    """A commit that breaks the database's rules fails alone; the batch's others still commit."""
    with _counting(tmp_path) as store:
        states = _made(store, 3)
        seq = len(store.ledger("wf-1")) + 1
        raw = sqlite3.connect(tmp_path / DB_FILENAME)
        with raw:  # the row wf-1's next entry would take: its INSERT fails
            raw.execute(
                "INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload) "
                "VALUES ('wf-1', ?, 'event', '2026-03-01T12:00:00+00:00', '{}')",
                (seq,),
            )
        raw.close()
        outcomes = store.commit_many(
            [Commit(s.workflow_id, s, 1, (EventEntry("x"),)) for s in states]
        )
        assert outcomes[0] == outcomes[2] == 2
        assert isinstance(outcomes[1], StoreError)
        assert store.load("wf-1").version == 1
        assert store.load("wf-0").version == store.load("wf-2").version == 2


async def test_a_call_between_commits_keeps_its_place(tmp_path: Path) -> None:
    """A read queued between two commits sees the first and not the second."""
    with _counting(tmp_path) as store:
        a, b = _made(store, 2)
        async with write_lock_held(tmp_path / DB_FILENAME) as release, AsyncStore(store) as astore:
            first = asyncio.create_task(
                astore.commit("wf-0", a, expected_version=1, entries=[EventEntry("x")], owner=None)
            )
            read = asyncio.create_task(astore.versions())
            second = asyncio.create_task(
                astore.commit("wf-1", b, expected_version=1, entries=[EventEntry("x")], owner=None)
            )
            await _settle_queue()
            release.set()
            assert await first == 2
            assert await read == {"wf-0": 2, "wf-1": 1}
            assert await second == 2


async def test_two_commits_of_one_workflow_in_a_batch_apply_in_order(tmp_path: Path) -> None:
    """A workflow committed twice in one batch ends at the second commit's version."""
    with _counting(tmp_path) as store:
        (s,) = _made(store, 1)
        outcomes = store.commit_many(
            [Commit("wf-0", s, 1, (EventEntry("a"),)), Commit("wf-0", s, 2, (EventEntry("b"),))]
        )
        assert outcomes == [2, 3]
        assert [e.kind for e in store.ledger("wf-0")][-2:] == ["event", "event"]


async def test_a_shared_view_serves_concurrent_users_and_closes_after_the_last(
    tmp_path: Path,
) -> None:
    """Users at the same time get one view; it is closed once the last has left."""
    with _counting(tmp_path) as store:
        shared = SharedAsyncStore(store)
        async with shared.use() as one, shared.use() as two:
            assert one is two
            await one.versions()
        with pytest.raises(StoreError, match="closed"):
            await one.versions()
        async with shared.use() as three:
            assert three is not one
            assert await three.versions() == {}
