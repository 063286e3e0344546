"""Shadow mode: the other decider answers beside each decision, recorded, never applied."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_runner import make_service, start

from orchestrator.cli.app import cli
from orchestrator.composition import open_store
from orchestrator.llm.openai_adapter import openai_chat_model
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.runner import ProgressEvent, ProgressKind
from state.config import Coordinator, LLMSettings, ShadowSettings, WorkflowConfig
from state.decision import DecisionSource, ShadowDecider, ShadowOutcome, ShadowRecord
from state.steps import MachineState
from state.store import DecisionEntry, EventEntry, LedgerKind, ShadowEntry, Store
from state.workflow import HumanAnswerKind

from support.fake_openai import Content, Delay, FakeOpenAIServer
from support.world import World

SHADOW = WorkflowConfig(shadow=ShadowSettings(enabled=True))


def first_legal(request: LLMRequest) -> dict[str, Any]:
    """A decision answer naming the first action the schema allows."""
    assert request.json_schema is not None
    action = request.json_schema["properties"]["action"]["enum"][0]
    return {"action": action, "rationale": "the first listed", "confidence": 0.9}


class Answering:
    """The world's agent answers, and decisions answered by ``decide``."""

    def __init__(self, decide: Any = first_legal) -> None:
        self.world = World()
        self.decide = decide

    def __call__(self, request: LLMRequest) -> Any:
        if request.purpose == "decision":
            return self.decide(request)
        return self.world(request)


class GatedModel:
    """A scripted model whose decision answers wait until a validator step asks something."""

    def __init__(self) -> None:
        self.inner = ScriptedChatModel(responder=Answering())
        self.released = asyncio.Event()
        self.waiting = 0

    @property
    def model_name(self) -> str:
        return "gated"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if request.purpose == "decision":
            self.waiting += 1
            await self.released.wait()
        elif request.purpose.startswith("step2"):
            self.released.set()
        return await self.inner.complete(request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "data") as s:
        yield s


def shadows(store: Store, wid: str) -> list[ShadowRecord]:
    """The workflow's shadow records, in ledger order."""
    return [
        e.content.record
        for e in store.ledger(wid, kinds=(LedgerKind.SHADOW,))
        if isinstance(e.content, ShadowEntry)
    ]


def events(store: Store, wid: str, name: str) -> list[EventEntry]:
    """The workflow's events called ``name``."""
    return [
        e.content
        for e in store.ledger(wid, kinds=(LedgerKind.EVENT,))
        if isinstance(e.content, EventEntry) and e.content.event == name
    ]


async def run_to_gate(
    store: Store,
    tmp_path: Path,
    model: ChatModel,
    config: WorkflowConfig,
    at: MachineState | None = MachineState.AWAITING_PLAN_APPROVAL,
) -> Any:
    """Run a new workflow on ``model`` until it stops, at the plan gate unless ``at`` is None."""
    service = make_service(store, model)
    wid = start(service, tmp_path, config)
    state = await service.run(wid)
    assert at is None or state.machine_state is at
    return wid, state


async def test_llm_shadows_rule_decisions_without_changing_them(
    store: Store, tmp_path: Path
) -> None:
    """Beside each rule decision with a choice, the LLM's answer is recorded; nothing else moves."""
    plain = await run_to_gate(
        store, tmp_path, ScriptedChatModel(responder=Answering()), WorkflowConfig()
    )
    wid, state = await run_to_gate(
        store, tmp_path, ScriptedChatModel(responder=Answering()), SHADOW
    )
    _, before = plain
    # The same decisions, and the shadow calls are charged to no budget of the workflow.
    assert [r.decision for r in state.decisions] == [r.decision for r in before.decisions]
    assert state.counters == before.counters
    found = shadows(store, wid)
    assert found, "some rule decisions had a choice to shadow"
    by_seq = {r.seq: r for r in state.decisions}
    for shadow in found:
        applied = by_seq[shadow.decision_seq]
        assert shadow.decider is ShadowDecider.LLM
        assert applied.source is DecisionSource.PROGRAMMATIC
        assert shadow.applied == applied.decision
        assert shadow.llm is not None and shadow.llm.attempts == 1
        expected = (
            ShadowOutcome.AGREED
            if shadow.decision is not None and shadow.decision.same_action(applied.decision)
            else ShadowOutcome.DISAGREED
        )
        assert shadow.outcome is expected
        assert len(applied.legal_actions) > 1


async def test_applied_decisions_do_not_wait_for_the_shadow(store: Store, tmp_path: Path) -> None:
    """A shadow call still blocked does not hold its decision back; it is recorded on arrival."""
    model = GatedModel()
    committed: list[int] = []

    class Watch:
        def on_event(self, event: ProgressEvent) -> None:
            if event.kind is ProgressKind.DECISION and event.decision is not None:
                committed.append(event.decision.seq)

    service = make_service(store, model)
    service.observers.append(Watch())
    wid = start(service, tmp_path, SHADOW)
    state = await service.run(wid)
    assert state.machine_state is MachineState.AWAITING_PLAN_APPROVAL
    assert model.waiting >= 1
    recorded = shadows(store, wid)
    dropped = events(store, wid, "shadow_dropped")
    # Every decision was committed while its shadow waited; those released mid-run were
    # recorded, the rest dropped when the run stopped at the gate.
    assert committed == [r.seq for r in state.decisions]
    assert recorded or dropped
    assert len(recorded) + len(dropped) == model.waiting
    assert {d.data["decision_seq"] for d in dropped} <= set(committed)
    assert all(s.outcome in (ShadowOutcome.AGREED, ShadowOutcome.DISAGREED) for s in recorded)


