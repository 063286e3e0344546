"""The workflow runner: drives workflows durably from requirements to completion.

For each workflow it holds a lease in the store, then loops: decide (through the
coordinator), **commit the decision before acting on it**, run the step's agent, commit the
step's result or error, and at a gate ask the human (or stop, ``awaiting_human``, so the
process may exit). A step left running by a killed process is recorded as interrupted when
the workflow is resumed, and the decision that follows retries it, logged as such.

Agent failures become step errors for the classifier and the orchestrator to handle;
nothing an agent does crashes the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog

from agents.base import AgentResult, StepAgents, StepContext
from agents.human import Human
from orchestrator import telemetry
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline, log_decision
from orchestrator.deciding.shadow import ShadowBook, calls_recorded
from orchestrator.execution.environments import build_progress
from orchestrator.llm.backoff import Sleep, backoff_delay
from orchestrator.llm.metering import UsageMeter
from orchestrator.repository.git import GitError
from orchestrator.running.activity import ActivityNotes
from orchestrator.running.agent_context import build_step_context
from orchestrator.running.consistency import check_consistency
from orchestrator.running.updates import (
    complete_step,
    fail_step,
    mark_interrupted,
    new_workflow,
    record_answer,
)
from orchestrator.running.workspace_commits import ROUND_STEPS, commit_round, restore
from state.async_store import AsyncStore, SharedAsyncStore
from state.clock import Clock
from state.config import WorkflowConfig
from state.decision import DecisionRecord, RecoveryStrategy
from state.errors import AgentError, ConfigError
from state.reports import CodeChange, PlanDraft
from state.steps import TERMINAL_STATES, Gate
from state.store import (
    ArtifactIn,
    DecisionEntry,
    EventEntry,
    HumanAnswerEntry,
    LedgerEntryIn,
    LedgerKind,
    StepResultEntry,
    Store,
    StoredWorkflow,
)
from state.usage import charge_step
from state.workflow import HumanAnswerKind, StepRecord, StepStatus, WorkflowState

log = structlog.get_logger(__name__)


class ProgressKind(StrEnum):
    """What a progress event reports."""

    DECISION = "decision"  # a decision was taken and committed
    STEP_STARTED = "step_started"
    STEP_PROGRESS = "step_progress"  # the running step says how it goes (``detail``)
    STEP_FINISHED = "step_finished"
    WAITING = "waiting"  # the workflow waits for a human at a gate
    FINISHED = "finished"  # the workflow completed, was rejected or failed
    INTERRUPTED = "interrupted"  # a step left running by a dead process was recorded


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """Something a progress display may show."""

    kind: ProgressKind
    state: WorkflowState
    config: WorkflowConfig
    decision: DecisionRecord | None = None
    step: StepRecord | None = None
    gate: Gate | None = None
    detail: str | None = None
    """A ``step_progress`` event's line: how a project environment's build goes."""


class Observer(Protocol):
    """Receives progress events (a terminal display, a web socket, a test)."""

    def on_event(self, event: ProgressEvent) -> None:
        """Handle one event; must not raise."""
        ...


def default_owner() -> str:
    """An owner id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def default_workflow_id(clock: Clock) -> str:
    """A readable, unique workflow id: ``wf-YYYYMMDD-xxxxxx``."""
    return f"wf-{clock.now():%Y%m%d}-{uuid.uuid4().hex[:6]}"


def artifacts_of(record: StepRecord) -> list[ArtifactIn]:
    """The files a finished step produced: its plan's file, or the code files it wrote."""
    res = record.result
    if isinstance(res, PlanDraft) and res.path:
        return [ArtifactIn(f"plan_v{res.version}", res.path)]
    if isinstance(res, CodeChange):
        return [ArtifactIn("code", path) for path in res.files]
    return []


