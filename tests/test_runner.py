"""End to end through the runner with a scripted LLM, the real store and the real tools."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.base import StepAgents
from agents.human import HumanInput
from agents.planner import PlannerAgent
from agents.programmer import ProgrammerAgent
from agents.validator import ValidatorAgent
from orchestrator.composition import build_coordinator, open_store
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.consistency import find_inconsistency
from orchestrator.running.runner import ProgressEvent, WorkflowRunner
from prompt_templates.loader import TemplateLoader
from state.clock import SystemClock
from state.config import Coordinator, Limits, WorkflowConfig
from state.decision import DecisionSource
from state.errors import LLMUnavailableError
from state.reports import CodeValidationReport, PlanDraft
from state.steps import Gate, MachineState, Step
from state.store import LedgerKind, Store
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState

from support.world import BAD_PLAN, GOOD_PLAN, GOOD_REVIEW, World

CONFIG = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)


@dataclass
class Answers:
    """A human who answers from a script, gate by gate."""

    script: list[HumanInput | None]
    asked: list[Gate] = field(default_factory=list)

    async def ask(self, state: WorkflowState, gate: Gate) -> HumanInput | None:
        self.asked.append(gate)
        return self.script.pop(0) if self.script else None


class Recorder:
    """Keeps every progress event."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def on_event(self, event: ProgressEvent) -> None:
        self.events.append(event)


APPROVE = HumanInput(HumanAnswerKind.APPROVE, by="alice")


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each runner test on the SQLite store (calls on the worker thread) and in memory (inline)."""
    where = tmp_path / "data" if request.param == "sqlite" else "memory://"
    with open_store(where) as s:
        yield s


class Waits:
    """The runner's backoff sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_service(
    store: Store,
    model: ChatModel,
    human: Answers | None = None,
    recorder: Recorder | None = None,
    waits: Waits | None = None,
) -> WorkflowRunner:
    templates = TemplateLoader()
    agents = StepAgents(
        planner=PlannerAgent(model, templates),
        validator=ValidatorAgent(
            model,
            templates,
            sandbox=Sandbox(SandboxLimits(wall_timeout_s=60)),
        ),
        programmer=ProgrammerAgent(model, templates),
    )
    return WorkflowRunner(
        store,
        build_coordinator(model),
        agents,
        clock=SystemClock(),
        human=human,
        observers=[recorder] if recorder else [],
        sleep=waits or Waits(),
    )


def start(service: WorkflowRunner, tmp_path: Path, config: WorkflowConfig = CONFIG) -> str:
    return service.create(
        "fill missing values in tabular rows", config, workspace_root=tmp_path / "ws"
    ).workflow_id


def steps_of(state: WorkflowState) -> list[int]:
    return [int(r.step) for r in state.history if r.status is StepStatus.COMPLETED]


async def test_plan_and_code_converge_with_both_gates_approved(
    store: Store, tmp_path: Path
) -> None:
    """One plan revision, one code refinement, both gates approved: completed."""
    world = World()
    human = Answers([APPROVE, APPROVE])
    rec = Recorder()
    service = make_service(store, ScriptedChatModel(responder=world), human, rec)
    wid = start(service, tmp_path)
    state = await service.run(wid)
    assert state.machine_state is MachineState.COMPLETED
    assert steps_of(state) == [1, 2, 3, 2, 4, 5, 6, 7]
    assert human.asked == [Gate.PLAN, Gate.FINAL]
    final = state.history[-1].result
    assert isinstance(final, CodeValidationReport)
    assert {t.name: t.status.value for t in final.tools}["pytest"] == "passed"
    assert (Path(state.workspace) / "prep.py").exists()
    assert find_inconsistency(state, CONFIG) is None
    # Everything is in the store: each decision and step result, in order.
    ledger = store.ledger(wid)
    kinds = [e.kind for e in ledger]
    assert kinds.count(LedgerKind.DECISION) == len(state.decisions)
    assert kinds.count(LedgerKind.HUMAN_ANSWER) == 2
    first_decision = kinds.index(LedgerKind.DECISION)
    assert kinds[first_decision + 1] is LedgerKind.STEP_RESULT  # decision committed first
    assert store.load(wid).state == state
    assert {e.kind for e in rec.events} >= {"decision", "step_started", "step_finished", "finished"}
    # The files the steps wrote are listed, each plan version and each code file once.
    listed = [(a.kind, Path(a.path).name) for a in store.artifacts(wid)]
    plans = [r.result for r in state.history if isinstance(r.result, PlanDraft)]
    assert listed == [(f"plan_v{p.version}", Path(p.path).name) for p in plans if p.path] + [
        ("code", "prep.py"),
        ("code", "test_prep.py"),
    ]


