"""The orchestrator's own share of a workflow's wall time, and the 5a/5b concurrency gain.

Workflows run end to end (coordinator: programmatic, so every LLM call is an agent's)
through the real runner, store (SQLite in a temp dir), agents and
sandboxed tools (compile, ruff, pytest with coverage), with the scripted world of the test
suite answering every LLM call after a fixed latency (``--latency``, default 1.0 s, about
what the embedded SmolLM2 takes per call here). The plan converges after one revision, the
code after one refinement, both gates approved.

    own share = (wall time - time inside agent steps - time inside LLM decisions) / wall time

Agent steps include their LLM calls and the sandboxed tools. The 5a/5b gain is measured on
the code-validation step: the same step with the two reviews free to overlap, and with a
lock that makes them take turns; with ``--local-model`` it is measured on the embedded
SmolLM2 server as well (llama.cpp serves one request at a time, so expect no gain there).

    python -m bench.overhead [--workflows 3] [--latency 1.0] [--local-model]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scripted world lives with the tests

from agents.base import StepAgents, StepContext  # noqa: E402
from agents.human import HumanInput  # noqa: E402
from orchestrator.composition import build_agents, build_coordinator  # noqa: E402
from orchestrator.llm.local_server import LocalModelServer  # noqa: E402
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse  # noqa: E402
from orchestrator.llm.scripted import ScriptedChatModel  # noqa: E402
from orchestrator.logsetup import configure_logging  # noqa: E402
from orchestrator.running.runner import WorkflowRunner  # noqa: E402
from state.clock import SystemClock  # noqa: E402
from state.config import Coordinator, WorkflowConfig  # noqa: E402
from state.reports import CodeChange  # noqa: E402
from state.sqlite_store import SQLiteStore  # noqa: E402
from state.steps import Gate, Step  # noqa: E402
from state.workflow import HumanAnswerKind, WorkflowState  # noqa: E402

from support.world import PREP, TEST_PREP, World  # noqa: E402


class Latency:
    """A chat model that answers after a fixed delay, optionally one request at a time."""

    def __init__(self, inner: ChatModel, seconds: float, serial: bool = False) -> None:
        self.inner = inner
        self.seconds = seconds
        self.lock = asyncio.Lock() if serial else None
        self.decision_s = 0.0

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    async def complete(self, request: LLMRequest) -> LLMResponse:
        t = time.perf_counter()
        try:
            if self.lock is None:
                await asyncio.sleep(self.seconds)
                return await self.inner.complete(request)
            async with self.lock:
                await asyncio.sleep(self.seconds)
                return await self.inner.complete(request)
        finally:
            if request.purpose == "decision":
                self.decision_s += time.perf_counter() - t


class TimedAgents(StepAgents):
    """StepAgents that add up the time spent inside agent steps."""

    def __init__(self, inner: StepAgents) -> None:
        self.__dict__.update(inner.__dict__)
        self.inner = inner
        self.busy_s = 0.0

    async def run(self, ctx: StepContext) -> Any:
        t = time.perf_counter()
        try:
            return await self.inner.run(ctx)
        finally:
            self.busy_s += time.perf_counter() - t


class Approver:
    """Approves every gate at once."""

    async def ask(self, state: WorkflowState, gate: Gate) -> HumanInput:
        return HumanInput(HumanAnswerKind.APPROVE, by="bench")


async def overhead(workflows: int, latency: float) -> None:
    model = Latency(ScriptedChatModel(responder=World()), latency)
    with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "data") as store:
        agents = TimedAgents(build_agents(model, compact=False))
        service = WorkflowRunner(
            store, build_coordinator(model), agents, clock=SystemClock(), human=Approver()
        )
        config = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)
        ids = [
            service.create(
                "fill missing values in tabular rows", config, workspace_root=Path(tmp) / "ws"
            ).workflow_id
            for _ in range(workflows)
        ]
        t = time.perf_counter()
        decisions = 0
        for wid in ids:
            model.inner = ScriptedChatModel(responder=World())  # fresh report queues
            state = await service.run(wid)
            assert state.machine_state.value == "completed", state.machine_state
            decisions += len(state.decisions)
        wall = time.perf_counter() - t
    own = wall - agents.busy_s - model.decision_s
    print(f"{workflows} workflows, {decisions} decisions, LLM latency {latency:g} s per call")
    print(
        f"  wall {wall:.2f} s = agent steps {agents.busy_s:.2f} s + LLM decisions "
        f"{model.decision_s:.2f} s + orchestrator {own * 1000:.1f} ms"
    )
    print(
        f"  orchestrator's own share: {own / wall * 100:.3f} % "
        f"({own / decisions * 1000:.2f} ms per decision, commits included; target < 1 %)"
    )


async def review_gain(model_for: Any, label: str, rounds: int) -> None:
    """Wall time of a code-validation step with 5a/5b overlapping vs taking turns."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "prep.py").write_text(PREP)
        (ws / "test_prep.py").write_text(TEST_PREP)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for serial in (False, True):
                model = model_for(serial)
                agents = build_agents(model, compact=True)
                ctx = StepContext(
                    workflow_id="bench",
                    step=Step.CODE_VALIDATION,
                    workspace=ws,
                    requirements="fill missing values",
                    plan_markdown="# plan\n- `prep.py`\n- `test_prep.py`",
                    plan_version=1,
                    timeout_s=600,
                )
                t = time.perf_counter()
                review = await agents.agent_for(Step.CODE_VALIDATION).run(ctx)
                times[serial].append(time.perf_counter() - t)
                assert not isinstance(review, CodeChange)
    conc, seq = min(times[False]), min(times[True])
    print(
        f"  {label}: concurrent {conc:.2f} s, one at a time {seq:.2f} s -> "
        f"gain {seq - conc:.2f} s per validation ({seq / conc:.2f}x)"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workflows", type=int, default=3)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--local-model", action="store_true")
    args = ap.parse_args()
    configure_logging("console", "ERROR")
    await overhead(args.workflows, args.latency)
    print("5a/5b concurrency on the code-validation step (tools included):")
    await review_gain(
        lambda serial: Latency(
            ScriptedChatModel(
                responder=World(
                    reviews=[
                        {
                            "overall_score": 9.0,
                            "critical_issues": 0,
                            "minor_issues": 0,
                            "verdict": "PASS",
                            "report": "ok",
                        }
                    ]
                )
            ),
            args.latency,
            serial,
        ),
        f"scripted LLM, {args.latency:g} s per call",
        2,
    )
    if args.local_model:
        with LocalModelServer(n_ctx=8192) as server:
            chat = server.chat_model(timeout_s=120, deadline_s=300)
            await review_gain(
                lambda serial: Latency(chat, 0.0, serial), "embedded SmolLM2 (llama.cpp)", 2
            )
            await chat.aclose()


if __name__ == "__main__":
    asyncio.run(main())