class _Committer:
    """Commits one workflow's snapshots with their ledger entries, tracking the version.

    A commit can be held (a step's result) and written with the next one (the decision that
    follows it), so a step result and its next decision cost one transaction.
    """

    def __init__(self, store: AsyncStore, workflow_id: str, version: int, owner: str) -> None:
        self.store = store
        self.workflow_id = workflow_id
        self.version = version
        self.owner = owner
        self._held: tuple[WorkflowState, list[LedgerEntryIn], tuple[ArtifactIn, ...]] | None = None
        self._state: WorkflowState | None = None  # the last snapshot committed
        self._lock = asyncio.Lock()  # shadow answers commit from their own tasks

    async def __call__(
        self, state: WorkflowState, *entries: LedgerEntryIn, artifacts: Sequence[ArtifactIn] = ()
    ) -> WorkflowState:
        async with self._lock:
            _, held, held_artifacts = self._held if self._held is not None else (None, [], ())
            self._held = None
            self.version = await self.store.commit(
                self.workflow_id,
                state,
                expected_version=self.version,
                entries=[*held, *entries],
                owner=self.owner,
                artifacts=[*held_artifacts, *artifacts],
            )
            self._state = state
            return state

    async def append(self, entry: LedgerEntryIn) -> None:
        """Commit ``entry`` beside the last committed snapshot (a shadow answer)."""
        async with self._lock:
            if self._state is None:
                raise RuntimeError("nothing committed yet to record the entry beside")
            self.version = await self.store.commit(
                self.workflow_id,
                self._state,
                expected_version=self.version,
                entries=[entry],
                owner=self.owner,
            )

    def hold(
        self, state: WorkflowState, *entries: LedgerEntryIn, artifacts: Sequence[ArtifactIn] = ()
    ) -> None:
        """Keep ``state``, ``entries`` and ``artifacts`` for the next commit (or ``flush``)."""
        assert self._held is None, "one held commit at a time"
        self._held = (state, list(entries), tuple(artifacts))

    async def flush(self) -> None:
        """Commit what is held, now."""
        if self._held is not None:
            state, entries, artifacts = self._held
            self._held = None
            await self(state, *entries, artifacts=artifacts)


def answer_workflow(
    store: Store,
    clock: Clock,
    workflow_id: str,
    gate: Gate | None,
    kind: HumanAnswerKind,
    *,
    by: str,
    changes: Sequence[str] = (),
    comment: str | None = None,
    machine: WorkflowMachine | None = None,
) -> WorkflowState:
    """Record a human answer at the gate the workflow waits at.

    A rejection ends the workflow at once: the reject decision is applied and committed with
    the answer (status ``rejected``). Any other answer is carried out at the workflow's next
    ``run``: the workflow is queued as runnable (``state.queue``), so a worker picks it up,
    or ``orchestrator resume`` runs it.

    Args:
        machine: the shared workflow machine (one is built when not given).

    Raises:
        UnknownWorkflowError, HumanAnswerError: nothing is recorded.
    """
    stored = store.load(workflow_id)
    state = record_answer(
        stored.state, gate, kind, by=by, now=clock.now(), changes=tuple(changes), comment=comment
    )
    answer = state.human_answers[-1]
    entries: list[LedgerEntryIn] = [HumanAnswerEntry(answer)]
    record: DecisionRecord | None = None
    if kind is HumanAnswerKind.REJECT:
        pipeline = DecisionPipeline(machine or WorkflowMachine(), clock)
        state, record = pipeline.decide_by_rule(state, stored.config)
        entries.append(DecisionEntry(record))
    # The answer and its wake-up in one transaction: a worker that claims it sees the
    # answer, and a process that dies after recording it cannot leave it parked.
    store.commit(
        workflow_id,
        state,
        expected_version=stored.version,
        entries=entries,
        owner=None,
        wake=state.machine_state not in TERMINAL_STATES,
    )
    log.info(
        "human.answered", workflow_id=workflow_id, gate=answer.gate.value, answer=kind.value, by=by
    )
    if record is not None:
        log_decision(record, state)
    return state


