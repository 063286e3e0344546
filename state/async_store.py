"""``AsyncStore``: a ``Store`` awaited from an event loop without blocking it.

Each call of a blocking store runs on one worker thread that belongs to this wrapper, in
the order the calls were made, and its result comes back to the loop as a future; the loop
serves other tasks meanwhile (sqlite3 releases the GIL while SQLite works). One thread per
wrapper keeps the calls of concurrent tasks in the order they were made, which a pool would
not, and costs two thread wake-ups per call (see ``bench/awaited.py``). A store whose
``blocking`` is False is called inline, since its calls only take a lock for microseconds.

A call whose awaiting task is cancelled still finishes on the worker (a transaction cannot
be interrupted half-way); its result is dropped. Use it as ``async with AsyncStore(store)``:
leaving stops the worker once the calls already made are done. The wrapped store is not
closed: whoever opened it closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from state.config import WorkflowConfig
from state.errors import StoreError
from state.steps import WorkflowStatus
from state.store import (
    Artifact,
    Lease,
    LedgerEntry,
    LedgerEntryIn,
    LedgerKind,
    Store,
    StoredWorkflow,
    WorkflowSummary,
)
from state.workflow import WorkflowState

R = TypeVar("R")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # its task was cancelled while the worker ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    """The worker thread: run each job, hand its outcome to the job's loop."""
    while (job := jobs.get()) is not None:
        loop, future, call = job
        result: Any = None
        error: BaseException | None = None
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            error = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits this any more
            loop.call_soon_threadsafe(_settle, future, result, error)


class AsyncStore:
    """The calls of ``Store``, awaited; a blocking store's run on a worker thread.

    Args:
        store: the store to call.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        """The wrapper; its worker starts with the first call."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the worker once the calls already made are done."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the worker once the calls already made are done; later calls raise."""
        self._closed = True
        jobs, thread = self._jobs, self._thread
        self._jobs = self._thread = None
        if jobs is None or thread is None:
            return
        # Joining could block the loop behind a slow call: wait for a marker job instead.
        done = asyncio.get_running_loop().create_future()
        jobs.put((asyncio.get_running_loop(), done, lambda: None))
        jobs.put(None)
        await asyncio.shield(done)

    def _submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> asyncio.Future[R]:
        """Start ``fn(*args, **kwargs)`` now; its outcome arrives as the future's."""
        if self._closed:
            raise StoreError(f"the async view of {self.store!r} is closed; make a new one")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        call = functools.partial(fn, *args, **kwargs)
        if not self.store.blocking:
            try:
                future.set_result(call())
            except Exception as exc:
                future.set_exception(exc)
            return future
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=_work, args=(self._jobs,), name="store-worker", daemon=True
            )
            self._thread.start()
        self._jobs.put((loop, future, call))
        return future

    # -- the Store's calls -----------------------------------------------------------------

    async def create(
        self, state: WorkflowState, config: WorkflowConfig, *, wake: bool = False
    ) -> int:
        """``Store.create``."""
        return await self._submit(self.store.create, state, config, wake=wake)

    async def load(self, workflow_id: str) -> StoredWorkflow:
        """``Store.load``."""
        return await self._submit(self.store.load, workflow_id)

    async def commit(
        self,
        workflow_id: str,
        state: WorkflowState,
        *,
        expected_version: int,
        entries: Sequence[LedgerEntryIn] = (),
        owner: str | None,
        wake: bool = False,
    ) -> int:
        """``Store.commit``."""
        return await self._submit(
            self.store.commit,
            workflow_id,
            state,
            expected_version=expected_version,
            entries=entries,
            owner=owner,
            wake=wake,
        )

    async def list_workflows(
        self, status: WorkflowStatus | None = None, *, ids: Collection[str] | None = None
    ) -> list[WorkflowSummary]:
        """``Store.list_workflows``."""
        return await self._submit(self.store.list_workflows, status, ids=ids)

    async def versions(self) -> dict[str, int]:
        """``Store.versions``."""
        return await self._submit(self.store.versions)

    async def ledger(
        self,
        workflow_id: str,
        *,
        after_seq: int = 0,
        kinds: Collection[LedgerKind] | None = None,
    ) -> list[LedgerEntry]:
        """``Store.ledger``."""
        return await self._submit(self.store.ledger, workflow_id, after_seq=after_seq, kinds=kinds)

    async def acquire_lease(
        self,
        workflow_id: str,
        owner: str,
        ttl_s: float,
        *,
        host: str | None = None,
        pid: int | None = None,
    ) -> Lease:
        """``Store.acquire_lease``."""
        return await self._submit(
            self.store.acquire_lease, workflow_id, owner, ttl_s, host=host, pid=pid
        )

    async def renew_lease(self, workflow_id: str, owner: str, ttl_s: float) -> Lease:
        """``Store.renew_lease``."""
        return await self._submit(self.store.renew_lease, workflow_id, owner, ttl_s)

    async def release_lease(self, workflow_id: str, owner: str) -> bool:
        """``Store.release_lease``."""
        return await self._submit(self.store.release_lease, workflow_id, owner)

    async def lease(self, workflow_id: str) -> Lease | None:
        """``Store.lease``."""
        return await self._submit(self.store.lease, workflow_id)

    async def leases(self) -> list[Lease]:
        """``Store.leases``."""
        return await self._submit(self.store.leases)

    async def note_activity(self, workflow_id: str, owner: str, activity: str | None) -> bool:
        """``Store.note_activity``."""
        return await self._submit(self.store.note_activity, workflow_id, owner, activity)

    async def add_artifact(self, workflow_id: str, kind: str, path: str) -> Artifact:
        """``Store.add_artifact``."""
        return await self._submit(self.store.add_artifact, workflow_id, kind, path)

    async def artifacts(self, workflow_id: str) -> list[Artifact]:
        """``Store.artifacts``."""
        return await self._submit(self.store.artifacts, workflow_id)
