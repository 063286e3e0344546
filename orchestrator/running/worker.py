"""A worker: claims runnable workflows from the store's queue and drives them.

``orchestrator worker`` runs one ``Worker`` per process, on any number of hosts against
one store. The worker claims up to ``concurrency`` workflows at a time (``WorkQueue.claim``
takes their leases, so two workers never drive one workflow) and drives each with a
``WorkflowRunner`` whose lease owner is the worker's id, in one event loop. A workflow that
stops at a gate is parked (it waits for a human, not for a worker) and one that finishes
leaves the queue, both in the transaction that releases its lease (``settle`` with
``release``), so no other worker claims it in between; the answer to a gate queues it
again (``answer_workflow``).

When the queue has nothing to claim the worker waits for a wake-up (``wait_for_work``: a
NOTIFY on PostgreSQL) or its polling interval; a run that ends claims again at once only
when the last claim filled every free slot (a claim is a write transaction, and 250 runs
ending one by one would otherwise make 250 of them). It records a heartbeat every
``heartbeat_s`` seconds, so ``orchestrator workers`` can tell a live worker from a dead
one. ``stop`` (SIGTERM in the CLI) hands every workflow back: its run is cancelled, its
lease released and the queue woken, so another worker takes it over at once; a step cut
short is recorded as interrupted and retried, as after a crash.

Failures stay with their workflow: a lost lease (another worker took over after this one
stalled) drops the workflow without touching the queue; a store or LLM outage leaves it
ready for a later claim; a workflow that cannot run at all (an inconsistent state, a bad
configuration) is parked with the reason as its note.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog

from orchestrator.running.runner import WorkflowRunner
from orchestrator.running.updates import new_workflow
from state.clock import Clock
from state.config import WorkflowConfig
from state.errors import (
    ConcurrencyError,
    ConfigError,
    LLMUnavailableError,
    OrchestratorError,
    StoreCorruptError,
    StoreError,
    StoreVersionError,
)
from state.queue import Claim, WorkerBeat, WorkQueue, work_queue
from state.steps import TERMINAL_STATES
from state.store import Store
from state.workflow import WorkflowState

log = structlog.get_logger(__name__)


class RunnerSource(Protocol):
    """Gives the worker a runner for a workflow's configuration (its LLM, its agents)."""

    async def runner_for(self, config: WorkflowConfig, owner: str) -> WorkflowRunner:
        """A runner whose lease owner is ``owner``, for a workflow configured so.

        Raises:
            LLMUnavailableError: the workflow's LLM cannot be reached.
        """
        ...


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker runs.

    Attributes:
        concurrency: at most this many workflows driven at once.
        lease_ttl_s: the lease of each workflow it drives (renewed every third of it).
        poll_s: the longest an idle worker waits before it looks at the queue again.
        heartbeat_s: how often it records its heartbeat.
    """

    concurrency: int = 4
    lease_ttl_s: float = 60.0
    poll_s: float = 2.0
    heartbeat_s: float = 10.0


class WorkerEventKind(StrEnum):
    """What a worker event reports."""

    STARTED = "started"
    CLAIMED = "claimed"
    WAITING = "waiting"  # stopped at a gate, parked
    FINISHED = "finished"  # completed, rejected or failed: out of the queue
    LOST = "lost"  # another worker holds its lease now
    RETRY = "retry"  # a store or LLM outage: left ready for a later claim
    PARKED = "parked"  # it cannot run: parked with the reason
    HANDED_BACK = "handed_back"  # the worker stopped while driving it
    STORE_DOWN = "store_down"  # the queue could not be read
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """Something a worker did, for a display or a log."""

    kind: WorkerEventKind
    workflow_id: str | None = None
    detail: str = ""


def default_worker_id() -> str:
    """A worker id unique to this process: ``worker-HOST-PID-xxxx``."""
    return f"worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def queue_of(store: Store) -> WorkQueue:
    """The store's work queue.

    Raises:
        ConfigError: the store keeps none (it is not one workers can share).
    """
    queue = work_queue(store)
    if queue is None:
        raise ConfigError(
            f"the store {store!r} keeps no work queue; use a data directory, "
            "sqlite:///PATH or postgresql://... for workers"
        )
    return queue


def submit(
    store: Store,
    requirements: str,
    config: WorkflowConfig,
    *,
    workflow_id: str,
    workspace: Path,
    clock: Clock,
) -> WorkflowState:
    """Store a new workflow and queue it for a worker, in one transaction, without running it.

    Raises:
        ConfigError: the store keeps no work queue (``queue_of``).
        StoreError: the workflow cannot be stored (then nothing was: no workflow without
            its queue entry, no entry without a workflow).
    """
    queue_of(store)
    state = new_workflow(workflow_id, requirements, str(workspace), clock.now())
    store.create(state, config, wake=True)
    log.info("workflow.submitted", workflow_id=workflow_id, workspace=str(workspace))
    return state


class Worker:
    """Claims and drives workflows until ``stop`` is set (see the module docstring).

    Args:
        store: the store holding the workflows.
        queue: its work queue (the same store, as a ``WorkQueue``).
        runners: where runners come from.
        settings: concurrency, lease, polling and heartbeat.
        worker_id: the worker's id, also the owner of its leases (default: generated).
        report: receives what the worker does (a terminal display); must not raise.
        clock: the start time reported with the heartbeat.
    """

    def __init__(
        self,
        store: Store,
        queue: WorkQueue,
        runners: RunnerSource,
        *,
        clock: Clock,
        settings: WorkerSettings | None = None,
        worker_id: str | None = None,
        report: Callable[[WorkerEvent], None] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.runners = runners
        self.settings = settings or WorkerSettings()
        self.worker_id = worker_id or default_worker_id()
        self._report = report
        self._beat = WorkerBeat(
            self.worker_id,
            socket.gethostname(),
            os.getpid(),
            clock.now(),
            self.settings.concurrency,
            self.settings.heartbeat_s,
        )

    def _emit(
        self, kind: WorkerEventKind, workflow_id: str | None = None, detail: str = ""
    ) -> None:
        log.info("worker.event", kind=kind.value, worker=self.worker_id, workflow_id=workflow_id)
        if self._report is not None:
            try:
                self._report(WorkerEvent(kind, workflow_id, detail))
            except Exception as exc:  # a broken display must not stop the worker
                log.warning("worker.report.failed", error=repr(exc))

    async def serve(self, stop: asyncio.Event) -> None:
        """Claim and drive workflows until ``stop`` is set, then hand back what it holds."""
        settings = self.settings
        beating = asyncio.create_task(self._beating())
        stopping = asyncio.create_task(stop.wait())
        driving: dict[asyncio.Task[None], Claim] = {}
        waiter: asyncio.Task[bool] | None = None
        # Whether the queue may hold more than the last claim took: a claim is a write
        # transaction, so a run that ends does not start one unless the last claim filled
        # every free slot or the queue has woken (or polled) the worker since.
        more = True
        self._emit(WorkerEventKind.STARTED, detail=f"concurrency {settings.concurrency}")
        try:
            while not stop.is_set():
                free = settings.concurrency - len(driving)
                if free > 0 and more:
                    held = {c.workflow_id for c in driving.values()}
                    claims = await self._claim(free)
                    more = len(claims) >= free
                    for claim in claims:
                        if claim.workflow_id in held:
                            # Its run settled the entry (an answer kept it ready) and
                            # is letting the lease go.
                            await self._release(claim.workflow_id)
                            more = True  # claimed again once that run has settled it
                            continue
                        driving[asyncio.create_task(self._drive(claim))] = claim
                pending: set[asyncio.Future[Any]] = {stopping, *driving}
                if len(driving) < settings.concurrency:
                    if waiter is None:
                        waiter = asyncio.create_task(
                            asyncio.to_thread(self.queue.wait_for_work, settings.poll_s)
                        )
                    pending.add(waiter)
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is waiter:
                        waiter = None
                        more = True
                    elif task in driving:
                        del driving[task]
        finally:
            await self._hand_back(driving)
            beating.cancel()
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.queue.remove_worker, self.worker_id)
            self._emit(WorkerEventKind.STOPPED)

    async def _claim(self, free: int) -> list[Claim]:
        try:
            claims = await asyncio.to_thread(
                self.queue.claim, self.worker_id, self.settings.lease_ttl_s, free
            )
        except StoreError as exc:
            self._emit(WorkerEventKind.STORE_DOWN, detail=str(exc))
            return []
        return claims

    async def _beating(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.queue.beat, self._beat)
            except StoreError as exc:
                log.warning("worker.heartbeat.failed", worker=self.worker_id, error=str(exc))
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _hand_back(self, driving: dict[asyncio.Task[None], Claim]) -> None:
        """Cancel every run, release its lease and wake the queue for another worker."""
        for task in driving:
            task.cancel()
        await asyncio.gather(*driving, return_exceptions=True)
        for claim in driving.values():
            wid = claim.workflow_id
            try:
                await asyncio.to_thread(self.store.release_lease, wid, self.worker_id)
                await asyncio.to_thread(self.queue.enqueue, wid)
            except StoreError as exc:  # its lease expires: another worker takes it then
                log.warning("worker.hand_back.failed", workflow_id=wid, error=str(exc))
            self._emit(WorkerEventKind.HANDED_BACK, wid)

    async def _drive(self, claim: Claim) -> None:
        """Run one claimed workflow to its next gate or its end, then settle its entry."""
        wid = claim.workflow_id
        self._emit(WorkerEventKind.CLAIMED, wid)
        try:
            # Loaded once, under the lease the claim took: the run does not load it again.
            stored = await asyncio.to_thread(self.store.load, wid)
            runner = await self.runners.runner_for(stored.config, self.worker_id)
            state = await runner.run(wid, claimed=stored)
        except ConcurrencyError as exc:
            self._emit(WorkerEventKind.LOST, wid, str(exc))
            return
        except (StoreError, LLMUnavailableError) as exc:
            if isinstance(exc, StoreCorruptError | StoreVersionError):
                await self._park(claim, str(exc))
                return
            self._emit(WorkerEventKind.RETRY, wid, str(exc))
            await self._release(wid)
            await asyncio.sleep(self.settings.poll_s)  # not at once: the outage may last
            return
        except Exception as exc:
            if not isinstance(exc, OrchestratorError):
                log.error("worker.drive.crashed", workflow_id=wid, error=repr(exc))
            await self._park(claim, str(exc) if isinstance(exc, OrchestratorError) else repr(exc))
            return
        finished = state.machine_state in TERMINAL_STATES
        gate = state.waiting_gate
        note = None if gate is None else f"waits at the {gate.value} gate"
        # Settled and released in one transaction: a workflow at its gate is never found
        # ready and free by another worker in between.
        await self._settle(claim, finished=finished, note=note)
        if finished:
            self._emit(WorkerEventKind.FINISHED, wid, state.machine_state.value)
        else:
            self._emit(WorkerEventKind.WAITING, wid, gate.value if gate is not None else "")

    async def _park(self, claim: Claim, detail: str) -> None:
        """Park a workflow that cannot run, with the reason, and let its lease go."""
        await self._settle(claim, finished=False, note=f"cannot run: {detail}")
        self._emit(WorkerEventKind.PARKED, claim.workflow_id, detail)

    async def _settle(self, claim: Claim, *, finished: bool, note: str | None) -> None:
        """Settle the claimed workflow's queue entry and give up its lease, in one write."""
        wid = claim.workflow_id
        try:
            await asyncio.to_thread(
                self.queue.settle,
                wid,
                claim.wakeups,
                finished=finished,
                note=note,
                release=self.worker_id,
            )
        except StoreError as exc:  # it stays ready: the next claim finds where it stands
            log.warning("worker.settle.failed", workflow_id=wid, error=str(exc))
            await self._release(wid)  # nothing was written: at least let the lease go

    async def _release(self, workflow_id: str) -> None:
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(self.store.release_lease, workflow_id, self.worker_id)
