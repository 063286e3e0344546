"""Every LLM call counted: by purpose and step, within budgets, priced, retried honestly."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.base import StepAgents
from agents.human import HumanInput
from agents.planner import PlannerAgent
from agents.programmer import ProgrammerAgent
from agents.validator import ValidatorAgent
from orchestrator.cli import cli
from orchestrator.composition import LLMTarget, build_coordinator, open_chat_model, open_store
from orchestrator.deciding.llm_decider import MAX_RATIONALE
from orchestrator.execution.sandbox import Sandbox
from orchestrator.llm.backoff import backoff_delay
from orchestrator.llm.protocol import ChatModel
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.runner import WorkflowRunner
from prompt_templates.loader import TemplateLoader
from state.clock import FixedClock, SystemClock
from state.config import Coordinator, Limits, LLMSettings, WorkflowConfig
from state.decision import DecisionSource, EscalationReason
from state.errors import LLMUnavailableError
from state.reports import PlanDraft
from state.steps import Gate, MachineState, Step
from state.store import EventEntry, Store
from state.usage import ModelPrice, Purpose
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState

from builders import Driver, plan_report
from support.fake_openai import Content, FakeOpenAIServer, Status
from support.world import World

PROGRAMMATIC = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)
PLANNER_PURPOSES = ("step1_initial_planner", "step3_revision_planner")
# The scripted model reports 100 prompt and 20 completion tokens per call.
TOKENS_PER_CALL = 120


class Sleeps:
    """An injected sleep that records what it was asked to wait and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real SQLite store in a temporary directory."""
    with open_store(tmp_path / "data") as s:
        yield s


def runner(store: Store, model: ChatModel, *, sleep: Sleeps | None = None) -> WorkflowRunner:
    """The real runner with the real agents and coordinator on ``model``."""
    templates = TemplateLoader()
    agents = StepAgents(
        planner=PlannerAgent(model, templates),
        validator=ValidatorAgent(model, templates, sandbox=Sandbox()),
        programmer=ProgrammerAgent(model, templates),
    )
    return WorkflowRunner(
        store,
        build_coordinator(model),
        agents,
        clock=SystemClock(),
        sleep=sleep or Sleeps(),
        rng=random.Random(7),
    )


async def run_new(service: WorkflowRunner, tmp_path: Path, config: WorkflowConfig) -> WorkflowState:
    """Create a workflow and run it until it stops."""
    wid = service.create("fill missing values", config, workspace_root=tmp_path / "ws").workflow_id
    return await service.run(wid)


async def test_agent_calls_are_counted_per_purpose_and_per_step(
    store: Store, tmp_path: Path
) -> None:
    """A programmatic run's planner and validator calls all show in the counters (old: 0)."""
    model = ScriptedChatModel(responder=World())
    state = await run_new(runner(store, model), tmp_path, PROGRAMMATIC)

    assert state.machine_state is MachineState.AWAITING_PLAN_APPROVAL
    purposes = [call.purpose.split(":")[0] for call in model.calls]
    planner = sum(p in PLANNER_PURPOSES for p in purposes)
    c = state.counters
    assert c.llm_calls == len(model.calls) >= 4
    assert c.prompt_tokens + c.completion_tokens == TOKENS_PER_CALL * len(model.calls)
    assert c.llm_usage.of(Purpose.PLANNER).calls == planner
    assert c.llm_usage.of(Purpose.VALIDATOR).calls == len(model.calls) - planner
    assert c.llm_usage.of(Purpose.DECISION).calls == 0
    per_step = [r.llm_usage.calls for r in state.history if r.llm_usage is not None]
    assert len(per_step) == len(state.history) and sum(per_step) == c.llm_calls
    assert c.llm_cost_usd is None  # no price table: no cost shown
    assert store.load(state.workflow_id).state == state


