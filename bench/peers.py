"""The peer engines (LangGraph, Burr, bare ``transitions``) on our workflow's scripted trace.

Every engine drives the same trace with instant stand-in agents, so what is timed is the
engine's own routing and state handling:

- phase 1: the plan validator's first report misses its alignment threshold, the second
  converges (one revision);
- phase 2: the code fails validation once, then passes (one refinement);
- a human approves at the plan gate and at the final gate.

That is ten routing decisions a workflow (``DECISIONS_PER_WORKFLOW``). The graph is written
once, as ``NODES`` and ``EDGES`` below, and each ``bench_*`` function builds its engine's
version of it, so the peers cannot drift apart. Each returns the seconds ``n`` workflows took.

Run ``python -m bench.peers [--workflows N]`` for the peers alone; ``bench/decisions.py`` and
``bench/durable.py`` time our orchestrator beside them in one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypedDict

# The validator's results, in the order it is called.
PLAN_SCORES: list[dict[str, float]] = [
    {"alignment": 7.5, "standardization": 8.1, "compatibility": 8.0},  # misses alignment
    {"alignment": 9.3, "standardization": 8.6, "compatibility": 8.4},  # converges
]
CODE_PASSES: list[bool] = [False, True]
DECISIONS_PER_WORKFLOW = 10
PLAN_THRESHOLDS = {"alignment": 9.0, "standardization": 8.0, "compatibility": 8.0}

# The workflow graph: node -> what it does to the trace's counters.
NODES = (
    "plan",
    "validate_plan",
    "revise",
    "approve_plan",
    "program",
    "validate_code",
    "refine",
    "approve_code",
)
# (source, destination, condition or None); a conditional edge is tried before the default.
EDGES: tuple[tuple[str, str, str | None], ...] = (
    ("plan", "validate_plan", None),
    ("validate_plan", "approve_plan", "plan_ok"),
    ("validate_plan", "revise", None),
    ("revise", "validate_plan", None),
    ("approve_plan", "program", None),
    ("program", "validate_code", None),
    ("validate_code", "approve_code", "code_ok"),
    ("validate_code", "refine", None),
    ("refine", "validate_code", None),
)
FIRST, LAST = NODES[0], NODES[-1]


def plan_converged(scores: dict[str, float]) -> bool:
    """Whether a plan report meets every threshold of the trace."""
    return all(scores[name] >= bar for name, bar in PLAN_THRESHOLDS.items())


def _outgoing(node: str) -> list[tuple[str, str | None]]:
    return [(dest, cond) for src, dest, cond in EDGES if src == node]


class _Counters(TypedDict):
    plan_round: int
    code_round: int
    plan_ok: bool
    code_ok: bool
    approvals: int


def _fresh() -> _Counters:
    return {"plan_round": 0, "code_round": 0, "plan_ok": False, "code_ok": False, "approvals": 0}


def _step(node: str, s: _Counters) -> dict[str, Any]:
    """What running ``node`` changes in the counters (the stand-in agents)."""
    if node == "validate_plan":
        r = s["plan_round"]
        return {"plan_round": r + 1, "plan_ok": plan_converged(PLAN_SCORES[r])}
    if node == "validate_code":
        r = s["code_round"]
        return {"code_round": r + 1, "code_ok": CODE_PASSES[r]}
    if node.startswith("approve_"):
        return {"approvals": s["approvals"] + 1}
    return {}


def bench_langgraph(n: int, checkpointer: Any = None) -> float:
    """``n`` workflows through a compiled LangGraph ``StateGraph``, optionally checkpointed."""
    from langgraph.graph import END, START, StateGraph  # noqa: PLC0415 -- optional peer

    graph: Any = StateGraph(_Counters)
    for node in NODES:
        graph.add_node(node, _node_fn(node))
    graph.add_edge(START, FIRST)
    for node in NODES:
        out = _outgoing(node)
        if not out:
            graph.add_edge(node, END)
        elif len(out) == 1:
            graph.add_edge(node, out[0][0])
        else:
            graph.add_conditional_edges(node, _router(out), [dest for dest, _ in out])
    app = graph.compile(checkpointer=checkpointer)
    start = time.perf_counter()
    for i in range(n):
        config = {"configurable": {"thread_id": str(i)}} if checkpointer is not None else None
        final = app.invoke(_fresh(), config)
        assert final["approvals"] == 2
    return time.perf_counter() - start


def _node_fn(node: str) -> Callable[[_Counters], dict[str, Any]]:
    def run(s: _Counters) -> dict[str, Any]:
        return _step(node, s)

    return run


def _router(out: list[tuple[str, str | None]]) -> Callable[[_Counters], str]:
    def route(s: _Counters) -> str:
        for dest, cond in out:
            if cond is None or s[cond]:  # type: ignore[literal-required]
                return dest
        raise AssertionError("no edge passed")

    return route


def bench_burr(n: int) -> float:
    """``n`` workflows through a Burr application (one built per workflow, no persister)."""
    from burr.core import ApplicationBuilder, default, expr  # noqa: PLC0415
    from burr.core.action import action  # noqa: PLC0415

    def burr_action(node: str) -> Any:
        writes = list(_step(node, _fresh()))

        @action(reads=writes, writes=writes)
        def run(state: Any) -> Any:
            counters: Any = {k: state[k] for k in writes}
            return state.update(**_step(node, counters)) if writes else state

        return run

    actions = {node: burr_action(node) for node in NODES}
    transitions = [(src, dest, expr(cond) if cond else default) for src, dest, cond in EDGES]

    start = time.perf_counter()
    for _ in range(n):
        builder: Any = ApplicationBuilder()
        app = (
            builder.with_actions(**actions)
            .with_transitions(*transitions)
            .with_state(**_fresh())
            .with_entrypoint(FIRST)
            .build()
        )
        _, _, state = app.run(halt_after=[LAST])
        assert state["approvals"] == 2
    return time.perf_counter() - start


def bench_transitions(n: int) -> float:
    """``n`` workflows on one shared bare ``transitions`` machine (``add_model`` each)."""
    from transitions import Machine  # noqa: PLC0415

    class Workflow:
        def __init__(self) -> None:
            self.counters = _fresh()
            self.state = FIRST

        def plan_ok(self) -> bool:
            return self.counters["plan_ok"]

        def code_ok(self) -> bool:
            return self.counters["code_ok"]

    machine = Machine(model=None, states=[*NODES, "done"], initial=FIRST, auto_transitions=False)
    for src, dest, cond in EDGES:
        machine.add_transition("next", src, dest, conditions=[cond] if cond else [])
    machine.add_transition("next", LAST, "done")
    start = time.perf_counter()
    for _ in range(n):
        wf = Workflow()
        machine.add_model(wf, initial=FIRST)
        while wf.state != "done":
            wf.counters.update(_step(wf.state, wf.counters))  # type: ignore[typeddict-item]
            wf.next()  # type: ignore[attr-defined]
        assert wf.counters["approvals"] == 2
        machine.remove_model(wf)
    return time.perf_counter() - start


def main() -> None:
    """Print workflows/s and microseconds per routing decision for each peer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=300)
    n = parser.parse_args().workflows
    rows = [
        ("transitions (shared machine, no persistence)", bench_transitions(n)),
        ("langgraph (no checkpointer)", bench_langgraph(n)),
        ("burr (no persister)", bench_burr(n)),
    ]
    for name, secs in rows:
        per_decision_us = secs / (n * DECISIONS_PER_WORKFLOW) * 1e6
        print(f"{name:48s} {n / secs:10.1f} workflows/s {per_decision_us:10.1f} us/decision")


if __name__ == "__main__":
    main()
