"""Microseconds per decision on the programmatic path, beside LangGraph, Burr and transitions.

Drives the scripted trace of bench/peers.py (plan fails once then passes, code fails
once then passes, both gates approved) through our programmatic path: classify, decide, fire
the transition through the shared ``transitions`` machine, record the decision in memory, and
record the instant stub agent's result. The peers run the same trace in the same process, so
the ratios compare like with like on this (shared, noisy) machine.

    python bench/decisions.py [--workflows 300] [--resident 10000] [--repeat 5]

The engines run round robin, best of ``--repeat`` each, so a burst of load on the shared
machine hits a round of every engine rather than all the runs of one.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from bench._peers import load_peers
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.running.updates import complete_step, new_workflow, record_answer
from state.clock import FixedClock
from state.config import Coordinator, WorkflowConfig
from state.reports import (
    CodeChange,
    CodeReview,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
    StandardizationReview,
    ToolResult,
    ToolStatus,
)
from state.steps import Step, WorkflowStatus
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState


def build_trace(peers: object) -> tuple[list[PlanValidationReport], list[CodeValidationReport]]:
    """The peers' validator results as our report models."""
    plans = [
        PlanValidationReport(
            alignment_score=s["alignment"],
            standardization_score=s["standardization"],
            compatibility_score=s["compatibility"],
            critical_issues=0,
            minor_issues=0,
        )
        for s in peers.PLAN_SCORES  # type: ignore[attr-defined]
    ]
    codes = []
    for ok in peers.CODE_PASSES:  # type: ignore[attr-defined]
        codes.append(
            CodeValidationReport(
                review=CodeReview(
                    overall_score=9.0 if ok else 7.5, critical_issues=0, minor_issues=0 if ok else 4
                ),
                standardization=StandardizationReview(
                    status="PASSED", critical_issues=0, minor_issues=0
                ),
                tools=(
                    ToolResult(
                        name="pytest", status=ToolStatus.PASSED if ok else ToolStatus.FAILED
                    ),
                ),
                line_coverage=92.0,
            )
        )
    return plans, codes


def make_runner(peers: object) -> tuple[Callable[[int], WorkflowState], DecisionPipeline]:
    """A function that drives workflow ``i`` through the trace and returns its final state."""
    plans, codes = build_trace(peers)
    plan_draft = PlanDraft(version=1, markdown="# plan")
    code = CodeChange(files=("prep.py",), summary="stub")
    clock = FixedClock()
    engine = DecisionPipeline(WorkflowMachine(), clock)
    config = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)
    now = clock.now
    # Enum members as locals: the harness's own lookups should not count as ours.
    running, plan_validation = StepStatus.RUNNING, Step.PLAN_VALIDATION
    code_validations = (Step.CODE_VALIDATION, Step.CONVERGENCE_VALIDATION)
    plan_writing = (Step.INITIAL_PLANNING, Step.PLAN_REVISION)
    waiting, going = WorkflowStatus.AWAITING_HUMAN, WorkflowStatus.RUNNING
    approve = HumanAnswerKind.APPROVE

    def run(i: int) -> WorkflowState:
        state = new_workflow(f"wf-{i}", "create a data preprocessing step", "/tmp/ws", now())
        plan_i = code_i = 0
        while True:
            state, _ = engine.decide_by_rule(state, config)
            rec = state.history[-1] if state.history else None
            if rec is not None and rec.status is running:
                step = rec.step
                if step is plan_validation:
                    result: object = plans[plan_i]
                    plan_i += 1
                elif step in code_validations:
                    result = codes[code_i]
                    code_i += 1
                elif step in plan_writing:
                    result = plan_draft
                else:
                    result = code
                state = complete_step(state, result, now())  # type: ignore[arg-type]
            status = state.status
            if status is waiting:
                state = record_answer(state, None, approve, by="bench", now=now())
            elif status is not going:
                return state

    return run, engine