async def test_every_http_request_is_counted_through_the_real_adapter(
    store: Store, tmp_path: Path
) -> None:
    """Through a loopback server, failed requests included, the count is the server's count."""
    world = World()
    settings = LLMSettings(max_retry_after_s=0.0)
    with FakeOpenAIServer(responder=world.http_responder) as server:
        server.push(Status(503, headers={"Retry-After": "0"}))  # the first call retries once
        target = LLMTarget(server.base_url, "sk-test", "fake-model")
        async with open_chat_model(target, settings) as model:
            state = await run_new(runner(store, model), tmp_path, WorkflowConfig(llm=settings))
        requests = len(server.chat_requests)

    assert state.machine_state is MachineState.AWAITING_PLAN_APPROVAL
    assert state.counters.llm_calls == requests
    first = state.history[0]
    assert first.llm_usage is not None and first.llm_usage.calls == 2


async def test_a_failed_call_is_charged_and_a_backoff_retry_waits(
    store: Store, tmp_path: Path
) -> None:
    """A planner call that fails is counted; the backoff retry waits 2-4 s, recorded as an event."""
    model = ScriptedChatModel([LLMUnavailableError("down")], responder=World())
    sleeps = Sleeps()
    config = WorkflowConfig(
        coordinator=Coordinator.PROGRAMMATIC, limits=Limits(backoff_base_s=4.0, backoff_max_s=30)
    )
    state = await run_new(runner(store, model, sleep=sleeps), tmp_path, config)

    failed, retried = state.history[0], state.history[1]
    assert failed.status is StepStatus.FAILED and failed.error is not None
    assert failed.llm_usage is not None and failed.llm_usage.calls == 1
    assert failed.llm_usage.tokens == 0
    assert retried.step is Step.INITIAL_PLANNING and retried.status is StepStatus.COMPLETED
    assert state.decisions[1].decision.recovery_strategy is not None
    assert state.decisions[1].decision.recovery_strategy.value == "backoff"
    (waited,) = sleeps.calls
    assert 2.0 <= waited <= 4.0
    events = [
        e.content for e in store.ledger(state.workflow_id) if isinstance(e.content, EventEntry)
    ]
    assert [(e.event, dict(e.data)) for e in events] == [
        ("step_backoff", {"step": 1, "attempt": 2, "waited_s": waited})
    ]
    assert state.counters.llm_calls == len(model.calls)


def test_backoff_waits_grow_and_are_capped() -> None:
    """The n-th retry waits between half and all of base*2^(n-1), never above the cap."""
    rng = random.Random(3)
    waits = [backoff_delay(n, 1.0, 5.0, rng) for n in (1, 2, 3, 4, 5)]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 2.0 <= waits[2] <= 4.0
    assert all(2.5 <= w <= 5.0 for w in waits[3:])


async def test_a_spent_call_budget_escalates_the_agent_step(store: Store, tmp_path: Path) -> None:
    """With 2 calls allowed, step 3 is refused (budget_exhausted, not retried) and escalates."""
    model = ScriptedChatModel(responder=World())
    config = WorkflowConfig(
        coordinator=Coordinator.PROGRAMMATIC, llm=LLMSettings(max_calls_per_workflow=2)
    )
    state = await run_new(runner(store, model), tmp_path, config)

    assert len(model.calls) == 2 and state.counters.llm_calls == 2
    refused = state.history[-1]
    assert refused.step is Step.PLAN_REVISION and refused.error is not None
    assert refused.error.type == "budget_exhausted" and refused.error.retryable is False
    assert "LLM call budget spent (2/2 calls)" in refused.error.message
    assert refused.llm_usage is None
    assert state.machine_state is MachineState.ESCALATED
    last = state.decisions[-1].decision
    assert last.escalation_reason is EscalationReason.LLM_BUDGET_EXHAUSTED


class ApproveEscalations:
    """A human who lets every escalated workflow go on, and waits at every other gate."""

    def __init__(self) -> None:
        self.asked: list[Gate] = []

    async def ask(self, state: WorkflowState, gate: Gate) -> HumanInput | None:
        self.asked.append(gate)
        if gate is Gate.ESCALATION:
            return HumanInput(HumanAnswerKind.APPROVE, by="olga")
        return None


