"""``AsyncStore``: the event loop keeps running while the store waits, and calls keep order.

The wait is real: another process holds SQLite's write lock until the test tells it to let
go, so a store call made on the loop's own thread would stall every other task until then.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.composition import open_store
from orchestrator.running.updates import new_workflow
from state.async_store import AsyncStore
from state.config import WorkflowConfig
from state.errors import StoreError
from state.sqlite_store import DB_FILENAME
from state.store import EventEntry

from support.sqlite_lock import write_lock_held

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_the_loop_runs_while_a_commit_waits_for_another_process(tmp_path: Path) -> None:
    """A commit blocked on another process's write lock leaves the loop free for other tasks."""
    store = open_store(tmp_path, busy_timeout_s=30)
    state = new_workflow("wf-1", "r", "/ws", T0)
    store.create(state, WorkflowConfig())
    try:
        async with write_lock_held(tmp_path / DB_FILENAME) as release, AsyncStore(store) as astore:
            commit = asyncio.create_task(
                astore.commit(
                    "wf-1", state, expected_version=1, entries=[EventEntry("x")], owner=None
                )
            )
            ticks = 0
            for _ in range(200):  # other work on the loop, all while the lock is held
                await asyncio.sleep(0)
                ticks += 1
            assert ticks == 200
            assert not commit.done()  # still waiting for the lock, off the loop
            release.set()
            assert await commit == 2
        assert [e.content for e in store.ledger("wf-1")] == [EventEntry("x")]
    finally:
        store.close()


@pytest.mark.parametrize("where", ["sqlite", "memory://"])
async def test_calls_of_concurrent_tasks_run_in_the_order_made(where: str, tmp_path: Path) -> None:
    """Commits started by several tasks at once are written in the order they were made."""
    store = open_store(tmp_path if where == "sqlite" else where)
    state = new_workflow("wf-1", "r", "/ws", T0)
    store.create(state, WorkflowConfig())
    async with AsyncStore(store) as astore:
        tasks = [
            asyncio.create_task(
                astore.commit(
                    "wf-1",
                    state,
                    expected_version=1 + i,
                    entries=[EventEntry("n", {"i": i})],
                    owner=None,
                )
            )
            for i in range(20)
        ]
        assert await asyncio.gather(*tasks) == list(range(2, 22))
        assert [e.content.data["i"] for e in await astore.ledger("wf-1")] == list(range(20))  # type: ignore[union-attr]
    store.close()


async def test_a_closed_wrapper_refuses_calls_and_errors_reach_the_caller(tmp_path: Path) -> None:
    """A store error on the worker reaches the awaiting task; after close, calls fail."""
    store = open_store(tmp_path)
    astore = AsyncStore(store)
    with pytest.raises(StoreError, match="'nope'"):
        await astore.load("nope")
    await astore.aclose()
    with pytest.raises(StoreError, match="closed"):
        await astore.list_workflows()
    assert store.list_workflows() == []  # the wrapped store stays open: its opener closes it
    store.close()