def bench_ours(peers: object, n: int) -> tuple[float, int]:
    """Seconds for ``n`` workflows, and decisions per workflow."""
    run, _ = make_runner(peers)
    final = run(-1)
    assert final.status is WorkflowStatus.COMPLETED, final.machine_state
    per = len(final.decisions)
    t = time.perf_counter()
    for i in range(n):
        run(i)
    return time.perf_counter() - t, per


def _rss_mb() -> float:
    """This process's current resident set size (Linux), in MB."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def resident_memory(peers: object, n: int) -> tuple[float, float]:
    """MB added by ``n`` completed workflows held in memory: (tracemalloc, RSS growth).

    Two passes: tracemalloc counts the bytes allocated and kept; a second pass without it
    (tracemalloc's own bookkeeping would swamp the figure) measures RSS growth. Run this in
    a fresh process (``--resident-only``) so earlier work does not pad the heap.
    """
    run, _ = make_runner(peers)
    run(-1)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = [run(i) for i in range(n)]
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del kept
    gc.collect()
    rss0 = _rss_mb()
    kept = [run(i) for i in range(n)]
    gc.collect()
    rss = _rss_mb() - rss0
    assert len(kept) == n
    return traced / 1e6, rss


def resident_in_child(n: int) -> tuple[float, float]:
    """``resident_memory`` measured in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.decisions", "--resident-only", "--resident", str(n)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workflows", type=int, default=300)
    ap.add_argument("--resident", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5, help="best of N runs for each engine")
    ap.add_argument("--resident-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    peers = load_peers()
    if args.resident_only:
        print(*resident_memory(peers, args.resident))
        return
    n = args.workflows
    per_peer = peers.DECISIONS_PER_WORKFLOW

    per_ours = bench_ours(peers, 1)[1]
    engines: list[tuple[str, Callable[[], float], int]] = [
        ("hybrid-orchestrator (programmatic path)", lambda: bench_ours(peers, n)[0], per_ours),
        (
            "transitions (shared machine, no persistence)",
            lambda: peers.bench_transitions(n),
            per_peer,
        ),
        ("langgraph (no checkpointer)", lambda: peers.bench_langgraph(n), per_peer),
        ("burr (no persister)", lambda: peers.bench_burr(n), per_peer),
    ]
    # Round robin, best of N each: a burst of load on this shared machine then slows a
    # round of every engine instead of all of one engine's runs.
    times: list[list[float]] = [[] for _ in engines]
    for _ in range(args.repeat):
        for i, (_name, fn, _per) in enumerate(engines):
            times[i].append(fn())
    rows = [(name, min(t), per) for (name, _fn, per), t in zip(engines, times, strict=True)]
    ours_s = rows[0][1]

    ours_us = ours_s / (n * per_ours) * 1e6
    print(
        f"{n} workflows each, best of {args.repeat} (round robin); our trace makes "
        f"{per_ours} decisions per workflow (the peers count {per_peer}: they have no "
        "explicit start decision)"
    )
    print(f"{'engine':48s} {'workflows/s':>12s} {'us/decision':>12s} {'x ours':>8s}")
    for name, secs, per in rows:
        us = secs / (n * per) * 1e6
        print(f"{name:48s} {n / secs:12.1f} {us:12.1f} {us / ours_us:8.1f}")
    traced_mb, rss_mb = resident_in_child(args.resident)
    print(
        f"{args.resident} completed workflows resident (fresh process): {traced_mb:.1f} MB "
        f"allocated (tracemalloc), {rss_mb:.1f} MB RSS growth; "
        f"{traced_mb * 1e6 / args.resident / 1e3:.1f} KB per workflow"
    )
    print(
        f"target: <= 30 us/decision, >= 10x langgraph, >= 3x burr, <= 100 MB for 10,000 "
        f"workflows; ours: {ours_us:.1f} us"
    )


if __name__ == "__main__":
    main()