async def test_a_human_going_on_after_a_budget_escalation_grants_fresh_budget(
    store: Store, tmp_path: Path
) -> None:
    """Approved at the escalation, the refused step is retried with 2 more calls, and goes on."""
    model = ScriptedChatModel(responder=World())
    config = WorkflowConfig(
        coordinator=Coordinator.PROGRAMMATIC, llm=LLMSettings(max_calls_per_workflow=2)
    )
    human = ApproveEscalations()
    service = runner(store, model)
    service.human = human
    state = await run_new(service, tmp_path, config)

    # steps 1, 2 | step 3 refused, escalation approved | step 3 retried, 2 converges
    assert human.asked == [Gate.ESCALATION, Gate.PLAN]
    assert "fresh LLM budget" in state.decisions[4].decision.rationale
    assert state.decisions[4].decision.action.value == "retry_step"
    completed = [int(r.step) for r in state.history if r.status is StepStatus.COMPLETED]
    assert completed == [1, 2, 3, 2]
    assert state.machine_state is MachineState.AWAITING_PLAN_APPROVAL
    assert state.counters.llm_calls == len(model.calls) == 4


async def test_a_spent_token_budget_stops_agent_calls_too(store: Store, tmp_path: Path) -> None:
    """A token budget spent by the first call refuses the second, and the workflow escalates."""
    model = ScriptedChatModel(responder=World())
    config = WorkflowConfig(
        coordinator=Coordinator.PROGRAMMATIC, llm=LLMSettings(max_tokens_per_workflow=100)
    )
    state = await run_new(runner(store, model), tmp_path, config)

    assert len(model.calls) == 1
    assert state.machine_state is MachineState.ESCALATED
    assert state.history[-1].error is not None
    assert "token budget spent (120/100 tokens)" in state.history[-1].error.message


async def test_prices_give_an_estimated_cost_beside_the_counters(
    store: Store, tmp_path: Path
) -> None:
    """$1 per 1k prompt and $2 per 1k completion tokens: 0.14 USD per scripted call."""
    model = ScriptedChatModel(responder=World())
    prices = {"scripted": ModelPrice(prompt_per_1k=1.0, completion_per_1k=2.0)}
    config = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC, llm=LLMSettings(prices=prices))
    state = await run_new(runner(store, model), tmp_path, config)

    calls = len(model.calls)
    assert state.counters.llm_cost_usd == pytest.approx(0.14 * calls)
    planner = state.counters.llm_usage.of(Purpose.PLANNER)
    assert planner.cost_usd == pytest.approx(0.14 * planner.calls)
    assert state.history[0].llm_usage is not None
    assert state.history[0].llm_usage.cost_usd == pytest.approx(0.14)


def test_prices_are_read_from_yaml_shaped_config() -> None:
    """llm.prices is a mapping of model name to per-1k prices; empty by default."""
    config = WorkflowConfig.model_validate(
        {"llm": {"prices": {"gpt-4o": {"prompt_per_1k": 0.0025, "completion_per_1k": 0.01}}}}
    )
    assert config.llm.prices["gpt-4o"].completion_per_1k == 0.01
    assert WorkflowConfig().llm.prices == {}


def anomalous(settings: LLMSettings) -> Driver:
    """A workflow whose plan report misses a score: the hybrid coordinator asks the LLM."""
    d = Driver(WorkflowConfig(llm=settings))
    d.run_step(PlanDraft(version=1, markdown="# plan"))
    d.run_step(plan_report(s=None, markdown="Overall: looks fine."))
    return d


async def test_max_attempts_bounds_the_http_requests_of_a_decision() -> None:
    """max_attempts 3 and a server failing every time: 3 requests (old: 4), attempts says 3."""
    settings = LLMSettings(max_attempts=3, max_retry_after_s=0.0)
    with FakeOpenAIServer() as server:
        for _ in range(6):
            server.push(Status(500, headers={"Retry-After": "0"}))
        target = LLMTarget(server.base_url, "sk-test", "fake-model")
        async with open_chat_model(target, settings) as model:
            d = anomalous(settings)
            state, rec = await build_coordinator(model, FixedClock()).decide(d.state, d.config)
        requests = len(server.chat_requests)

    assert requests == 3
    assert rec.llm is not None and rec.llm.attempts == 3
    assert rec.source is DecisionSource.PROGRAMMATIC_FALLBACK
    assert state.counters.llm_calls == 3
    assert state.counters.llm_usage.of(Purpose.DECISION).calls == 3


