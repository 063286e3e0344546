"""The workflow commands: run, answers and their refusals, list, status, inspect, export."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import cli
from orchestrator.composition import open_store
from state.config import load_config

from support.fake_openai import FakeOpenAIServer
from support.world import GOOD_PLAN, World


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    world = World(plan_reports=[GOOD_PLAN])
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


def run_to_plan_gate(env: dict[str, str], wid: str = "wf-cli") -> Result:
    result = invoke(
        env,
        "run",
        "--requirements",
        "fill missing values",
        "--id",
        wid,
        "--coordinator",
        "programmatic",
        "--no-input",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    return result


def test_run_stops_at_the_plan_gate_and_says_how_to_answer(env: dict[str, str]) -> None:
    """Without a terminal, run stops durably at the gate and prints the answer commands."""
    out = run_to_plan_gate(env).output
    assert "wf-cli waits at the plan gate" in out
    assert "orchestrator approve wf-cli" in out and "orchestrator resume wf-cli" in out


def test_run_needs_a_requirement(env: dict[str, str]) -> None:
    """Run without --requirements or --requirements-file is a usage error."""
    result = invoke(env, "run")
    assert result.exit_code == 2 and "--requirements" in result.output


def test_list_status_and_inspect(env: dict[str, str]) -> None:
    """The stored workflow is listed, summarised and its decisions explained."""
    run_to_plan_gate(env)
    listed = [json.loads(line) for line in invoke(env, "list", "--json").output.splitlines()]
    assert listed[0]["workflow_id"] == "wf-cli" and listed[0]["waiting_gate"] == "plan"
    assert "wf-cli" in invoke(env, "list").output
    status = json.loads(invoke(env, "status", "wf-cli", "--json").output)
    assert status["status"] == "awaiting_human" and status["decisions"] == 3
    assert status["artifacts"] == ["plans/plan_v1.md"]
    assert "run_by" not in status  # nobody holds it at the gate
    with open_store(Path(env["ORCHESTRATOR_DATA_DIR"])) as store:
        store.acquire_lease("wf-cli", "worker-9", 300)  # as a live worker of this host would
        store.note_activity("wf-cli", "worker-9", "building the project environment")
    shown = invoke(env, "status", "wf-cli").output
    assert "run_by               worker-9 on " in shown
    assert "activity             building the project environment" in shown
    report = json.loads(invoke(env, "inspect", "wf-cli", "--json").output)
    assert [d["source"] for d in report["decisions"]] == ["programmatic"] * 3
    assert report["decisions"][-1]["chosen"].startswith("request_approval")
    rounds = report["validation_rounds"]
    assert len(rounds) == 1 and rounds[0]["converged"] is True
    assert rounds[0]["thresholds"]["alignment"] == 9.0
    text = invoke(env, "inspect", "wf-cli").output
    assert "alignment 9.5/9" in text and "-> converged" in text


def test_approve_then_resume_reaches_the_final_gate(env: dict[str, str]) -> None:
    """An approval is recorded with who and why, and resume carries on from it."""
    run_to_plan_gate(env)
    result = invoke(
        env, "approve", "wf-cli", "--gate", "plan", "--as", "fatima", "--comment", "looks right"
    )
    assert result.exit_code == 0 and "approve recorded at the plan gate by fatima" in result.output
    resumed = invoke(env, "resume", "wf-cli", "--no-input", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert "waits at the final gate" in resumed.output
    answers = json.loads(invoke(env, "inspect", "wf-cli", "--json").output)["human_answers"]
    assert answers[0]["by"] == "fatima" and answers[0]["comment"] == "looks right"


def test_reject_ends_the_workflow(env: dict[str, str]) -> None:
    """Reject --resume ends the workflow as rejected."""
    run_to_plan_gate(env)
    result = invoke(env, "reject", "wf-cli", "--comment", "out of scope", "--resume")
    assert result.exit_code == 0, result.output
    assert json.loads(invoke(env, "status", "wf-cli", "--json").output)["status"] == "rejected"


def test_request_changes_reach_the_planner(env: dict[str, str], server: FakeOpenAIServer) -> None:
    """Change requests are recorded and sent to the revision planner on resume."""
    run_to_plan_gate(env)
    result = invoke(
        env,
        "request-changes",
        "wf-cli",
        "--change",
        "add outlier clipping",
        "--change",
        "log dropped rows",
    )
    assert result.exit_code == 0, result.output
    assert invoke(env, "resume", "wf-cli", "--no-input", "--quiet").exit_code == 0
    prompts = [json.dumps(r.body["messages"]) for r in server.chat_requests]
    assert any("add outlier clipping" in p and "log dropped rows" in p for p in prompts)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("approve", "nope"), "no workflow with id 'nope'"),
        (("approve", "wf-cli", "--gate", "final"), "waits at the 'plan' gate, not 'final'"),
        (("reject", "wf-cli", "--gate", "escalation"), "not 'escalation'"),
        (("request-changes", "wf-cli", "--change", "  "), "needs at least one change"),
        (("approve", "wf-cli", "--as", " "), "say who answers"),
    ],
    ids=["unknown-id", "wrong-gate", "wrong-gate-reject", "blank-change", "blank-name"],
)
def test_answer_refusals_change_nothing(
    env: dict[str, str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """Each refused answer exits 2 with one line naming the problem, and the store is unchanged."""
    run_to_plan_gate(env)
    db = tmp_path / "data" / "orchestrator.db"
    before = invoke(env, "export", "wf-cli").output
    result = invoke(env, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert invoke(env, "export", "wf-cli").output == before
    assert db.exists()


def test_answering_twice_or_when_not_waiting_is_refused(env: dict[str, str]) -> None:
    """A second answer to the same gate, or an answer to a running workflow, is refused."""
    run_to_plan_gate(env)
    assert invoke(env, "approve", "wf-cli").exit_code == 0
    again = invoke(env, "approve", "wf-cli")
    assert again.exit_code == 2 and "already answered" in again.output
    invoke(env, "resume", "wf-cli", "--no-input", "--quiet")
    invoke(env, "approve", "wf-cli")  # final gate
    invoke(env, "resume", "wf-cli", "--no-input", "--quiet")
    done = invoke(env, "approve", "wf-cli")
    assert done.exit_code == 2 and "is not waiting for a human" in done.output


def test_export_lines_are_the_ledger(env: dict[str, str]) -> None:
    """Export prints one JSON object per ledger entry, in order."""
    run_to_plan_gate(env)
    lines = [json.loads(line) for line in invoke(env, "export", "wf-cli").output.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert [e["kind"] for e in lines][:2] == ["decision", "step_result"]
    assert lines[0]["payload"]["decision"]["action"] == "invoke_agent"


def test_damaged_database_is_reported_and_left_alone(env: dict[str, str], tmp_path: Path) -> None:
    """A database file that is not SQLite gives one clear line and is not overwritten."""
    data = tmp_path / "data"
    data.mkdir()
    db = data / "orchestrator.db"
    db.write_bytes(b"this is not a database" * 100)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    result = invoke(env, "list")
    assert result.exit_code == 2
    assert "orchestrator.db" in result.output and "Traceback" not in result.output
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_state_round_trips_through_decide(env: dict[str, str], tmp_path: Path) -> None:
    """State ID > f; decide f --config c: the prediction is what resume then does."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "limits: {max_plan_revisions: 1}\ngates: {code_review: true}\n"
        "llm: {temperature: 0.5, max_tokens: 300}\n",
        encoding="utf-8",
    )
    args = ["--id", "wf-cli", "-r", "fill missing values", "--coordinator", "programmatic"]
    assert invoke(env, "run", *args, "--config", str(mine), "--no-input", "-q").exit_code == 0
    assert invoke(env, "approve", "wf-cli", "--as", "fatima").exit_code == 0
    config_out = tmp_path / "c.yaml"
    printed = invoke(env, "state", "wf-cli", "--config-out", str(config_out))
    assert printed.exit_code == 0 and printed.stderr == ""
    snapshot_file = tmp_path / "s.json"
    snapshot_file.write_text(printed.stdout, encoding="utf-8")
    with open_store(tmp_path / "data") as store:
        stored = store.load("wf-cli").config
    assert load_config(config_out) == stored and stored.limits.max_plan_revisions == 1
    predicted = invoke(env, "decide", str(snapshot_file), "--config", str(config_out), "--json")
    assert predicted.exit_code == 0, predicted.output
    decision = json.loads(predicted.stdout)["decision"]
    assert decision["source"] == "human" and decision["decision"]["action"] == "transition_phase"
    assert invoke(env, "resume", "wf-cli", "--no-input", "-q").exit_code == 0
    taken = json.loads(invoke(env, "inspect", "wf-cli", "--json").stdout)["decisions"][3]
    assert taken["source"] == decision["source"] and taken["to"] == decision["state_after"]
    assert taken["chosen"].startswith(decision["decision"]["action"])
