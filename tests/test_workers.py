"""The work queue on every backend, and a worker driving queued workflows in this process.

The queue contract runs on each backend of the store contract (``BACKENDS``: SQLite,
memory, and PostgreSQL where a server can be started). The worker tests drive real
workflows through the real runner, agents and SQLite store with the scripted world
answering every LLM call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_store_contract import BACKENDS, ManualClock, StoreFactory

from agents.base import StepAgents
from agents.planner import PlannerAgent
from agents.programmer import ProgrammerAgent
from agents.validator import ValidatorAgent
from orchestrator.cli import cli
from orchestrator.composition import build_coordinator, open_store
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.runner import WorkflowRunner, answer_workflow
from orchestrator.running.updates import new_workflow
from orchestrator.running.worker import Worker, WorkerEvent, WorkerEventKind, WorkerSettings
from prompt_templates.loader import TemplateLoader
from state.clock import SystemClock
from state.config import Coordinator, WorkflowConfig
from state.errors import ConcurrencyError, StoreError
from state.queue import QueueStatus, WorkerBeat, WorkQueue, work_queue
from state.steps import Gate, MachineState
from state.store import EventEntry, LedgerKind, Store
from state.workflow import HumanAnswerKind

from support.world import GOOD_PLAN, World

CONFIG = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=sorted(BACKENDS))
def opener(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[StoreFactory]:
    make = BACKENDS[request.param](request, tmp_path, clock)
    opened: list[Store] = []

    def factory() -> Store:
        store = make()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def queue_of(store: Store) -> WorkQueue:
    queue = work_queue(store)
    assert queue is not None
    return queue


def add(store: Store, wid: str, clock: ManualClock) -> None:
    store.create(new_workflow(wid, "fill missing values", "ws", clock.now()), CONFIG)


def test_claims_never_overlap(opener: StoreFactory, clock: ManualClock) -> None:
    """Two handles claiming at once get different workflows, the oldest-queued first."""
    first, second = opener(), opener()
    for i in range(5):
        add(first, f"wf-{i}", clock)
        queue_of(first).enqueue(f"wf-{i}")
        clock.advance(1)
    a = queue_of(first).claim("worker-a", 30, 3)
    b = queue_of(second).claim("worker-b", 30, 3)
    assert [c.workflow_id for c in a] == ["wf-0", "wf-1", "wf-2"]
    assert [c.workflow_id for c in b] == ["wf-3", "wf-4"]
    assert queue_of(first).claim("worker-c", 30, 3) == []
    lease = second.lease("wf-3")
    assert lease is not None and lease.owner == "worker-b"


def test_an_expired_lease_makes_an_orphan(opener: StoreFactory, clock: ManualClock) -> None:
    """A ready workflow whose holder stopped renewing is claimed once the lease expires."""
    store = opener()
    add(store, "wf-1", clock)
    queue_of(store).enqueue("wf-1")
    [claim] = queue_of(store).claim("worker-a", 10, 1)
    assert queue_of(store).claim("worker-b", 10, 1) == []
    clock.advance(11)
    [taken] = queue_of(store).claim("worker-b", 10, 1)
    assert taken.workflow_id == claim.workflow_id == "wf-1"
    assert taken.lease.owner == "worker-b"


def test_an_answer_while_driving_keeps_the_workflow_ready(
    opener: StoreFactory, clock: ManualClock
) -> None:
    """Parking is refused when the workflow was woken since its claim; finishing removes it."""
    store = opener()
    queue = queue_of(store)
    add(store, "wf-1", clock)
    queue.enqueue("wf-1")
    [claim] = queue.claim("worker-a", 10, 1)
    queue.enqueue("wf-1")  # an answer arrived while the worker was finishing
    assert not queue.settle("wf-1", claim.wakeups, finished=False, note="waits")
    assert [e.status for e in queue.queued()] == [QueueStatus.READY]
    store.release_lease("wf-1", "worker-a")
    [again] = queue.claim("worker-a", 10, 1)
    assert queue.settle("wf-1", again.wakeups, finished=False, note="waits at the plan gate")
    [parked] = queue.queued()
    assert parked.status is QueueStatus.PARKED and parked.note == "waits at the plan gate"
    assert queue.claim("worker-b", 10, 1) == []  # a parked workflow is nobody's work
    queue.enqueue("wf-1")
    assert queue.settle("wf-1", 0, finished=True)
    assert queue.queued() == []


def test_a_commit_that_wakes_queues_the_workflow_with_it(
    opener: StoreFactory, clock: ManualClock
) -> None:
    """commit(wake=True) records and wakes in one transaction; a refused one does neither."""
    store = opener()
    queue = queue_of(store)
    add(store, "wf-1", clock)
    stored = store.load("wf-1")
    queue.enqueue("wf-1")
    [claim] = queue.claim("worker-a", 10, 1)
    assert queue.settle("wf-1", claim.wakeups, finished=False, note="waits at the plan gate")
    store.release_lease("wf-1", "worker-a")
    clock.advance(1)
    event = EventEntry("note", {"n": 1})
    version = store.commit(
        "wf-1", stored.state, expected_version=stored.version, entries=[event], owner=None,
        wake=True,
    )  # fmt: skip
    [entry] = queue.queued()
    assert (entry.status, entry.wakeups, entry.note) == (QueueStatus.READY, 2, None)
    assert queue.settle("wf-1", entry.wakeups, finished=False, note="waits again")
    with pytest.raises(ConcurrencyError):
        store.commit("wf-1", stored.state, expected_version=version - 1, owner=None, wake=True)
    [still] = queue.queued()
    assert still.status is QueueStatus.PARKED and still.wakeups == 2
    assert [e.kind for e in store.ledger("wf-1")] == [LedgerKind.EVENT]


def test_settling_can_release_the_lease_with_it(opener: StoreFactory, clock: ManualClock) -> None:
    """settle(release=owner) gives up that owner's lease whether it parks the entry or not."""
    store = opener()
    queue = queue_of(store)
    for wid in ("wf-1", "wf-2", "wf-3"):
        add(store, wid, clock)
        queue.enqueue(wid)
    claims = {c.workflow_id: c for c in queue.claim("worker-a", 60, 3)}
    assert queue.settle(
        "wf-1", claims["wf-1"].wakeups, finished=False, note="w", release="worker-a"
    )
    queue.enqueue("wf-2")  # answered since its claim: it stays ready, the lease goes anyway
    assert not queue.settle("wf-2", claims["wf-2"].wakeups, finished=False, release="worker-a")
    assert queue.settle("wf-3", claims["wf-3"].wakeups, finished=True, release="worker-b")
    assert store.lease("wf-1") is None and store.lease("wf-2") is None
    held = store.lease("wf-3")  # another owner's name releases nothing
    assert held is not None and held.owner == "worker-a"
    status = {e.workflow_id: e.status for e in queue.queued()}
    assert status == {"wf-1": QueueStatus.PARKED, "wf-2": QueueStatus.READY}
    [again] = queue.claim("worker-c", 60, 1)
    assert again.workflow_id == "wf-2"


