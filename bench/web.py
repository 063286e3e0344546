"""How fast the web console answers: a workflow page with 1,000 decisions, an inbox of 10,000.

Targets (printed beside the figures, not asserted): the workflow page of a workflow with
1,000 decisions in under 300 ms of server time, the inbox over 10,000 workflows in under
200 ms. The inbox is paged (``?limit=&offset=``, 100 rows by default, as the console asks);
its first page, its last page and its largest page (1,000 rows) are timed, and the service
call that shapes every waiting workflow at once.

The data is built with the real SQLite store, opened through the composition root
(``orchestrator.composition.open_store``, via ``orchestrator.web.service.build_service``),
in a fresh temporary directory:

- one long workflow driven through the real machine (``decide_by_rule``) with every
  decision committed with its ledger entry, as the runner does: plans that never converge,
  escalations a human lets go on (which grants fresh budgets), until it has ``--decisions``
  decisions; then it waits at a gate;
- ``--workflows`` workflows in all, of which ``--waiting-share`` wait at the plan gate (each
  with a plan revised once, so four decisions and a history of four steps) and the rest are
  still running after their first decision.

"Server time" is the time from handing a request to the ASGI app
(``orchestrator.web.app.create_app``, through ``httpx.ASGITransport``, no socket) until its
whole response body is in hand: routing, the store reads, the shaping into JSON or SVG and
the serialisation; not the network and not the browser. The workflow page asks for four
resources at once (the workflow with its timeline, the chart, the diagram, the rounds); its
server time is those four requests issued together, as the page's script does, until the
last body is complete; the four one after another (what they cost with no overlap) and
each alone are printed too. The inbox is timed on its first call after the console starts
(it knows nothing yet; ``orchestrator serve`` makes that call itself at start) and then
warm. The live feed's poll (``Watcher.poll``, once a second while the console runs) is
timed on its first call, which lists every workflow, then when nothing moved, and after
100 and 1,000 workflows were committed again from another store handle (as a worker's
commits move them; the commits are not timed). Each figure is the median of ``--repeat``
runs after one warm-up; the slowest run is printed too.

    python -m bench.web [--decisions 1000] [--workflows 10000] [--waiting-share 0.25]
                        [--repeat 15]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from orchestrator.composition import open_store
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.logsetup import configure_logging
from orchestrator.running.updates import StepResultT, complete_step, new_workflow, record_answer
from orchestrator.web.access import AccessPolicy
from orchestrator.web.app import create_app
from orchestrator.web.events import Watcher
from orchestrator.web.service import ConsoleService, build_service
from state.clock import FixedClock
from state.config import Coordinator, WorkflowConfig
from state.examples import BAD_PLAN, code_change, plan_draft, plan_report
from state.steps import Step, WorkflowStatus
from state.store import DecisionEntry, HumanAnswerEntry, StepResultEntry, Store
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState

PAGE_TARGET_MS = 300.0
INBOX_TARGET_MS = 200.0
CONFIG = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)
LONG_ID = "wf-long"
OWNER = "bench"


def build_long_workflow(store: Store, decisions: int) -> WorkflowState:
    """Drive ``LONG_ID`` until it has ``decisions`` decisions, committing each as the runner."""
    clock = FixedClock()
    engine = DecisionPipeline(WorkflowMachine(), clock)
    state = new_workflow(LONG_ID, "create a data preprocessing step", "/tmp/ws", clock.now())
    version = store.create(state, CONFIG)
    store.acquire_lease(LONG_ID, OWNER, 3600.0)
    revision = 0
    while state.status in (WorkflowStatus.RUNNING, WorkflowStatus.AWAITING_HUMAN):
        if state.waiting_gate is not None and state.pending_answer is None:
            if len(state.decisions) >= decisions:
                break  # it waits at a gate, as a page someone opens from the inbox
            state = record_answer(state, None, HumanAnswerKind.APPROVE, by="bench", now=clock.now())
            entry = HumanAnswerEntry(state.human_answers[-1])
            version = store.commit(
                LONG_ID, state, expected_version=version, entries=(entry,), owner=OWNER
            )
            continue
        state, record = engine.decide_by_rule(state, CONFIG)
        version = store.commit(
            LONG_ID, state, expected_version=version, entries=(DecisionEntry(record),), owner=OWNER
        )
        rec = state.last_record
        if rec is not None and rec.status is StepStatus.RUNNING:
            if rec.step is Step.PLAN_VALIDATION:
                result: StepResultT = BAD_PLAN  # never converges: revisions, then escalations
            elif rec.step in (Step.INITIAL_PLANNING, Step.PLAN_REVISION):
                revision += 1
                result = plan_draft(revision, f"# plan v{revision}\n\n- fill missing values")
            else:
                result = code_change()
            state = complete_step(state, result, clock.now())
            version = store.commit(
                LONG_ID,
                state,
                expected_version=version,
                entries=(StepResultEntry(state.history[-1]),),
                owner=OWNER,
            )
    store.release_lease(LONG_ID, OWNER)
    return state


def template_states() -> tuple[WorkflowState, WorkflowState]:
    """A workflow waiting at the plan gate after one revision, and one just started."""
    clock = FixedClock()
    engine = DecisionPipeline(WorkflowMachine(), clock)
    state = new_workflow("wf-t", "fill missing values in tabular rows", "/tmp/ws", clock.now())
    state, _ = engine.decide_by_rule(state, CONFIG)
    started = state
    for result in (plan_draft(1), BAD_PLAN, plan_draft(2), plan_report()):
        state = complete_step(state, result, clock.now())
        state, _ = engine.decide_by_rule(state, CONFIG)
    assert state.waiting_gate is not None, state.machine_state
    return state, started


def fill(store: Store, workflows: int, waiting_share: float) -> int:
    """Store ``workflows - 1`` more workflows, ``waiting_share`` of them at the plan gate."""
    waiting, started = template_states()
    every = max(1, round(1 / waiting_share)) if waiting_share > 0 else 0
    n_waiting = 0
    for i in range(workflows - 1):
        at_gate = every > 0 and i % every == 0
        n_waiting += at_gate
        base = waiting if at_gate else started
        store.create(base.model_copy(update={"workflow_id": f"wf-{i:05d}"}), CONFIG)
    return n_waiting


class Toucher:
    """Commits workflows again, unchanged but for their version, as a worker's commits move them.

    Each call takes the next ``n`` of the filled workflows, round robin.
    """

    def __init__(self, store: Store, workflows: int) -> None:
        self._store = store
        self._ids = [f"wf-{i:05d}" for i in range(workflows - 1)]
        self._next = 0

    def __call__(self, n: int) -> None:
        for _ in range(n):
            wid = self._ids[self._next % len(self._ids)]
            self._next += 1
            stored = self._store.load(wid)
            self._store.commit(wid, stored.state, expected_version=stored.version, owner=None)


async def timed(repeat: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    """Milliseconds of ``repeat`` calls after one warm-up."""
    await call()
    out: list[float] = []
    for _ in range(repeat):
        t = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t) * 1000)
    return out


def show(label: str, ms: list[float], target: float | None = None) -> None:
    med = statistics.median(ms)
    verdict = ""
    if target is not None:
        verdict = f"  target < {target:.0f} ms: {'met' if med < target else 'MISSED'}"
    print(f"  {label:<44} median {med:8.1f} ms  max {max(ms):8.1f} ms{verdict}")


async def measure(service: ConsoleService, touch: Callable[[int], object], repeat: int) -> None:
    app = create_app(service, AccessPolicy())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

        async def get(path: str) -> httpx.Response:
            response = await client.get(path)
            response.raise_for_status()
            await response.aread()
            return response

        enc = f"/api/workflows/{LONG_ID}"
        page_parts = (enc, f"{enc}/chart.svg", f"{enc}/diagram.svg", f"{enc}/rounds")

        async def page() -> None:
            await asyncio.gather(*(get(p) for p in page_parts))  # as the page asks

        async def page_serial() -> None:
            for path in page_parts:
                await get(path)

        async def inbox() -> None:
            await get("/api/inbox")  # the first page, as the console asks

        t = time.perf_counter()
        await inbox()
        cold_inbox = [(time.perf_counter() - t) * 1000]
        waiting = int((await get("/api/inbox?limit=1")).headers["X-Total-Count"])
        last_page = f"/api/inbox?offset={max(0, waiting - 100)}"
        sizes = {p: len((await get(p)).content) for p in (*page_parts, "/api/inbox")}
        print("server time through the ASGI app (httpx.ASGITransport):")
        show(
            f"workflow page ({len(page_parts)} requests at once)",
            await timed(repeat, page),
            PAGE_TARGET_MS,
        )
        show("workflow page, the 4 one after another", await timed(repeat, page_serial))
        for path in page_parts:
            show(
                f"  GET {path.replace(enc, '…')} ({sizes[path] // 1024} KiB)",
                await timed(repeat, functools.partial(get, path)),
            )
        show("inbox, cold (serve does it at start)", cold_inbox)
        show(
            f"inbox, first page of {waiting} waiting ({sizes['/api/inbox'] // 1024} KiB)",
            await timed(repeat, inbox),
            INBOX_TARGET_MS,
        )
        show("inbox, last page", await timed(repeat, functools.partial(get, last_page)))
        show(
            "inbox, 1,000 rows (the largest page)",
            await timed(repeat, functools.partial(get, "/api/inbox?limit=1000")),
        )

        async def service_inbox() -> None:
            await service.inbox()  # every waiting workflow, no page

        async def service_workflow() -> None:
            await service.workflow(LONG_ID)

        print("the service calls alone (no HTTP, no JSON encoding):")
        show("ConsoleService.workflow", await timed(repeat, service_workflow))
        show("ConsoleService.inbox, all rows", await timed(repeat, service_inbox))
        await live_feed(service, touch, repeat)


async def live_feed(service: ConsoleService, touch: Callable[[int], object], repeat: int) -> None:
    """The live feed's poll (``Watcher.poll``), which the console runs once a second.

    Its first poll lists every workflow; later ones read every workflow's version and
    list only those that moved, which ``touch`` makes happen from another store handle,
    as workers do, between polls (not timed).
    """
    show("live feed, first poll (lists every workflow)", await timed(repeat, service.versions))
    watcher = Watcher(service)
    await watcher.poll()
    show("live feed, a poll where nothing moved", await timed(repeat, watcher.poll))
    for moved in (100, 1000):
        ms: list[float] = []
        for _ in range(repeat):
            await asyncio.to_thread(touch, moved)
            t = time.perf_counter()
            changes = await watcher.poll()
            ms.append((time.perf_counter() - t) * 1000)
            assert len(changes) == moved, len(changes)
        show(f"live feed, a poll after {moved} workflows moved", ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--waiting-share", type=float, default=0.25)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    configure_logging(level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        t = time.perf_counter()
        with open_store(data) as store:
            long = build_long_workflow(store, args.decisions)
            n_waiting = fill(store, args.workflows, args.waiting_share) + 1
            entries = len(store.ledger(LONG_ID))
        print(
            f"built in {time.perf_counter() - t:.0f} s: {args.workflows} workflows, "
            f"{n_waiting} waiting at a gate; {LONG_ID} has {len(long.decisions)} decisions, "
            f"{len(long.history)} step attempts, {entries} ledger entries"
        )
        service = build_service(data, run_workflows=False)  # as `orchestrator serve --no-run`
        try:
            with open_store(data) as other:  # another handle: a worker's, say
                asyncio.run(measure(service, Toucher(other, args.workflows), args.repeat))
        finally:
            asyncio.run(service.close())


if __name__ == "__main__":
    main()