class WorkflowRunner:
    """Creates, runs, resumes and answers workflows against a store."""

    def __init__(
        self,
        store: Store,
        coordinator: DecisionPipeline,
        agents: StepAgents,
        *,
        clock: Clock,
        owner: str | None = None,
        human: Human | None = None,
        observers: Iterable[Observer] = (),
        lease_ttl_s: float = 60.0,
        new_id: Callable[[], str] | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        views: SharedAsyncStore | None = None,
    ) -> None:
        self.store = store
        # One awaited view for all concurrent runs, so their commits are written together.
        self._views = views or SharedAsyncStore(store)
        if self._views.store is not store:
            raise ValueError("views must be shared over the runner's own store")
        self.coordinator = coordinator
        self.agents = agents
        self.clock = clock
        self.owner = owner or default_owner()
        self.human = human
        self.observers = list(observers)
        self.lease_ttl_s = lease_ttl_s
        self._new_id = new_id or (lambda: default_workflow_id(clock))
        # Waits before backoff retries (tests pass a recorder); jitter needs no crypto.
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311

    def create(
        self,
        requirements: str,
        config: WorkflowConfig,
        *,
        workspace_root: Path,
        workspace: Path | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowState:
        """Record a new workflow (and make its workspace directory)."""
        wid = workflow_id or self._new_id()
        ws = (workspace or workspace_root / wid).resolve()
        ws.mkdir(parents=True, exist_ok=True)
        state = new_workflow(wid, requirements, str(ws), self.clock.now())
        self.store.create(state, config)
        log.info("workflow.created", workflow_id=wid, workspace=str(ws))
        return state

    def answer(
        self,
        workflow_id: str,
        gate: Gate | None,
        kind: HumanAnswerKind,
        *,
        by: str,
        changes: Sequence[str] = (),
        comment: str | None = None,
    ) -> WorkflowState:
        """Record a human answer at the gate the workflow waits at (see ``answer_workflow``)."""
        return answer_workflow(
            self.store,
            self.clock,
            workflow_id,
            gate,
            kind,
            by=by,
            changes=changes,
            comment=comment,
            machine=self.coordinator.machine,
        )

    async def run_many(
        self, workflow_ids: Sequence[str], concurrency: int = 8
    ) -> list[WorkflowState | BaseException]:
        """Run several workflows at once; one failing does not stop the others."""
        limit = asyncio.Semaphore(concurrency)

        async def one(wid: str) -> WorkflowState:
            async with limit:
                return await self.run(wid)

        return list(await asyncio.gather(*(one(w) for w in workflow_ids), return_exceptions=True))

    async def run(
        self, workflow_id: str, *, claimed: StoredWorkflow | None = None
    ) -> WorkflowState:
        """Drive a workflow until it finishes or waits for a human; resumes where it stopped.

        Every store call is awaited through an ``AsyncStore`` that the runner's concurrent
        runs share, so the event loop (other workflows, lease renewals, LLM calls) never
        waits on the store's disk or locks, and commits made at the same time are written
        in one transaction.

        Args:
            workflow_id: the workflow to drive.
            claimed: the workflow as loaded after this runner's owner took its lease (a
                worker's claim takes it): the run then neither takes the lease nor loads
                the workflow again (a commit still fails if the lease was lost since), and
                leaves the lease to its claimant, who releases it after settling the
                workflow's queue entry, so no other worker claims it in between.

        Raises:
            UnknownWorkflowError: no such workflow.
            ConcurrencyError: another live process runs it.
            InconsistentStateError: its stored state breaks the workflow's rules.
        """
        async with self._views.use() as store:
            if claimed is None:
                await store.acquire_lease(workflow_id, self.owner, self.lease_ttl_s)
            renewer = asyncio.create_task(self._renew(store, workflow_id))
            try:
                with structlog.contextvars.bound_contextvars(workflow_id=workflow_id):
                    if not telemetry.enabled():
                        return await self._drive(store, workflow_id, claimed)
                    with telemetry.workflow_span(workflow_id):
                        return await self._drive(store, workflow_id, claimed)
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
                if claimed is None:  # a claimant releases it once it has settled the queue
                    with contextlib.suppress(Exception):  # best effort: leases expire
                        await store.release_lease(workflow_id, self.owner)

    async def _renew(self, store: AsyncStore, workflow_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            try:
                await store.renew_lease(workflow_id, self.owner, self.lease_ttl_s)
            except Exception as exc:  # a lost lease shows up at the next commit
                log.warning("lease.renew.failed", workflow_id=workflow_id, error=str(exc))

    async def _drive(
        self, store: AsyncStore, wid: str, claimed: StoredWorkflow | None
    ) -> WorkflowState:
        stored = claimed if claimed is not None else await store.load(wid)
        state, config = stored.state, stored.config
        check_consistency(state, config)
        commit = _Committer(store, wid, stored.version, self.owner)
        shadow = None
        if config.shadow.enabled:  # its call budget counts the shadow calls of earlier runs
            earlier = await store.ledger(wid, kinds=(LedgerKind.SHADOW,))
            shadow = self.coordinator.shadow_book(config, commit.append, calls_recorded(earlier))
        try:
            return await self._loop(store, wid, state, config, commit, shadow)
        finally:
            if shadow is not None:
                await shadow.close()

    async def _loop(
        self,
        store: AsyncStore,
        wid: str,
        state: WorkflowState,
        config: WorkflowConfig,
        commit: _Committer,
        shadow: ShadowBook | None,
    ) -> WorkflowState:

        rec = state.last_record
        if rec is not None and rec.status is StepStatus.RUNNING:
            # The process that ran this step died: record that, so the retry is logged.
            state = mark_interrupted(state, self.clock.now())
            failed = state.history[-1]
            event = EventEntry(
                "step_interrupted", {"step": int(failed.step), "attempt": failed.attempt}
            )
            state = await commit(state, StepResultEntry(failed), event)
            log.warning("step.interrupted", step=int(failed.step), attempt=failed.attempt)
            self._emit(ProgressEvent(ProgressKind.INTERRUPTED, state, config, step=failed))
        restored = await restore(state, config)  # --repo: back to the last recorded commit
        if restored is not None:
            state = await commit(state, restored)
        notes = ActivityNotes(store, wid, self.owner)  # each step's, cleared as it ends

        while state.machine_state not in TERMINAL_STATES:
            gate = state.waiting_gate
            if gate is not None:
                answer = await self.human.ask(state, gate) if self.human else None
                if answer is None:
                    self._emit(ProgressEvent(ProgressKind.WAITING, state, config, gate=gate))
                    return state
                state = record_answer(
                    state,
                    gate,
                    answer.answer,
                    by=answer.by,
                    now=self.clock.now(),
                    changes=answer.changes,
                    comment=answer.comment,
                )
                entry = HumanAnswerEntry(state.human_answers[-1])
                if answer.answer is HumanAnswerKind.REJECT:
                    # A rejection ends the workflow at once: committed with its decision.
                    commit.hold(state, entry)
                else:
                    state = await commit(state, entry)
                continue
            state, record = await self._decide(state, config, commit, shadow)
            self._emit(ProgressEvent(ProgressKind.DECISION, state, config, decision=record))
            running = state.last_record
            if running is None or running.status is not StepStatus.RUNNING:
                continue
            self._emit(
                ProgressEvent(
                    ProgressKind.STEP_STARTED, state, config, decision=record, step=running
                )
            )
            state, waited = await self._run_step(state, config, record, notes)
            done = state.history[-1]
            # Committed together with the next decision, microseconds from now, unless that
            # decision must wait for an LLM: then it is committed first (see _decide).
            # The step's files are recorded by that commit too, under the lease: a worker
            # that lost it records none, and a crash before it leaves none listed.
            commit.hold(state, StepResultEntry(done), *waited, artifacts=artifacts_of(done))
            self._emit(ProgressEvent(ProgressKind.STEP_FINISHED, state, config, step=done))
        self._emit(ProgressEvent(ProgressKind.FINISHED, state, config))
        return state

    async def _decide(
        self,
        state: WorkflowState,
        config: WorkflowConfig,
        commit: _Committer,
        shadow: ShadowBook | None = None,
    ) -> tuple[WorkflowState, DecisionRecord]:
        """Decide and commit the decision before its action starts (with any held result).

        A held step result is committed before an LLM is consulted (the pipeline awaits
        ``flush`` then), so a long or failing call cannot lose it.
        """
        try:
            state, record = await self.coordinator.decide(state, config, commit.flush, shadow)
        except BaseException:
            await commit.flush()  # a finished step's result is never lost
            raise
        return await commit(state, DecisionEntry(record)), record

    async def _run_step(
        self,
        state: WorkflowState,
        config: WorkflowConfig,
        record: DecisionRecord,
        notes: ActivityNotes,
    ) -> tuple[WorkflowState, list[EventEntry]]:
        """Run the step, its LLM calls charged to the workflow; any backoff wait as an event."""
        meter = UsageMeter(state, config.llm)
        waited: list[EventEntry] = []
        if not telemetry.enabled():
            done = await self._attempt(state, config, record, meter, waited, notes)
        else:
            with telemetry.step_span(state.workflow_id, state.history[-1]) as span:
                done = await self._attempt(state, config, record, meter, waited, notes)
                telemetry.describe_step(span, done.history[-1])
        return charge_step(done, meter.usage, meter.charged(done.counters)), waited

    async def _attempt(
        self,
        state: WorkflowState,
        config: WorkflowConfig,
        record: DecisionRecord,
        meter: UsageMeter,
        waited: list[EventEntry],
        notes: ActivityNotes,
    ) -> WorkflowState:
        rec = state.history[-1]
        try:
            ctx = replace(build_step_context(state, config, record.decision), meter=meter)
            if ctx.recovery_strategy is RecoveryStrategy.BACKOFF:
                waited.append(await self._back_off(ctx, config))
            if rec.step in ROUND_STEPS:  # --repo: a failed attempt's writes do not linger
                restored = await self._restore(state, config)
                waited.extend([restored] if restored is not None else [])
            result = await self._run_agent(ctx, state, config, notes)
            if isinstance(result, PlanDraft | CodeChange):
                result = await self._commit_round(state, config, result)
            return complete_step(state, result, self.clock.now())
        except AgentError as exc:
            log.warning(
                "step.failed",
                step=int(rec.step),
                attempt=rec.attempt,
                error_type=exc.error_type,
                error=str(exc),
            )
            return fail_step(
                state, exc.error_type, str(exc), self.clock.now(), retryable=exc.retryable
            )
        except Exception as exc:  # an agent bug must not crash the runner
            log.error("step.crashed", step=int(rec.step), error=repr(exc))
            return fail_step(state, "internal_error", repr(exc), self.clock.now(), retryable=False)

    async def _run_agent(
        self, ctx: StepContext, state: WorkflowState, config: WorkflowConfig, notes: ActivityNotes
    ) -> AgentResult:
        """Run the step's agent; a project environment's build it waits for is reported.

        Each line of the build goes to the observers and, as the lease's activity note, to
        whoever watches the store (the console, ``orchestrator status``).
        """
        running = state.history[-1]

        def report(line: str) -> None:
            notes.say(line)
            if self.observers:
                event = ProgressEvent(
                    ProgressKind.STEP_PROGRESS, state, config, step=running, detail=line
                )
                self._emit(event)

        token = build_progress.set(report)
        try:
            async with notes.step():
                return await self.agents.run(ctx)
        finally:
            build_progress.reset(token)

    async def _restore(self, state: WorkflowState, config: WorkflowConfig) -> EventEntry | None:
        try:
            return await restore(state, config)
        except GitError as exc:
            raise AgentError(
                f"workflow {state.workflow_id}: {exc}", error_type="workspace_error"
            ) from exc

    async def _commit_round(
        self, state: WorkflowState, config: WorkflowConfig, result: PlanDraft | CodeChange
    ) -> PlanDraft | CodeChange:
        """In a ``--repo`` workflow, the round's commit (its sha kept in the result)."""
        try:
            return await commit_round(state, config, result)
        except (GitError, ConfigError) as exc:
            raise AgentError(
                f"workflow {state.workflow_id}: the round's commit failed ({exc}); check the "
                f"worktree {config.repository.worktree}",
                error_type="workspace_error",
            ) from exc

    async def _back_off(self, ctx: StepContext, config: WorkflowConfig) -> EventEntry:
        """Wait before a ``backoff`` retry: exponential in the failures so far, jittered."""
        limits = config.limits
        delay = backoff_delay(
            ctx.attempt - 1, limits.backoff_base_s, limits.backoff_max_s, self._rng
        )
        log.info("step.backoff", step=int(ctx.step), attempt=ctx.attempt, delay_s=round(delay, 3))
        await self._sleep(delay)
        return EventEntry(
            "step_backoff", {"step": int(ctx.step), "attempt": ctx.attempt, "waited_s": delay}
        )

    def _emit(self, event: ProgressEvent) -> None:
        for observer in self.observers:
            try:
                observer.on_event(event)
            except Exception as exc:  # a broken display must not stop the workflow
                log.warning("observer.failed", error=repr(exc))