async def test_a_failing_shadow_is_a_shadow_outcome(store: Store, tmp_path: Path) -> None:
    """A shadow call that raises is recorded as failed; the workflow goes on as without it."""

    def broken(request: LLMRequest) -> Any:
        raise RuntimeError("the shadow model broke")

    wid, state = await run_to_gate(
        store, tmp_path, ScriptedChatModel(responder=Answering(broken)), SHADOW
    )
    found = shadows(store, wid)
    assert found and all(s.outcome is ShadowOutcome.FAILED for s in found)
    assert all("the shadow model broke" in (s.error or "") for s in found)
    assert all(r.source is DecisionSource.PROGRAMMATIC for r in state.decisions)


async def test_shadow_calls_have_their_own_budget(store: Store, tmp_path: Path) -> None:
    """``shadow.max_calls`` bounds the shadow LLM requests, over every run of the workflow."""
    config = WorkflowConfig(shadow=ShadowSettings(enabled=True, max_calls=1))
    model = ScriptedChatModel(responder=Answering())
    service = make_service(store, model)
    wid = start(service, tmp_path, config)
    state = await service.run(wid)
    assert len(shadows(store, wid)) == 1
    assert len([r for r in state.decisions if len(r.legal_actions) > 1]) > 1
    # Resumed after the plan gate: the budget spent in the first run still counts.
    service.answer(wid, None, HumanAnswerKind.APPROVE, by="alice")
    resumed = await service.run(wid)
    assert len(resumed.decisions) > len(state.decisions)
    assert len(shadows(store, wid)) == 1


async def test_rules_shadow_every_llm_decision(store: Store, tmp_path: Path) -> None:
    """With the LLM deciding, the rules' own answer is recorded beside each LLM decision."""
    config = SHADOW.model_copy(update={"coordinator": Coordinator.LLM})
    model = ScriptedChatModel(responder=Answering())
    wid, state = await run_to_gate(store, tmp_path, model, config, at=None)
    llm_made = {r.seq: r for r in state.decisions if r.source is DecisionSource.LLM}
    found = shadows(store, wid)
    assert llm_made and {s.decision_seq for s in found} == set(llm_made)
    for shadow in found:
        assert shadow.decider is ShadowDecider.RULES
        record = llm_made[shadow.decision_seq]
        agreed = record.programmatic_alternative is None
        assert (shadow.outcome is ShadowOutcome.AGREED) is agreed


def test_decisions_lists_shadows_only_when_asked(store: Store, tmp_path: Path) -> None:
    """``decisions`` lists shadow answers only with ``--shadow``; replay skips them."""
    model = ScriptedChatModel(responder=Answering())
    wid, state = asyncio.run(run_to_gate(store, tmp_path, model, SHADOW))
    n = len(shadows(store, wid))
    data = str(tmp_path / "data")
    plain = CliRunner().invoke(cli, ["decisions", "--format", "json", "--data-dir", data])
    assert plain.exit_code == 0, plain.output
    rows = [json.loads(line) for line in plain.output.splitlines()]
    assert len(rows) == len(state.decisions)
    assert not any(r["source"].startswith("shadow_") for r in rows)
    with_shadow = CliRunner().invoke(
        cli, ["decisions", "--shadow", "--format", "json", "--data-dir", data]
    )
    rows = [json.loads(line) for line in with_shadow.output.splitlines()]
    assert sum(r["source"] == "shadow_llm" for r in rows) == n
    replayed = CliRunner().invoke(cli, ["replay", wid, "--json", "--data-dir", data])
    assert replayed.exit_code == 0, replayed.output
    report = json.loads(replayed.output)
    assert report["flips"] == [] and report["decisions"] == len(state.decisions)


def test_shadow_answers_round_trip_in_the_ledger(store: Store, tmp_path: Path) -> None:
    """A shadow entry is stored as its own kind, apart from the applied decisions."""
    wid, _ = asyncio.run(
        run_to_gate(store, tmp_path, ScriptedChatModel(responder=Answering()), SHADOW)
    )
    kinds = {e.kind for e in store.ledger(wid)}
    assert LedgerKind.SHADOW in kinds
    decisions = store.ledger(wid, kinds=(LedgerKind.DECISION,))
    assert all(isinstance(e.content, DecisionEntry) for e in decisions)


async def test_a_slow_http_shadow_never_delays_the_workflow(store: Store, tmp_path: Path) -> None:
    """Against a slow loopback server, the workflow reaches its gate; the shadows are dropped."""
    world = World()

    def respond(body: dict[str, Any]) -> Any:
        reply = world.http_responder(body)
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        if "action" in schema.get("properties", {}):
            action = schema["properties"]["action"]["enum"][0]
            text = json.dumps({"action": action, "rationale": "slow", "confidence": 0.9})
            return Delay(30.0, then=Content(text))
        return reply

    with FakeOpenAIServer(responder=respond) as server:
        model = openai_chat_model(server.base_url, "sk-test", "fake-model", timeout_s=60)
        try:
            config = SHADOW.model_copy(
                update={"llm": LLMSettings(call_timeout_s=60, decision_deadline_s=60)}
            )
            wid, state = await asyncio.wait_for(run_to_gate(store, tmp_path, model, config), 20)
        finally:
            await model.aclose()
    dropped = events(store, wid, "shadow_dropped")
    assert dropped, "the shadow calls were still waiting when the run stopped"
    assert shadows(store, wid) == []
    assert all(r.source is DecisionSource.PROGRAMMATIC for r in state.decisions)
