"""What a running step is doing, put on its workflow's lease for every watcher to see.

A step can wait minutes on something that is not a decision: the first validation of a new
requirements file waits for its environment's build. The runner's observers see each line
of it (the terminal's display), but a console or ``orchestrator status`` in another process
sees only the store. ``ActivityNotes`` puts the latest line on the lease
(``Store.note_activity``), at most once every ``EVERY_S`` seconds, and clears it when the
step's agent returns. It is not part of the workflow's record: the ledger is unchanged, and
a note that cannot be written is logged once and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from state.async_store import AsyncStore

log = structlog.get_logger(__name__)

EVERY_S = 1.0
"""The most often a workflow's note is written."""


class ActivityNotes:
    """The latest line a step said, written to its lease while the step runs.

    One per run: each ``step`` block starts from nothing and clears what it wrote.

    Args:
        store: the run's store.
        workflow_id: the workflow.
        owner: the lease's holder (the runner's owner).
        every_s: the least time between two writes.
    """

    def __init__(
        self, store: AsyncStore, workflow_id: str, owner: str, *, every_s: float = EVERY_S
    ) -> None:
        self._store = store
        self._workflow_id = workflow_id
        self._owner = owner
        self._every_s = every_s
        self._latest: str | None = None
        self._said = asyncio.Event()
        self._written = False
        self._warned = False
        self._active = False
        self._writer: asyncio.Task[None] | None = None

    def say(self, line: str) -> None:
        """Note ``line`` as what the step does now; the writer puts it on the lease soon.

        Called on the event loop (a build's lines come from asyncio subprocesses). The
        writer starts at the first line, so a step that says nothing costs nothing.
        """
        self._latest = line
        if self._active and self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        self._said.set()

    @contextlib.asynccontextmanager
    async def step(self) -> AsyncIterator[None]:
        """Write what is said while the block runs; clear the note when it ends."""
        self._active = True
        try:
            yield
        finally:
            self._active = False
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            self._latest = None
            self._said.clear()
            if self._written:
                self._written = False
                await self._put(None)

    async def _write(self) -> None:
        while True:
            await self._said.wait()
            self._said.clear()
            if self._latest is not None:
                self._written = True  # even if cancelled mid-write: clear it afterwards
                await self._put(self._latest)
            await asyncio.sleep(self._every_s)

    async def _put(self, activity: str | None) -> None:
        try:
            await self._store.note_activity(self._workflow_id, self._owner, activity)
        except Exception as exc:  # a note is for watchers: the run goes on without it
            if not self._warned:
                self._warned = True
                log.warning("activity.note.failed", workflow_id=self._workflow_id, error=str(exc))