def test_a_created_workflow_that_wakes_is_queued_with_it(
    opener: StoreFactory, clock: ManualClock
) -> None:
    """create(wake=True) stores and queues in one transaction; a refused one does neither."""
    store = opener()
    queue = queue_of(store)
    state = new_workflow("wf-1", "fill missing values", "ws", clock.now())
    assert store.create(state, CONFIG, wake=True) == 1
    [entry] = queue.queued()
    assert (entry.workflow_id, entry.status, entry.wakeups) == ("wf-1", QueueStatus.READY, 1)
    [claim] = queue.claim("worker-a", 10, 1)
    assert queue.settle("wf-1", claim.wakeups, finished=False, note="waits at the plan gate")
    with pytest.raises(StoreError, match="already exists"):
        store.create(state, CONFIG, wake=True)
    [still] = queue.queued()
    assert (still.status, still.wakeups) == (QueueStatus.PARKED, 1)
    add(store, "wf-2", clock)  # without wake: stored, not queued
    assert [e.workflow_id for e in queue.queued()] == ["wf-1"]


def test_heartbeats_and_holdings(opener: StoreFactory, clock: ManualClock) -> None:
    """Workers are listed with the leases they own and go stale after three missed beats."""
    store = opener()
    queue = queue_of(store)
    add(store, "wf-1", clock)
    queue.enqueue("wf-1")
    beat = WorkerBeat("worker-a", "host-1", 42, clock.now(), 4, 10.0)
    queue.beat(beat)
    queue.claim("worker-a", 60, 1)
    [info] = queue.workers()
    assert info.beat == beat and info.holding == ("wf-1",)
    assert not info.is_stale(clock.now())
    clock.advance(31)
    assert info.is_stale(clock.now())
    queue.beat(beat)
    assert not queue.workers()[0].is_stale(clock.now())
    queue.remove_worker("worker-a")
    assert queue.workers() == []


