"""A running step's latest line on its lease: written soon, at most so often, cleared after."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from structlog.testing import capture_logs

from orchestrator.running.activity import ActivityNotes
from orchestrator.running.updates import new_workflow
from state.async_store import AsyncStore
from state.config import WorkflowConfig
from state.memory_store import MemoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _leased() -> MemoryStore:
    store = MemoryStore()
    store.create(new_workflow("wf-1", "req", "/tmp/ws", T0), WorkflowConfig())
    store.acquire_lease("wf-1", "runner-1", 300)
    return store


def _activity(store: MemoryStore) -> str | None:
    lease = store.lease("wf-1")
    assert lease is not None
    return lease.activity


async def _until(store: MemoryStore, wanted: str | None) -> None:
    for _ in range(1000):
        if _activity(store) == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the note stayed {_activity(store)!r}, not {wanted!r}")


async def test_the_first_line_is_written_at_once_and_later_ones_at_most_so_often() -> None:
    """A burst of lines writes its first at once and its last after ``every_s``."""
    store = _leased()
    async with AsyncStore(store) as astore:
        # every_s far above the 0.1 s looked at, so a slow machine cannot write it early.
        notes = ActivityNotes(astore, "wf-1", "runner-1", every_s=2.0)
        async with notes.step():
            notes.say("building the project environment")
            await _until(store, "building the project environment")
            for n in range(20):
                notes.say(f"Collecting package {n}")
            await asyncio.sleep(0.1)
            assert _activity(store) == "building the project environment"  # not yet
            await _until(store, "Collecting package 19")
        assert _activity(store) is None  # cleared when the step's agent returned


async def test_a_step_that_says_nothing_writes_nothing() -> None:
    """No line, no write: the lease is not touched."""
    store = _leased()
    before = store.lease("wf-1")
    async with AsyncStore(store) as astore, ActivityNotes(astore, "wf-1", "runner-1").step():
        await asyncio.sleep(0.01)
    assert store.lease("wf-1") == before


async def test_a_note_that_cannot_be_written_is_logged_once_and_the_step_goes_on() -> None:
    """A store that refuses the note costs the watchers their line, never the step."""
    store = _leased()
    store.close()  # every call now raises StoreError
    async with AsyncStore(store) as astore:
        notes = ActivityNotes(astore, "wf-1", "runner-1", every_s=0.01)
        with capture_logs() as logs:
            async with notes.step():
                for n in range(5):
                    notes.say(f"line {n}")
                    await asyncio.sleep(0.02)
    failed = [e for e in logs if e["event"] == "activity.note.failed"]
    assert len(failed) == 1
    assert failed[0]["workflow_id"] == "wf-1"
