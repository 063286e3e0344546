"""Durable decisions per second when every store call is awaited, as ``WorkflowRunner`` does.

The same trace and commits as part 1 of ``bench/durable.py`` (a step's result committed with
the decision that follows it), driven from an event loop two ways, alternately, on a fresh
SQLite store each run: the store called inline on the loop's thread (the loop stalls while
SQLite works), and through ``AsyncStore`` (each call on its worker thread: the loop stays
free). The difference is the cost of handing each call to the worker and back.

    python -m bench.awaited [--workflows 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from bench._peers import load_peers
from bench.decisions import build_trace
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.running.updates import complete_step, new_workflow, record_answer
from state.async_store import AsyncStore
from state.clock import FixedClock
from state.config import Coordinator, WorkflowConfig
from state.reports import CodeChange, PlanDraft
from state.sqlite_store import Durability, SQLiteStore
from state.steps import Step, WorkflowStatus
from state.store import DecisionEntry, HumanAnswerEntry, LedgerEntryIn, StepResultEntry
from state.workflow import HumanAnswerKind, StepStatus

PLAN_DRAFT = PlanDraft(version=1, markdown="# plan")
CODE = CodeChange(files=("prep.py",), summary="stub")
Call = Callable[..., Awaitable[Any]]


async def drive(peers: ModuleType, store: SQLiteStore, n: int, awaited: bool) -> float:
    """Run ``n`` workflows (after one warm-up); decisions per second."""
    plans, codes = build_trace(peers)
    clock = FixedClock()
    pipeline = DecisionPipeline(WorkflowMachine(), clock)
    config = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)
    async with AsyncStore(store) as astore:

        def call(name: str) -> Call:
            if awaited:
                method: Call = getattr(astore, name)
                return method
            sync = getattr(store, name)

            async def inline(*args: Any, **kwargs: Any) -> Any:
                return sync(*args, **kwargs)

            return inline

        create, acquire, commit, release = map(
            call, ("create", "acquire_lease", "commit", "release_lease")
        )
        decisions, started = 0, 0.0
        for i in range(-1, n):
            wid = f"wf-{i}"
            state = new_workflow(wid, "r", "/tmp/ws", clock.now())
            version = await create(state, config)
            await acquire(wid, "bench", 300.0)
            plan_i = code_i = 0
            pending: tuple[LedgerEntryIn, ...] = ()
            while True:
                state, record = pipeline.decide_by_rule(state, config)
                entries = (*pending, DecisionEntry(record))
                version = await commit(
                    wid, state, expected_version=version, entries=entries, owner="bench"
                )
                pending = ()
                rec = state.history[-1] if state.history else None
                if rec is not None and rec.status is StepStatus.RUNNING:
                    result: Any
                    if rec.step is Step.PLAN_VALIDATION:
                        result, plan_i = plans[plan_i], plan_i + 1
                    elif rec.step in (Step.CODE_VALIDATION, Step.CONVERGENCE_VALIDATION):
                        result, code_i = codes[code_i], code_i + 1
                    elif rec.step in (Step.INITIAL_PLANNING, Step.PLAN_REVISION):
                        result = PLAN_DRAFT
                    else:
                        result = CODE
                    state = complete_step(state, result, clock.now())
                    pending = (StepResultEntry(state.history[-1]),)
                if state.status is WorkflowStatus.AWAITING_HUMAN:
                    state = record_answer(
                        state, None, HumanAnswerKind.APPROVE, by="bench", now=clock.now()
                    )
                    answer = (HumanAnswerEntry(state.human_answers[-1]),)
                    version = await commit(
                        wid, state, expected_version=version, entries=answer, owner="bench"
                    )
                elif state.status is not WorkflowStatus.RUNNING:
                    await release(wid, "bench")
                    if i < 0:
                        started = time.perf_counter()
                    else:
                        decisions += len(state.decisions)
                    break
        return decisions / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workflows", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    peers = load_peers()
    modes = [(d, a) for d in ("normal", "full") for a in (False, True)]
    rates: dict[tuple[str, bool], list[float]] = {m: [] for m in modes}
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
        for durability, awaited in modes:
            d: Durability = "full" if durability == "full" else "normal"
            with tempfile.TemporaryDirectory() as tmp, SQLiteStore(tmp, durability=d) as st:
                gc.collect()
                rates[(durability, awaited)].append(
                    asyncio.run(drive(peers, st, args.workflows, awaited))
                )
    print(f"{args.workflows} workflows per run, best of {args.repeat}")
    for (durability, awaited), r in rates.items():
        how = "awaited via AsyncStore (worker)" if awaited else "inline on the loop's thread"
        print(f"{durability:6s} {how:32s} {max(r):7.0f} decisions/s (worst {min(r):.0f})")


if __name__ == "__main__":
    main()