def test_enqueue_refuses_an_unknown_workflow(opener: StoreFactory) -> None:
    """Queuing an id the store does not hold fails with the store's own message."""
    store = opener()
    with pytest.raises(Exception, match="no workflow with id 'wf-none'"):
        queue_of(store).enqueue("wf-none")


def test_wait_for_work_wakes_on_enqueue(opener: StoreFactory, clock: ManualClock) -> None:
    """An idle worker's wait ends when a workflow is queued (or on its timeout)."""
    store = opener()
    add(store, "wf-1", clock)
    queue = queue_of(store)
    assert queue.wait_for_work(0.05) is False
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(queue.wait_for_work(10)))
    waiter.start()
    time.sleep(0.3)
    queue.enqueue("wf-1")
    waiter.join(10)
    assert woke == [True]


# -- a worker in this process ------------------------------------------------------------


class ScriptedRunners:
    """Runners on the scripted world, the agents and the real sandbox (the CLI's source)."""

    def __init__(self, store: Store, world: World) -> None:
        self.store = store
        self.model = ScriptedChatModel(responder=world)

    async def runner_for(self, config: WorkflowConfig, owner: str) -> WorkflowRunner:
        templates = TemplateLoader()
        agents = StepAgents(
            planner=PlannerAgent(self.model, templates),
            validator=ValidatorAgent(
                self.model, templates, sandbox=Sandbox(SandboxLimits(wall_timeout_s=60))
            ),
            programmer=ProgrammerAgent(self.model, templates),
        )
        return WorkflowRunner(
            self.store, build_coordinator(self.model), agents, clock=SystemClock(), owner=owner
        )


async def serve_until(worker: Worker, done: asyncio.Event) -> None:
    stop = asyncio.Event()
    serving = asyncio.create_task(worker.serve(stop))
    try:
        await asyncio.wait_for(done.wait(), 120)
    finally:
        stop.set()
        await serving


