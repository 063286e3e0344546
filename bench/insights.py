"""Seconds for ``orchestrator insights`` over a store of 100,000 recorded decisions.

Builds an SQLite store of many workflows (untimed): each is driven through the rules with
step results from ``state/examples.py`` (plans and code that pass or miss at random), and
its decisions are recorded with a mix of sources an LLM-assisted run leaves: borderline
agreements, LLM overrides, fallbacks, and LLM shadow answers beside rule decisions. Then it
times the insights pipeline (``gather``: one ``Store.scan_ledger``, decoding the fields
counted; ``aggregate``; ``recommend``) and prints the figures. Target: under 2 s.

The store records the first nine tenths of the decisions 30 days ago and the last tenth a
day ago (by the store's clock, which stamps each ledger entry), and the bench also times
``insights --since`` over the last two days: the store cuts the scan on ``recorded_at``,
so only that tenth is decoded.

    python -m bench.insights [--decisions 100000] [--seed 7] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.composition import open_store
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.insights import aggregate, gather, recommend, routing_block
from orchestrator.running.updates import complete_step, new_workflow, record_answer
from state.clock import FixedClock
from state.config import Coordinator, WorkflowConfig
from state.decision import (
    ActionKind,
    Decision,
    DecisionRecord,
    DecisionSource,
    LLMCallInfo,
    LLMCallOutcome,
    ShadowDecider,
    ShadowOutcome,
    ShadowRecord,
)
from state.examples import code_change, code_report, plan_draft, plan_report
from state.reports import ToolStatus
from state.steps import Gate, Step, WorkflowStatus
from state.store import DecisionEntry, LedgerEntryIn, ShadowEntry, Store
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState

CONFIG = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)


def drive(engine: DecisionPipeline, rng: random.Random, wid: str) -> WorkflowState:
    """One workflow through the rules, plans and code passing or missing at random."""
    clock = engine.clock
    state = new_workflow(wid, "create a data preprocessing step", "/tmp/ws", clock.now())
    while True:
        state, _ = engine.decide_by_rule(state, CONFIG)
        rec = state.history[-1] if state.history else None
        if rec is not None and rec.status is StepStatus.RUNNING:
            step = rec.step
            result: object
            if step is Step.PLAN_VALIDATION:
                result = plan_report(a=9.5 if rng.random() < 0.5 else 8.0)
            elif step in (Step.CODE_VALIDATION, Step.CONVERGENCE_VALIDATION):
                ok = rng.random() < 0.5
                result = code_report(9.0 if ok else 7.5, (ToolStatus.PASSED,), minor=0 if ok else 4)
            elif step in (Step.INITIAL_PLANNING, Step.PLAN_REVISION):
                result = plan_draft()
            else:
                result = code_change()
            state = complete_step(state, result, clock.now())
        if state.status is WorkflowStatus.AWAITING_HUMAN:
            gate = state.waiting_gate
            kind = (
                (HumanAnswerKind.ACCEPT if rng.random() < 0.5 else HumanAnswerKind.REJECT)
                if gate is Gate.ESCALATION
                else HumanAnswerKind.APPROVE
            )
            state = record_answer(state, None, kind, by="bench", now=clock.now())
        elif state.status is not WorkflowStatus.RUNNING:
            return state


def as_recorded(
    record: DecisionRecord, rng: random.Random
) -> tuple[DecisionRecord, ShadowRecord | None]:
    """``record`` as an LLM-assisted run might have left it, and an LLM shadow beside it."""
    if len(record.legal_actions) < 2 or record.source is DecisionSource.HUMAN:
        return record, None
    info = LLMCallInfo(
        model="bench-model",
        prompt_tokens=rng.randint(600, 900),
        completion_tokens=rng.randint(20, 60),
        latency_ms=rng.uniform(200, 1500),
        attempts=1,
    )
    r = rng.random()
    if r < 0.08:
        other = Decision(action=ActionKind.ESCALATE, rationale="the rules' choice")
        return record.model_copy(
            update={"source": DecisionSource.LLM_OVERRIDE, "programmatic_alternative": other,
                    "llm": info}
        ), None  # fmt: skip
    if r < 0.2:
        return record.model_copy(
            update={"source": DecisionSource.RECONCILED_AGREE, "llm": info}
        ), None
    if r < 0.25:
        failed = info.model_copy(update={"outcome": LLMCallOutcome.UNAVAILABLE})
        return record.model_copy(
            update={"source": DecisionSource.PROGRAMMATIC_FALLBACK, "llm": failed}
        ), None
    if r < 0.55:
        agreed = rng.random() < 0.97
        shadow = ShadowRecord(
            decision_seq=record.seq,
            decided_at=record.decided_at,
            decider=ShadowDecider.LLM,
            outcome=ShadowOutcome.AGREED if agreed else ShadowOutcome.DISAGREED,
            state=record.state_before,
            route=record.route,
            signals=record.signals,
            applied=record.decision,
            decision=record.decision if agreed else Decision(action=ActionKind.ESCALATE),
            llm=info,
        )
        return record, shadow
    return record, None


OLD, RECENT = timedelta(days=30), timedelta(days=1)
"""How long before the bench's run the store records the first nine tenths, and the rest."""


