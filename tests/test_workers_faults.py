"""Real worker processes against the session's PostgreSQL: killed, cut off, stopped.

Each test starts ``python -m orchestrator worker`` processes on a fresh database, with the
LLM a loopback OpenAI-compatible server in this test process (the scripted world, slowed
down per purpose so that a worker can be hit in the middle of a step). Workflows are
submitted through the library's ``submit`` and run to the plan gate; the checks read the
store: nothing decided is lost, no completed step runs again, every workflow gets there.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_crash_resume import SlowWorld

from orchestrator.composition import open_store
from orchestrator.running.consistency import find_inconsistency
from orchestrator.running.runner import answer_workflow, artifacts_of
from orchestrator.running.worker import submit
from state.clock import SystemClock
from state.config import Coordinator, WorkflowConfig
from state.queue import QueueStatus, WorkQueue, work_queue
from state.steps import Gate
from state.store import DecisionEntry, StepResultEntry, Store
from state.workflow import HumanAnswerKind, StepStatus

from support.fake_openai import FakeOpenAIServer
from support.postgres import PostgresServer
from support.world import GOOD_PLAN, World

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)
STEP1, STEP2 = "step1_initial_planner", "step2_plan_validator"


@pytest.fixture
def world() -> SlowWorld:
    return SlowWorld(World(plan_reports=[GOOD_PLAN]))


@pytest.fixture
def server(world: SlowWorld) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=world) as srv:
        yield srv


@pytest.fixture
def env(server: FakeOpenAIServer, postgres_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ORCHESTRATOR_"))},
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
        "ORCHESTRATOR_STORE": postgres_url,
        "NO_COLOR": "1",
    }


class Pool:
    """The worker processes of one test, each writing its lines to a file of its own."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = env
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *flags: str) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "worker", "--lease-ttl", "3",
                 "--poll", "0.3", "--heartbeat", "0.5", *flags],
                env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[self.procs.index(proc)].read_text(errors="replace")

    def wait_output(self, proc: subprocess.Popen[bytes], marker: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output(proc)
            if marker in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"never saw {marker!r}; output:\n{self.output(proc)}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def pool(env: dict[str, str], tmp_path: Path) -> Iterator[Pool]:
    workers = Pool(env, tmp_path)
    try:
        yield workers
    finally:
        workers.close()


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    with open_store(postgres_url) as s:
        yield s


def queue_of(store: Store) -> WorkQueue:
    queue = work_queue(store)
    assert queue is not None
    return queue


def submit_many(store: Store, tmp_path: Path, count: int) -> list[str]:
    ids = []
    for i in range(count):
        wid = f"wf-{i}"
        workspace = tmp_path / "ws" / wid
        workspace.mkdir(parents=True)
        submit(
            store,
            "fill missing values",
            CONFIG,
            workflow_id=wid,
            workspace=workspace,
            clock=SystemClock(),
        )
        ids.append(wid)
    return ids


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting until {what}")


def all_parked(store: Store, ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        entries = queue_of(store).queued()
        return len(entries) == len(ids) and all(e.status is QueueStatus.PARKED for e in entries)

    return check


def running_step(store: Store, wid: str, step: int) -> Callable[[], bool]:
    """Whether ``wid``'s last recorded step is ``step``, marked running (its call is out)."""

    def check() -> bool:
        rec = store.load(wid).state.last_record
        return rec is not None and rec.step.value == step and rec.status is StepStatus.RUNNING

    return check


def check_invariants(store: Store, wid: str) -> None:
    """Nothing lost, nothing run twice, the ledger and the snapshot agree, at the plan gate."""
    stored = store.load(wid)
    state = stored.state
    ledger = store.ledger(wid)
    assert find_inconsistency(state, stored.config) is None
    assert state.waiting_gate is Gate.PLAN, wid
    decisions = [e.content.record for e in ledger if isinstance(e.content, DecisionEntry)]
    assert decisions == list(state.decisions)
    assert [d.seq for d in decisions] == list(range(1, len(decisions) + 1))
    results = [e.content.record for e in ledger if isinstance(e.content, StepResultEntry)]
    completed = [(r.step, r.attempt) for r in results if r.status is StepStatus.COMPLETED]
    assert len(completed) == len(set(completed)), f"{wid}: a result applied twice"
    for prev, rec in zip(state.history, state.history[1:], strict=False):
        if rec.step is prev.step and prev.status is StepStatus.COMPLETED:
            raise AssertionError(f"{wid}: step {rec.step} ran again after completing")
    # A step's files are recorded by the commit of its result (so at that entry's time),
    # never by a write of their own that a worker past its lease could still make.
    produced = {
        (a.kind, a.path): e.recorded_at
        for e in ledger
        if isinstance(e.content, StepResultEntry)
        for a in artifacts_of(e.content.record)
    }
    listed = {(a.kind, a.path): a.recorded_at for a in store.artifacts(wid)}
    assert listed == produced, f"{wid}: artifacts recorded outside their step's commit"


def test_workers_killed_at_random_points(
    pool: Pool, store: Store, tmp_path: Path, world: SlowWorld
) -> None:
    """SIGKILLed workers lose nothing: their orphans are taken over and every workflow ends."""
    world.slow = {STEP1: 0.6, STEP2: 0.6}
    ids = submit_many(store, tmp_path, 6)
    alive = [pool.start("-c", "2"), pool.start("-c", "2")]
    rng = random.Random(14)
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.0))
        victim = alive.pop(rng.randrange(len(alive)))
        victim.kill()
        victim.wait(timeout=10)
        alive.append(pool.start("-c", "2"))
    wait_until(all_parked(store, ids), "every workflow waits at its gate")
    for wid in ids:
        check_invariants(store, wid)
    # The survivors still serve and are listed healthy; the killed ones show as stale.
    assert {p.pid for p in alive} <= {i.beat.pid for i in queue_of(store).workers()}
    time.sleep(1.6)  # more than three heartbeats
    now = SystemClock().now()
    infos = {i.beat.pid: i for i in queue_of(store).workers()}
    stale = {pid for pid, info in infos.items() if info.is_stale(now)}
    # A worker killed before its first heartbeat never registered.
    assert stale == {p.pid for p in pool.procs if p not in alive} & set(infos)
    assert stale.isdisjoint(p.pid for p in alive)