async def test_rejection_ends_the_workflow(store: Store, tmp_path: Path) -> None:
    """A human rejection at the plan gate ends the workflow as rejected."""
    world = World(plan_reports=[GOOD_PLAN])
    service = make_service(
        store,
        ScriptedChatModel(responder=world),
        Answers([HumanInput(HumanAnswerKind.REJECT, by="bob", comment="wrong scope")]),
    )
    state = await service.run(start(service, tmp_path))
    assert state.machine_state is MachineState.REJECTED
    assert state.decisions[-1].source is DecisionSource.HUMAN
    assert state.human_answers[-1].comment == "wrong scope"


async def test_change_request_reaches_the_next_step(store: Store, tmp_path: Path) -> None:
    """Changes requested at the plan gate are in the revision planner's prompt."""
    world = World(plan_reports=[GOOD_PLAN])
    changes = HumanInput(
        HumanAnswerKind.REQUEST_CHANGES, by="carol", changes=("add a data-quality report",)
    )
    service = make_service(store, ScriptedChatModel(responder=world), Answers([changes]))
    state = await service.run(start(service, tmp_path))
    assert state.waiting_gate is Gate.PLAN  # revised, validated, asking again
    revision_prompts = world.prompts_for("step3_revision_planner")
    assert len(revision_prompts) == 1
    assert "add a data-quality report" in revision_prompts[0]


async def test_escalation_at_the_revision_limit(store: Store, tmp_path: Path) -> None:
    """A plan that never converges escalates at the limit and the process stops waiting."""
    world = World(plan_reports=[BAD_PLAN])
    config = CONFIG.model_copy(update={"limits": Limits(max_plan_revisions=1)})
    service = make_service(store, ScriptedChatModel(responder=world))
    wid = start(service, tmp_path, config)
    state = await service.run(wid)
    assert state.machine_state is MachineState.ESCALATED and state.waiting_gate is Gate.ESCALATION
    assert steps_of(state) == [1, 2, 3, 2]
    assert store.list_workflows()[0].waiting_gate == "escalation"


class SlowFirstCall:
    """A chat model whose first planner call takes longer than the step timeout."""

    def __init__(self, inner: ScriptedChatModel) -> None:
        self.inner = inner
        self.slowed = False

    @property
    def model_name(self) -> str:
        return "slow-first"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if not self.slowed and request.purpose.startswith("step1"):
            self.slowed = True
            await asyncio.sleep(5)
        return await self.inner.complete(request)


async def test_agent_timeout_is_recovered_by_a_retry(store: Store, tmp_path: Path) -> None:
    """An agent that times out is retried with a longer timeout and the workflow goes on."""
    world = World(plan_reports=[GOOD_PLAN])
    config = CONFIG.model_copy(update={"limits": Limits(step_timeout_s=0.5)})
    service = make_service(store, SlowFirstCall(ScriptedChatModel(responder=world)))
    state = await service.run(start(service, tmp_path, config))
    first, second = state.history[0], state.history[1]
    assert first.step is Step.INITIAL_PLANNING and first.status is StepStatus.FAILED
    assert first.error is not None and first.error.type == "timeout"
    assert second.step is Step.INITIAL_PLANNING and second.status is StepStatus.COMPLETED
    retry = state.decisions[1].decision
    assert retry.action.value == "retry_step"
    assert retry.recovery_strategy is not None
    assert retry.recovery_strategy.value == "extended_timeout"
    assert state.waiting_gate is Gate.PLAN