def build_store(where: Path, decisions: int, seed: int) -> tuple[Store, int, int]:
    """A store holding about ``decisions`` decisions; (store, workflows, shadows)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    # The decisions are dated by the engine's clock, their entries by the store's.
    engine = DecisionPipeline(WorkflowMachine(), FixedClock(now - OLD))
    store = open_store(where, clock=FixedClock(now - OLD))
    made = workflows = shadows = 0
    recent = False
    while made < decisions:
        if not recent and made >= decisions * 9 // 10:
            store.close()
            store, recent = open_store(where, clock=FixedClock(now - RECENT)), True
            engine = DecisionPipeline(WorkflowMachine(), FixedClock(now - RECENT))
        state = drive(engine, rng, f"wf-{workflows:06d}")
        store.create(new_workflow(state.workflow_id, state.requirements, "/tmp/ws",
                                  state.created_at or engine.clock.now()), CONFIG)  # fmt: skip
        entries: list[LedgerEntryIn] = []
        for record in state.decisions:
            applied, shadow = as_recorded(record, rng)
            entries.append(DecisionEntry(applied))
            if shadow is not None:
                entries.append(ShadowEntry(shadow))
                shadows += 1
        store.commit(state.workflow_id, state, expected_version=1, entries=entries, owner=None)
        made += len(state.decisions)
        workflows += 1
    return store, workflows, shadows


def main() -> None:
    """Build the store, then time the insights over it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-insights-") as tmp:
        t = time.perf_counter()
        where = Path(tmp) / "data"
        built_store, workflows, shadows = build_store(where, args.decisions, args.seed)
        built_store.close()  # insights opens a store others wrote, as the CLI does
        built = time.perf_counter() - t
        with open_store(where) as store:
            print(
                f"store: {workflows} workflows, >= {args.decisions} decisions, {shadows} "
                f"shadow answers (built in {built:.1f} s, untimed)"
            )
            best_read = best_all = float("inf")
            for _ in range(args.repeat):
                # As the command does it: the workflows stream through, none is kept.
                t = time.perf_counter()
                groups = recommend(aggregate(gather(store)), min_samples=20)
                best_all = min(best_all, time.perf_counter() - t)
                t = time.perf_counter()
                for _workflow in gather(store):
                    pass
                best_read = min(best_read, time.perf_counter() - t)
            n = sum(g.samples for g in groups)
            since = datetime.now(UTC) - 2 * RECENT
            best_since = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                window = recommend(aggregate(gather(store, since), since), min_samples=20)
                best_since = min(best_since, time.perf_counter() - t)
            print(f"decisions read: {n}; groups: {len(groups)}; routing: {routing_block(groups)}")
            print(f"insights: {best_all:.2f} s (best of {args.repeat}; target < 2 s); reading "
                  f"the ledgers alone: {best_read:.2f} s")  # fmt: skip
            print(f"insights --since (the last two days: {sum(g.samples for g in window)} "
                  f"decisions, the last tenth): {best_since:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
