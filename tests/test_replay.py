"""``orchestrator replay``: rebuilding each recorded decision's state and deciding it again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import cli
from orchestrator.composition import build_coordinator, open_store
from orchestrator.deciding.actions import trigger_of
from orchestrator.llm.cassette import Cassette
from orchestrator.llm.protocol import LLMRequest, Message
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.replay import checkpoints, recorded_answer
from prompt_templates.loader import TemplateLoader
from state.decision import LLMCallOutcome
from state.errors import LLMUnavailableError
from state.store import DecisionEntry, LedgerKind

from builders import Driver, plan_draft, plan_report
from support.fake_openai import FakeOpenAIServer
from support.world import GOOD_PLAN, World

# The LLM's picks in llm mode: the second one below the 0.7 confidence threshold, so the
# rules' decision stands there (recorded as a low-confidence fallback).
PICKS = (
    {"action": "invoke_step1", "rationale": "start with a plan", "confidence": 0.8},
    {"action": "invoke_step2", "rationale": "validate it", "confidence": 0.3},
    {"action": "request_plan_approval", "rationale": "converged", "confidence": 0.9},
)


@pytest.fixture
def world() -> World:
    return World(plan_reports=[GOOD_PLAN], decisions=[dict(p) for p in PICKS])


@pytest.fixture
def server(world: World) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=world.http_responder) as srv:
        yield srv


@pytest.fixture
def env(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
        "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
    }


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def run(env: dict[str, str], wid: str, mode: str) -> None:
    result = invoke(
        env, "run", "--requirements", "fill missing values", "--id", wid,
        "--coordinator", mode, "--no-input", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def replay(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = invoke(env, "replay", "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_cassette_replay_makes_no_call_and_reproduces_every_decision(
    env: dict[str, str], server: FakeOpenAIServer
) -> None:
    """Nothing changed: the recorded answers are replayed, no request reaches the server."""
    run(env, "wf-llm", "llm")
    recorded = len(server.requests)
    assert len(server.chat_requests) > 3  # the LLM did decide, and the agents ran
    [report] = replay(env, "wf-llm")
    assert len(server.requests) == recorded  # zero LLM calls, not even a model listing
    assert report["mode"] == "cassette" and report["decisions"] == 3
    assert report["identical"] == 3 and report["flips"] == [] and report["diverged_at"] is None
    assert report["llm_requests"] == 3  # each decision asked, and the cassette answered


def test_a_live_replay_with_another_model_reports_the_flips(
    env: dict[str, str], server: FakeOpenAIServer, world: World
) -> None:
    """A model that always escalates flips every decision; the first flip is the divergence."""
    run(env, "wf-llm", "llm")
    before = len(server.chat_requests)
    world.decisions.clear()  # from now on the world's decider answers escalate, sure of it
    world.decisions.append({"action": "escalate", "rationale": "ask", "confidence": 0.95})
    [report] = replay(env, "wf-llm", "--base-url", server.base_url)
    assert len(server.chat_requests) == before + 3  # the counter sees live calls
    assert report["mode"] == "live" and report["diverged_at"] == 1
    flipped = [(f["seq"], f["old_action"], f["new_action"]) for f in report["flips"]]
    assert flipped == [
        (1, "invoke_step1", "escalate"),
        (2, "invoke_step2", "escalate"),
        (3, "request_plan_approval", "escalate"),
    ]
    text = invoke(env, "replay", "wf-llm", "--base-url", server.base_url).output
    assert "#1 new [no signals]: invoke_step1 (llm) -> escalate (llm)" in text
    assert "first diverge at decision #1" in text


def test_a_rule_change_flips_the_gate_and_says_where(env: dict[str, str], tmp_path: Path) -> None:
    """Raising a plan threshold past the recorded score turns the plan gate into a revision."""
    run(env, "wf-rules", "programmatic")
    assert invoke(env, "approve", "wf-rules", "--as", "ana").exit_code == 0
    assert invoke(env, "resume", "wf-rules", "--no-input", "--quiet").exit_code == 0
    [same] = replay(env, "wf-rules")
    assert same["decisions"] > 5 and same["identical"] == same["decisions"]
    stricter = tmp_path / "strict.yaml"
    stricter.write_text("coordinator: programmatic\nplan_thresholds: {alignment: 9.8}\n")
    [report] = replay(env, "wf-rules", "--config", str(stricter))
    assert report["diverged_at"] == 3
    first = report["flips"][0]
    assert (first["machine_state"], first["old_action"], first["new_action"]) == (
        "plan_validation",
        "request_plan_approval",
        "invoke_step3",
    )


def test_checkpoints_rebuild_the_recorded_states(env: dict[str, str]) -> None:
    """Each rebuilt state holds exactly the decisions, answers and steps before it."""
    run(env, "wf-rules", "programmatic")
    assert invoke(env, "approve", "wf-rules", "--as", "ana").exit_code == 0
    assert invoke(env, "resume", "wf-rules", "--no-input", "--quiet").exit_code == 0
    with open_store(Path(env["ORCHESTRATOR_DATA_DIR"])) as store:
        stored = store.load("wf-rules")
        ledger = store.ledger("wf-rules")
    snap = stored.state
    points = list(checkpoints(build_coordinator(None), stored, ledger))
    assert [p.record for p in points] == list(snap.decisions)
    for k, point in enumerate(points):
        state = point.state
        assert state.decisions == snap.decisions[:k]
        assert state.machine_state is (
            snap.decisions[k - 1].state_after if k else state.machine_state
        )
        assert state.human_answers == tuple(a for a in snap.human_answers if a.after_decision <= k)
        assert state.history == tuple(r for r in snap.history if r.decision_seq <= k)
        assert state.counters.plan_revisions <= snap.counters.plan_revisions
    last = points[-1].state
    assert last.counters.llm_calls <= snap.counters.llm_calls
    assert last.phase == snap.phase


def test_the_cassette_holds_what_each_kind_of_outcome_answered(env: dict[str, str]) -> None:
    """A confident pick is replayed as it was; a low-confidence one at its confidence."""
    run(env, "wf-llm", "llm")
    with open_store(Path(env["ORCHESTRATOR_DATA_DIR"])) as store:
        records = [
            e.content.record
            for e in store.ledger("wf-llm", kinds=(LedgerKind.DECISION,))
            if isinstance(e.content, DecisionEntry)
        ]
    first, second, _ = (recorded_answer(r) for r in records)
    assert first is not None and first.data == {
        "action": "invoke_step1",
        "rationale": "start with a plan",
        "confidence": 0.8,
    }
    assert records[1].llm is not None and records[1].llm.outcome is LLMCallOutcome.LOW_CONFIDENCE
    assert second is not None and second.data is not None and second.data["confidence"] == 0.3


async def test_nothing_recorded_falls_back_without_a_call() -> None:
    """A state the recording never put to the LLM is answered as unreachable, offline."""
    cassette = Cassette()
    cassette.cue(None)
    with pytest.raises(LLMUnavailableError, match="no LLM answer"):
        await cassette.complete(LLMRequest(messages=(Message("user", "hi"),)))
    assert cassette.requests == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "one workflow id or --all"),
        (("wf-x", "--all"), "one workflow id or --all"),
        (("../x",), "is not allowed"),
        (("wf-none",), "wf-none"),
        (("--all", "--prompt", "/nonexistent/prompt.md"), "prompt"),
    ],
)
def test_bad_replay_requests_are_one_line_and_exit_2(
    env: dict[str, str], args: tuple[str, ...], needle: str
) -> None:
    """Missing or doubled targets, bad ids and unreadable prompts: one line, exit 2."""
    result = CliRunner().invoke(cli, ["replay", *args], env=env)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_replay_all_covers_every_workflow(env: dict[str, str], server: FakeOpenAIServer) -> None:
    """--all replays each stored workflow; the cassette keeps the server untouched."""
    run(env, "wf-llm", "llm")
    run(env, "wf-rules", "programmatic")
    recorded = len(server.requests)
    reports = replay(env, "--all")
    assert sorted(r["workflow_id"] for r in reports) == ["wf-llm", "wf-rules"]
    assert all(r["identical"] == r["decisions"] for r in reports)
    assert len(server.requests) == recorded


def test_a_new_prompt_is_what_the_live_replay_sends(
    env: dict[str, str], server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """--prompt FILE replaces the decision template for the replay, and only there."""
    run(env, "wf-llm", "llm")
    template = TemplateLoader().load("orchestrator_decision")
    packaged = resources.files("prompt_templates").joinpath("orchestrator_decision.md")
    text = packaged.read_text(encoding="utf-8")
    assert template.name == "orchestrator_decision"
    marked = text.replace("Reply with the JSON object.", "Reply with the JSON object. MARKER-42")
    prompt = tmp_path / "new_prompt.md"
    prompt.write_text(marked, encoding="utf-8")
    before = len(server.chat_requests)
    [report] = replay(env, "wf-llm", "--prompt", str(prompt))
    sent = [json.dumps(r.body["messages"]) for r in server.chat_requests[before:]]
    assert report["mode"] == "live" and len(sent) >= 3  # re-asks of refused answers too
    assert all("MARKER-42" in s for s in sent)


def _pick(action: str, confidence: float) -> dict[str, object]:
    return {"action": action, "rationale": "recorded reason", "confidence": confidence}


@pytest.mark.parametrize(
    "replies",
    [
        [_pick("escalate", 0.9)],  # a confident pick (an override where it conflicts)
        [_pick("escalate", 0.2)],  # low confidence: the rules stand
        ["AGREE"],  # the rules' own choice, whatever it is in that state
        ["{not json", "{not json", "{not json"],  # every attempt refused
        [LLMUnavailableError("server down")],
    ],
    ids=["confident", "low", "agree", "invalid", "unavailable"],
)
@pytest.mark.parametrize("report", ["borderline", "complex"])
async def test_the_cassette_reproduces_every_kind_of_outcome(
    replies: list[Any], report: str
) -> None:
    """Whatever the LLM answered then, the cassette's replay gives the same decision and source."""
    d = Driver()
    d.run_step(plan_draft())
    d.run_step(plan_report(a=9.1) if report == "borderline" else plan_report(s=None))
    if replies == ["AGREE"]:
        rules = build_coordinator(None).analyze(d.state, d.config).programmatic
        replies = [_pick(trigger_of(rules), 0.9)]
    recorded_model = ScriptedChatModel(list(replies), model_name="recorded-model")
    _, old = await build_coordinator(recorded_model).decide(d.state, d.config)
    assert old.llm is not None and old.llm.attempts >= 1  # the LLM really was consulted
    cassette = Cassette()
    cassette.cue(recorded_answer(old), old.llm.model)
    _, new = await build_coordinator(cassette).decide(d.state, d.config)
    assert (new.decision, new.source) == (old.decision, old.source)
    assert new.llm is not None and new.llm.outcome is old.llm.outcome