def test_a_worker_parks_at_gates_and_wakes_on_answers(tmp_path: Path) -> None:
    """Submitted workflows run to their gate, park, and run on once answered."""
    world = World(plan_reports=[GOOD_PLAN])
    events: list[WorkerEvent] = []
    with open_store(tmp_path / "data") as store:
        queue = queue_of(store)
        clock = SystemClock()
        for i in range(3):
            store.create(
                new_workflow(
                    f"wf-{i}", "fill missing values", str(tmp_path / f"ws{i}"), clock.now()
                ),
                CONFIG,
            )
            (tmp_path / f"ws{i}").mkdir()
            queue.enqueue(f"wf-{i}")

        async def scenario() -> None:
            waiting = asyncio.Event()

            answered: list[str] = []

            def report(event: WorkerEvent) -> None:
                events.append(event)
                if event.kind is not WorkerEventKind.WAITING:
                    return
                at_gates = {e.workflow_id for e in events if e.kind is WorkerEventKind.WAITING}
                if len(at_gates) == 3 and not answered:
                    answer_workflow(
                        store, clock, "wf-1", Gate.PLAN, HumanAnswerKind.APPROVE, by="al"
                    )
                    answered.append("wf-1")
                elif (
                    answered
                    and event.workflow_id == "wf-1"
                    and store.load("wf-1").state.waiting_gate is Gate.FINAL
                ):
                    waiting.set()  # wf-1 came to its next gate after its answer

            worker = Worker(
                store,
                queue,
                ScriptedRunners(store, world),
                clock=clock,
                settings=WorkerSettings(concurrency=2, poll_s=0.2, heartbeat_s=0.5),
                report=report,
            )
            await serve_until(worker, waiting)

        asyncio.run(scenario())
        states = {f"wf-{i}": store.load(f"wf-{i}").state for i in range(3)}
        entries = {e.workflow_id: e for e in queue.queued()}
        workers_left = queue.workers()
    assert states["wf-0"].waiting_gate is Gate.PLAN
    assert states["wf-1"].waiting_gate is Gate.FINAL  # approved, coded, validated
    assert states["wf-2"].waiting_gate is Gate.PLAN
    assert {e.status for e in entries.values()} == {QueueStatus.PARKED}
    assert entries["wf-1"].note == "waits at the final gate"
    assert events[0].kind is WorkerEventKind.STARTED
    assert events[-1].kind is WorkerEventKind.STOPPED
    assert workers_left == []  # a worker that stopped unregisters


