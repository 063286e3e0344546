"""Seconds to replay a 500-decision workflow in cassette mode (``orchestrator replay``).

Records (untimed) one long workflow in an SQLite store: the plan never converges within a
high revision limit, its scores hover near the thresholds (``state/examples.py``'s
``plan_report``), so many states are borderline and the LLM (a scripted model) is asked
beside the rules. Then it times what ``orchestrator replay`` does for it: load the
snapshot and the ledger through the store protocol, rebuild the state before each
decision, and decide each again with the recorded LLM answers cued from the cassette.
Target: under 1 s.

    python -m bench.replay [--decisions 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.composition import build_coordinator, open_store
from orchestrator.deciding.llm_decider import LLMDecider
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.llm.cassette import Cassette
from orchestrator.llm.protocol import LLMRequest
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.logsetup import configure_logging
from orchestrator.running.replay import Replayer
from orchestrator.running.updates import complete_step, new_workflow
from state.clock import FixedClock, SystemClock
from state.config import Limits, WorkflowConfig
from state.examples import plan_draft, plan_report
from state.steps import Step
from state.store import DecisionEntry, LedgerEntryIn, LedgerKind, StepResultEntry, Store
from state.workflow import StepStatus

WID = "wf-replay-bench"


def keep_going(request: LLMRequest) -> dict[str, Any]:
    """The scripted LLM: an action that keeps the workflow going (a step), confidently."""
    assert request.json_schema is not None
    offered = request.json_schema["properties"]["action"]["enum"]
    action = next((a for a in offered if a.startswith("invoke_")), offered[0])
    return {"action": action, "rationale": "bench", "confidence": 0.9}


async def record(store: Store, decisions: int) -> int:
    """Record one workflow of about ``decisions`` decisions; the LLM decisions among them."""
    rng = random.Random(5)
    config = WorkflowConfig(
        limits=Limits(max_plan_revisions=decisions, max_decisions=decisions * 2)
    )
    clock = FixedClock()
    pipeline = build_coordinator(ScriptedChatModel(responder=keep_going), clock=clock)
    state = new_workflow(WID, "create a data preprocessing step", "/tmp/ws", clock.now())
    store.create(state, config)
    version, asked = 1, 0
    while len(state.decisions) < decisions:
        entries: list[LedgerEntryIn] = []
        state, rec = await pipeline.decide(state, config)
        entries.append(DecisionEntry(rec))
        asked += rec.llm is not None and rec.llm.attempts > 0
        running = state.last_record
        if running is None or running.status is not StepStatus.RUNNING:
            version = store.commit(
                WID, state, expected_version=version, entries=entries, owner=None
            )
            if state.waiting_gate is not None or state.status.value != "running":
                break
            continue
        if running.step is Step.PLAN_VALIDATION:
            # Near the 9.0 alignment threshold: borderline, so both deciders answer.
            result: object = plan_report(a=round(rng.uniform(8.8, 8.95), 2))
        else:
            result = plan_draft()
        state = complete_step(state, result, clock.now())  # type: ignore[arg-type]
        entries.append(StepResultEntry(state.history[-1]))
        version = store.commit(WID, state, expected_version=version, entries=entries, owner=None)
    return asked


async def replay_once(store: Store) -> tuple[float, int, int, int]:
    """Seconds for one cassette replay, its decisions, LLM requests and identical decisions."""
    t = time.perf_counter()
    stored = store.load(WID)
    kinds = (LedgerKind.DECISION, LedgerKind.STEP_RESULT, LedgerKind.HUMAN_ANSWER)
    ledger = store.ledger(WID, kinds=kinds)
    machine = WorkflowMachine()
    cassette = Cassette()
    pipeline = DecisionPipeline(machine, SystemClock(), LLMDecider(cassette, machine))
    replayer = Replayer(DecisionPipeline(machine, SystemClock()), pipeline, cassette)
    report = await replayer.replay(stored, ledger, stored.config)
    return time.perf_counter() - t, report.decisions, report.llm_requests, report.identical


def main() -> None:
    """Record the workflow, then time its cassette replay."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    configure_logging("console", level="ERROR")  # a decision.made line per decision otherwise
    with (
        tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp,
        open_store(Path(tmp) / "data") as store,
    ):
        asked = asyncio.run(record(store, args.decisions))
        best = float("inf")
        for _ in range(args.repeat):
            seconds, n, requests, identical = asyncio.run(replay_once(store))
            best = min(best, seconds)
        print(
            f"workflow: {n} decisions, {asked} of them with the LLM asked; cassette replay: "
            f"{requests} LLM requests, {identical} of {n} decisions identical"
        )
        print(
            f"replay: {best:.3f} s (best of {args.repeat}; target < 1 s), "
            f"{best / n * 1e3:.2f} ms per decision"
        )


if __name__ == "__main__":
    main()