def test_the_database_restarts_under_running_workers(
    pool: Pool,
    store: Store,
    tmp_path: Path,
    world: SlowWorld,
    postgres_server: PostgresServer,
) -> None:
    """A restarted PostgreSQL cuts every session; the workers reconnect and finish the work."""
    world.slow = {STEP1: 1.0, STEP2: 1.0}
    ids = submit_many(store, tmp_path, 4)
    workers = [pool.start("-c", "2"), pool.start("-c", "2")]
    for proc in workers:
        pool.wait_output(proc, "claimed")
    postgres_server.restart()
    wait_until(all_parked(store, ids), "every workflow waits at its gate after the restart")
    for wid in ids:
        check_invariants(store, wid)
    assert all(proc.poll() is None for proc in workers), "a worker died with the database"
    # They go on serving: an answer wakes one of them through LISTEN/NOTIFY again.
    world.slow = {}
    answer_workflow(store, SystemClock(), "wf-0", Gate.PLAN, HumanAnswerKind.APPROVE, by="al")
    before = len(store.load("wf-0").state.decisions)
    wait_until(
        lambda: (
            store.load("wf-0").state.waiting_gate not in (Gate.PLAN, None)
            and len(store.load("wf-0").state.decisions) > before
        ),
        "a worker drives wf-0 on past its plan gate",
    )


def test_a_worker_cut_off_past_its_lease_writes_nothing(
    pool: Pool, store: Store, tmp_path: Path, world: SlowWorld
) -> None:
    """SIGSTOPped past its lease, a worker's late writes are refused; nothing applies twice."""
    world.slow = {STEP1: 4.0}
    [wid] = submit_many(store, tmp_path, 1)
    stalled = pool.start("-c", "1")
    pool.wait_output(stalled, "claimed")
    # Inside its slow planner call. Not a fixed sleep: a worker's first claim also imports
    # the LLM client, which takes a second or more on a loaded machine.
    wait_until(running_step(store, wid, 1), "the planner step is marked running")
    time.sleep(0.5)
    stalled.send_signal(signal.SIGSTOP)
    world.slow = {}
    other = pool.start("-c", "1")
    pool.wait_output(other, f"waiting {wid}", timeout=60)  # took over after the lease (3 s)
    stalled.send_signal(signal.SIGCONT)
    text = pool.wait_output(stalled, f"lost {wid}", timeout=30)
    assert "nothing was written" in text
    check_invariants(store, wid)
    state = store.load(wid).state
    step1 = [r for r in state.history if r.step.value == 1]
    assert [r.status for r in step1] == [StepStatus.FAILED, StepStatus.COMPLETED]
    assert step1[0].error is not None and step1[0].error.type == "interrupted"
    assert stalled.poll() is None  # it carries on serving


def test_sigterm_hands_the_workflow_back_at_once(
    pool: Pool, store: Store, tmp_path: Path, world: SlowWorld
) -> None:
    """A worker stopped by SIGTERM releases its lease and unregisters; another takes over."""
    world.slow = {STEP1: 30.0}
    [wid] = submit_many(store, tmp_path, 1)
    first = pool.start("-c", "1", "--lease-ttl", "60")
    pool.wait_output(first, "claimed")
    wait_until(running_step(store, wid, 1), "the planner step is marked running")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0, pool.output(first)
    assert f"handed_back {wid}" in pool.output(first)
    assert store.lease(wid) is None
    assert queue_of(store).workers() == []
    world.slow = {}
    second = pool.start("-c", "1", "--lease-ttl", "60")
    pool.wait_output(second, f"waiting {wid}", timeout=30)  # no 60 s lease to wait out
    check_invariants(store, wid)