async def test_answer_then_resume(store: Store, tmp_path: Path) -> None:
    """A workflow left at a gate is answered later and resumed to completion."""
    world = World(plan_reports=[GOOD_PLAN], reviews=[GOOD_REVIEW])
    service = make_service(store, ScriptedChatModel(responder=world))
    wid = start(service, tmp_path)
    assert (await service.run(wid)).waiting_gate is Gate.PLAN
    service.answer(wid, Gate.PLAN, HumanAnswerKind.APPROVE, by="dana", comment="ship it")
    state = await service.run(wid)
    assert state.waiting_gate is Gate.FINAL
    service.answer(wid, None, HumanAnswerKind.APPROVE, by="dana")
    state = await service.run(wid)
    assert state.machine_state is MachineState.COMPLETED


async def test_many_workflows_run_concurrently(store: Store, tmp_path: Path) -> None:
    """Several workflows progress together, each to its own gate."""
    world = World(plan_reports=[GOOD_PLAN])
    service = make_service(store, ScriptedChatModel(responder=world))
    ids = [start(service, tmp_path) for _ in range(4)]
    results = await service.run_many(ids, concurrency=4)
    assert all(isinstance(r, WorkflowState) and r.waiting_gate is Gate.PLAN for r in results)


async def test_llm_failure_becomes_a_step_error(store: Store, tmp_path: Path) -> None:
    """An LLM that is down makes steps fail and retry, then escalate; the runner never crashes."""
    model = ScriptedChatModel(responder=lambda r: LLMUnavailableError("server down"))
    waits = Waits()
    service = make_service(store, model, waits=waits)
    state = await service.run(start(service, tmp_path))
    assert state.machine_state is MachineState.ESCALATED
    errors = [r.error.type for r in state.history if r.error]
    assert errors and set(errors) == {"llm_unavailable"}
    assert state.decisions[-1].decision.escalation_reason is not None
    # Every retry of the unavailable LLM backed off first, each wait longer than the last.
    assert len(waits.calls) == len(errors) - 1 and waits.calls == sorted(waits.calls)


class LedgerProbe:
    """A chat model that, when asked for a decision, looks at what the store already holds."""

    def __init__(self, inner: ScriptedChatModel, store: Store) -> None:
        self.inner = inner
        self.store = store
        self.seen: list[list[str]] = []

    @property
    def model_name(self) -> str:
        return "probe"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if request.purpose == "decision":
            wid = self.store.list_workflows()[0].workflow_id
            self.seen.append([e.kind.value for e in self.store.ledger(wid)])
        return await self.inner.complete(request)


async def test_step_result_is_committed_before_an_llm_decision(
    store: Store, tmp_path: Path
) -> None:
    """A finished step is in the store before the LLM is consulted on what follows it."""
    borderline = {**GOOD_PLAN, "alignment_score": 9.1}  # near its threshold: LLM consulted
    world = World(
        plan_reports=[borderline],
        decisions=[{"action": "request_plan_approval", "rationale": "ok", "confidence": 0.9}],
    )
    probe = LedgerProbe(ScriptedChatModel(responder=world), store)
    service = make_service(store, probe)
    wid = start(service, tmp_path, WorkflowConfig(coordinator=Coordinator.HYBRID))
    state = await service.run(wid)
    assert state.waiting_gate is Gate.PLAN
    assert probe.seen == [["decision", "step_result", "decision", "step_result"]]
    kinds = [e.kind.value for e in store.ledger(wid)]
    assert kinds == ["decision", "step_result", "decision", "step_result", "decision"]