async def test_re_asks_after_bad_output_share_the_request_bound() -> None:
    """Prose answers are re-asked, but all of them together stay within max_attempts requests."""
    settings = LLMSettings(max_attempts=3)
    with FakeOpenAIServer() as server:
        for _ in range(6):
            server.push(Content("I think you should escalate."))
        target = LLMTarget(server.base_url, "sk-test", "fake-model")
        async with open_chat_model(target, settings) as model:
            d = anomalous(settings)
            _, rec = await build_coordinator(model, FixedClock()).decide(d.state, d.config)
        requests = len(server.chat_requests)

    assert requests == 3
    assert rec.llm is not None and rec.llm.attempts == 3


async def test_a_long_rationale_says_it_was_cut() -> None:
    """A 5000-character rationale is kept to the limit and ends saying where it was cut."""
    d = anomalous(LLMSettings())
    long = "because " * 625
    model = ScriptedChatModel([{"action": "escalate", "rationale": long, "confidence": 0.9}])
    _, rec = await build_coordinator(model, FixedClock()).decide(d.state, d.config)

    rationale = rec.decision.rationale
    assert rationale.endswith(f"… [cut at {MAX_RATIONALE} chars]")
    assert len(rationale) <= MAX_RATIONALE
    assert rationale.startswith("because because")


SCRIPT = """
async def decide(ctx):
    await ctx.subagent("first question")
    await ctx.subagent("second question")
    return None
"""


def script_config(tmp_path: Path, **llm: int) -> WorkflowConfig:
    """A script coordinator asking two subagent questions per decision."""
    path = tmp_path / "coordinator.py"
    path.write_text(SCRIPT, encoding="utf-8")
    return WorkflowConfig(
        coordinator=Coordinator.SCRIPT, coordinator_script=str(path), llm=LLMSettings(**llm)
    )


async def test_script_subagent_calls_are_counted(tmp_path: Path) -> None:
    """A script's two subagent questions show as two script_subagent calls (old: none)."""
    d = Driver(script_config(tmp_path))
    model = ScriptedChatModel(["yes", "no"])
    state, rec = await build_coordinator(model, FixedClock()).decide(d.state, d.config)

    assert rec.source is DecisionSource.SCRIPT
    assert state.counters.llm_calls == 2
    assert state.counters.llm_usage.of(Purpose.SCRIPT_SUBAGENT).calls == 2
    assert state.counters.prompt_tokens == 200


async def test_a_spent_budget_refuses_script_subagent_calls(tmp_path: Path) -> None:
    """With one call allowed, the second question is refused and the decision falls back."""
    d = Driver(script_config(tmp_path, max_calls_per_workflow=1))
    model = ScriptedChatModel(["yes", "no"])
    state, rec = await build_coordinator(model, FixedClock()).decide(d.state, d.config)

    assert len(model.calls) == 1
    assert rec.source is DecisionSource.PROGRAMMATIC_FALLBACK
    assert rec.conflict_reason is not None and "budget spent" in rec.conflict_reason
    assert state.counters.llm_usage.of(Purpose.SCRIPT_SUBAGENT).calls == 1


def test_status_and_inspect_show_the_split(tmp_path: Path) -> None:
    """Status and inspect JSON carry the calls and tokens of each purpose beside the totals."""
    world = World()
    with FakeOpenAIServer(responder=world.http_responder) as server:
        env = {
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
            "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
        }
        args = ["run", "--requirements", "fill gaps", "--id", "wf-acc", "--coordinator"]
        cli_runner = CliRunner()
        ran = cli_runner.invoke(cli, [*args, "programmatic", "--no-input", "--quiet"], env=env)
        assert ran.exit_code == 0, ran.output
        requests = len(server.chat_requests)
    status = json.loads(cli_runner.invoke(cli, ["status", "wf-acc", "--json"], env=env).output)
    report = json.loads(cli_runner.invoke(cli, ["inspect", "wf-acc", "--json"], env=env).output)

    assert status["llm_calls"] == requests
    split = status["llm_usage"]
    assert set(split) == {p.value for p in Purpose}
    assert split["planner"]["calls"] + split["validator"]["calls"] == requests
    assert status["llm_cost_usd"] is None and "cost_usd" not in split["planner"]
    assert report["workflow"]["llm_usage"] == split