class LeaseWatcher:
    """The real store and its queue, noting how each workflow's lease went."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.released: list[str] = []  # release_lease calls of their own
        self.settled: list[tuple[str, str | None]] = []  # settles, with the owner released

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def release_lease(self, workflow_id: str, owner: str) -> bool:
        self.released.append(workflow_id)
        return self.inner.release_lease(workflow_id, owner)

    def settle(self, workflow_id: str, wakeups: int, **kwargs: Any) -> bool:
        self.settled.append((workflow_id, kwargs.get("release")))
        return queue_of(self.inner).settle(workflow_id, wakeups, **kwargs)


def test_a_workflow_is_parked_in_the_write_that_lets_its_lease_go(tmp_path: Path) -> None:
    """Parked and released at once: no other worker claims a workflow at its gate.

    Released first, then parked, a second worker could find it ready and free between the
    two, run it only to find it at its gate, and park it again: 40% more runs at 1,000 in
    flight (bench/workers.py).
    """
    with open_store(tmp_path / "data") as real:
        store = LeaseWatcher(real)
        queue = queue_of(real)
        clock = SystemClock()
        for i in range(3):
            (tmp_path / f"ws{i}").mkdir()
            real.create(
                new_workflow(f"wf-{i}", "fill", str(tmp_path / f"ws{i}"), clock.now()), CONFIG
            )
            queue.enqueue(f"wf-{i}")
        world = World(plan_reports=[GOOD_PLAN])

        async def scenario() -> None:
            parked: set[str] = set()
            done = asyncio.Event()

            def report(event: WorkerEvent) -> None:
                if event.kind is WorkerEventKind.WAITING and event.workflow_id is not None:
                    parked.add(event.workflow_id)
                    if len(parked) == 3:
                        done.set()

            worker = Worker(
                store,  # type: ignore[arg-type]
                store,  # type: ignore[arg-type]
                ScriptedRunners(store, world),  # type: ignore[arg-type]
                clock=clock,
                settings=WorkerSettings(concurrency=3, poll_s=0.2),
                report=report,
            )
            await serve_until(worker, done)

        asyncio.run(scenario())
        assert [e.status for e in queue.queued()] == [QueueStatus.PARKED] * 3
        assert all(real.lease(f"wf-{i}") is None for i in range(3))
    owner = {owner for _, owner in store.settled}
    assert sorted(w for w, _ in store.settled) == [f"wf-{i}" for i in range(3)]
    assert len(owner) == 1 and None not in owner
    assert store.released == []  # no separate write that could come first


def test_a_rejected_workflow_leaves_the_queue(tmp_path: Path) -> None:
    """A rejection ends the workflow at once: nothing is queued for it any more."""
    with open_store(tmp_path / "data") as store:
        clock = SystemClock()
        queue = queue_of(store)
        store.create(new_workflow("wf-1", "fill", str(tmp_path), clock.now()), CONFIG)
        queue.enqueue("wf-1")
        world = World(plan_reports=[GOOD_PLAN])

        async def scenario() -> None:
            parked = asyncio.Event()
            worker = Worker(
                store,
                queue,
                ScriptedRunners(store, world),
                clock=clock,
                settings=WorkerSettings(concurrency=1, poll_s=0.2),
                report=lambda e: parked.set() if e.kind is WorkerEventKind.WAITING else None,
            )
            await serve_until(worker, parked)

        asyncio.run(scenario())
        answer_workflow(store, clock, "wf-1", Gate.PLAN, HumanAnswerKind.REJECT, by="al")
        assert store.load("wf-1").state.machine_state is MachineState.REJECTED
        assert [e.status for e in queue.queued()] == [QueueStatus.PARKED]  # never woken


def test_submit_queues_and_workers_lists(tmp_path: Path) -> None:
    """``submit`` prints the id of a queued, unstarted workflow; ``workers`` shows the queue."""
    env = {"ORCHESTRATOR_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "config.yaml").write_text("coordinator: programmatic\n")
    runner = CliRunner()
    done = runner.invoke(
        cli,
        [
            "submit",
            "-r",
            "fill missing values",
            "--id",
            "wf-sub",
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        env=env,
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "wf-sub"
    with open_store(tmp_path / "data") as store:
        assert store.load("wf-sub").state.decisions == ()
        assert [e.workflow_id for e in queue_of(store).queued()] == ["wf-sub"]
        queue_of(store).beat(WorkerBeat("worker-x", "h", 1, SystemClock().now(), 2, 10.0))
        store.acquire_lease("wf-sub", "worker-x", 60)
        store.note_activity("wf-sub", "worker-x", "building the project environment")
    listed = runner.invoke(cli, ["workers"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert "worker-x" in listed.stdout and "ok" in listed.stdout
    assert "wf-sub (worker-x): building the project environment (0s ago)" in listed.stdout
    assert "queue: 1 ready, 0 parked" in listed.stdout
    again = runner.invoke(cli, ["submit", "-r", "x", "--id", "wf-sub"], env=env)
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_workflow_that_cannot_run_is_parked_with_the_reason(tmp_path: Path) -> None:
    """A stored state that breaks the rules is parked with why, not retried in a loop."""
    with open_store(tmp_path / "data") as store:
        clock = SystemClock()
        queue = queue_of(store)
        broken = new_workflow("wf-bad", "fill", str(tmp_path), clock.now()).model_copy(
            update={"phase": 2}
        )
        store.create(broken, CONFIG)
        queue.enqueue("wf-bad")

        async def scenario() -> None:
            parked = asyncio.Event()
            worker = Worker(
                store,
                queue,
                ScriptedRunners(store, World()),
                clock=clock,
                settings=WorkerSettings(concurrency=1, poll_s=0.2),
                report=lambda e: parked.set() if e.kind is WorkerEventKind.PARKED else None,
            )
            await serve_until(worker, parked)

        asyncio.run(scenario())
        [entry] = queue.queued()
        assert entry.status is QueueStatus.PARKED
        assert entry.note is not None and entry.note.startswith("cannot run: ")
        assert "phase" in entry.note
        assert store.lease("wf-bad") is None
