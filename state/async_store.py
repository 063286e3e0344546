"""``AsyncStore``: a ``Store`` awaited from an event loop without blocking it.

Each call of a blocking store runs on one worker thread that belongs to this wrapper, in
the order the calls were made, and its result comes back to the loop as a future; the loop
serves other tasks meanwhile (sqlite3 releases the GIL while SQLite works). One thread per
wrapper keeps the calls of concurrent tasks in the order they were made, which a pool would
not, and costs two thread wake-ups per call (see ``bench/awaited.py``). A store whose
``blocking`` is False is called inline, since its calls only take a lock for microseconds.

Commits are grouped: the worker takes every commit queued behind the one it picked up (up
to ``MAX_GROUP``, none jumping a call queued between them) and hands them to
``Store.commit_many`` together, which a SQL backend writes in one transaction. So while one
batch is on disk, the next builds up, and a thousand workflows in flight share the end of
a transaction (a WAL write on SQLite, a WAL flush on PostgreSQL) instead of paying one
each; a lone commit is written as soon as it arrives, as before. Each commit still gets
its own outcome, so a refused one fails only its own caller.

``SharedAsyncStore`` hands one view to every concurrent user (a runner's runs, a worker's
runners), which is what lets their commits meet in the queue.

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
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from state.config import WorkflowConfig
from state.errors import StoreError
from state.steps import WorkflowStatus
from state.store import (
    Artifact,
    ArtifactIn,
    Commit,
    Lease,
    LedgerEntry,
    LedgerEntryIn,
    LedgerKind,
    Store,
    StoredWorkflow,
    WorkflowSummary,
    commit_one,
)
from state.workflow import WorkflowState

R = TypeVar("R")

MAX_GROUP = 64
"""The most commits the worker hands to ``Store.commit_many`` at once."""


@dataclass(frozen=True, slots=True)
class _Job:
    """One queued call: ``call``, or the commit ``commit`` when it is set."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    call: Callable[[], Any]
    commit: Commit | None = None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # its task was cancelled while the worker ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _hand_back(job: _Job, result: Any, error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits this any more
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def _run(job: _Job) -> None:
    result: Any = None
    error: BaseException | None = None
    try:
        result = job.call()
    except BaseException as exc:  # handed to the awaiting task, which re-raises it
        error = exc
    _hand_back(job, result, error)


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in settled:
        if isinstance(outcome, BaseException):
            _settle(future, None, outcome)
        else:
            _settle(future, outcome, None)


def _run_group(store: Store, group: list[_Job]) -> None:
    """Write the commits of ``group`` together; each job gets its own commit's outcome.

    The outcomes go back in one callback per event loop: waking a loop writes to its
    self-pipe, once per callback, and that write cost as much as a commit's statements.
    """
    if len(group) == 1:
        _run(group[0])
        return
    commits = [job.commit for job in group if job.commit is not None]
    try:
        outcomes: list[Any] = store.commit_many(commits)
    except BaseException as exc:  # the whole batch failed: every caller sees why
        outcomes = [exc] * len(group)
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for job, outcome in zip(group, outcomes, strict=True):
        by_loop.setdefault(job.loop, []).append((job.future, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these any more
            loop.call_soon_threadsafe(_settle_all, settled)


def _work(store: Store, jobs: queue.SimpleQueue[_Job | None]) -> None:
    """The worker thread: run each job, hand its outcome to the job's loop.

    A commit gathers the commits queued right behind it, and they are written together
    before the first other job (or the stop marker) met while gathering them.
    """
    while (job := jobs.get()) is not None:
        if job.commit is None:
            _run(job)
            continue
        group = [job]
        while len(group) < MAX_GROUP:
            try:
                after = jobs.get_nowait()
            except queue.Empty:
                break
            if after is not None and after.commit is not None:
                group.append(after)
                continue
            _run_group(store, group)
            group = []
            if after is None:
                return
            _run(after)
            break
        if group:
            _run_group(store, group)


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
        jobs.put(_Job(asyncio.get_running_loop(), done, lambda: None))
        jobs.put(None)
        await asyncio.shield(done)

    def _submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> asyncio.Future[R]:
        """Start ``fn(*args, **kwargs)`` now; its outcome arrives as the future's."""
        return self._start(functools.partial(fn, *args, **kwargs))

    def _start(self, call: Callable[[], R], commit: Commit | None = None) -> asyncio.Future[R]:
        """Queue ``call`` (the commit ``commit``, which may be grouped, when it is set)."""
        if self._closed:
            raise StoreError(f"the async view of {self.store!r} is closed; make a new one")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self.store.blocking:
            try:
                future.set_result(call())
            except Exception as exc:
                future.set_exception(exc)
            return future
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=_work, args=(self.store, self._jobs), name="store-worker", daemon=True
            )
            self._thread.start()
        self._jobs.put(_Job(loop, future, call, commit))
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
        artifacts: Sequence[ArtifactIn] = (),
    ) -> int:
        """``Store.commit``; written together with the commits queued beside it."""
        c = Commit(
            workflow_id, state, expected_version, tuple(entries), owner, wake, tuple(artifacts)
        )
        return await self._start(functools.partial(commit_one, self.store, c), c)

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


class SharedAsyncStore:
    """One ``AsyncStore`` over ``store`` for everyone using it at the same time.

    Concurrent runs that each made their own ``AsyncStore`` would each have a worker thread
    and could not group their commits; sharing one gives a thousand workflows in flight one
    thread and one transaction per batch of commits. The view is made by the first user and
    closed when the last one leaves, so nothing lingers between runs.

    Args:
        store: the store to call.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._view: AsyncStore | None = None
        self._users = 0

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncStore]:
        """The shared view, for as long as the ``async with`` block runs."""
        if self._view is None:
            self._view = AsyncStore(self.store)
        view = self._view
        self._users += 1
        try:
            yield view
        finally:
            self._users -= 1
            if self._users == 0 and self._view is view:
                self._view = None
                await view.aclose()
