"""``orchestrator decisions``: the decision record queried across the workflows of a store."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from orchestrator.cli import cli
from orchestrator.cli.record import build_filter, matching_decisions, parse_since
from orchestrator.composition import open_store
from state.errors import ConfigError
from state.store import DecisionEntry

from builders import Driver
from support.fake_openai import FakeOpenAIServer
from support.world import GOOD_PLAN, World

STEPS = ("invoke_step1", "invoke_step2", "request_plan_approval")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real SQLite store holding three workflows: one decided by the LLM, two by rules."""
    picks = [{"action": a, "rationale": f"next: {a}", "confidence": 0.8} for a in STEPS]
    world = World(plan_reports=[GOOD_PLAN], decisions=picks)
    tmp = tmp_path_factory.mktemp("record")
    with FakeOpenAIServer(responder=world.http_responder) as server:
        env = {
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
            "ORCHESTRATOR_DATA_DIR": str(tmp / "data"),
        }
        saved = structlog.get_config()
        for wid, mode in (("wf-llm", "llm"), ("wf-rules", "programmatic"), ("wf-hy", "hybrid")):
            result = invoke(
                env,
                "run",
                "--requirements",
                "fill missing values",
                "--id",
                wid,
                "--coordinator",
                mode,
                "--no-input",
                "--quiet",
            )
            assert result.exit_code == 0, result.output
        structlog.configure(**saved)
        yield env


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def rows(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = invoke(env, "decisions", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_decision_of_every_workflow_is_listed(data: dict[str, str]) -> None:
    """With no filter, each workflow's three decisions are there, with the full envelope."""
    out = rows(data)
    assert sorted({r["workflow_id"] for r in out}) == ["wf-hy", "wf-llm", "wf-rules"]
    assert len(out) == 9
    llm = [r for r in out if r["workflow_id"] == "wf-llm"]
    assert [r["action"] for r in llm] == list(STEPS)
    assert [r["machine_state"] for r in llm] == ["new", "initial_planning", "plan_validation"]
    first = llm[0]
    assert first["source"] == "llm" and first["model"] == "fake-model"
    assert first["confidence"] == 0.8 and first["llm_outcome"] == "ok"
    assert first["prompt_tokens"] > 0 and first["latency_ms"] >= 0
    assert first["route"] == "standard" and first["signals"] == []


def test_filters_combine(data: dict[str, str]) -> None:
    """Source, model, state and workflow filters each narrow the rows, and they combine."""
    assert {r["workflow_id"] for r in rows(data, "--source", "llm")} == {"wf-llm"}
    assert len(rows(data, "--model", "fake-model")) == 3
    assert rows(data, "--model", "other-model") == []
    gate = rows(data, "--state", "plan_validation")
    assert [r["action"] for r in gate] == ["request_plan_approval"] * 3
    both = rows(data, "--state", "plan_validation", "--source", "programmatic")
    assert {r["workflow_id"] for r in both} == {"wf-rules", "wf-hy"}
    only = rows(data, "--workflow", "wf-rules", "--route", "standard")
    assert {r["workflow_id"] for r in only} == {"wf-rules"} and len(only) == 3
    assert rows(data, "--signal", "score_missing") == []
    assert rows(data, "--since", "2999-01-01") == []
    assert len(rows(data, "--since", "2000-01-01")) == 9


def test_csv_and_table_formats(data: dict[str, str]) -> None:
    """CSV has a header and one line per decision; the table names workflows and actions."""
    result = invoke(data, "decisions", "--format", "csv", "--source", "llm")
    parsed = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["action"] for r in parsed] == list(STEPS)
    assert parsed[0]["model"] == "fake-model" and parsed[0]["workflow_id"] == "wf-llm"
    table = invoke(data, "decisions", "--workflow", "wf-llm").output
    assert "wf-llm" in table and "request_plan_approval" in table
    assert "no decision matches" in invoke(data, "decisions", "--model", "nobody").output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--source", "robot"), "unknown source 'robot'"),
        (("--route", "sideways"), "unknown route 'sideways'"),
        (("--signal", "vibes"), "unknown signal 'vibes'"),
        (("--state", "dreaming"), "unknown machine state 'dreaming'"),
        (("--since", "last tuesday"), "--since 'last tuesday'"),
        (("--format", "xml"), "--format 'xml'"),
        (("--workflow", "../etc"), "workflow id '../etc' is not allowed"),
        (("--workflow", "wf-none"), "wf-none"),
    ],
)
def test_bad_filters_are_one_line_and_exit_2(
    data: dict[str, str], args: tuple[str, ...], needle: str
) -> None:
    """Each bad filter is refused in one line on stderr with exit code 2."""
    result = CliRunner().invoke(cli, ["decisions", *args], env=data)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_memory_store_with_several_workflows() -> None:
    """The query reads any store through the protocol: two in-memory workflows, filtered."""
    store = open_store("memory://")
    for wid in ("wf-a", "wf-b"):
        d = Driver(workflow_id=wid)
        store.create(d.state, d.config)
        d.to_plan_gate()
        entries = [DecisionEntry(r) for r in d.state.decisions]
        store.commit(wid, d.state, expected_version=1, entries=entries, owner=None)
    everything = list(matching_decisions(store, build_filter()))
    assert [w for w, _ in everything].count("wf-a") == 3 and len(everything) == 6
    gate = list(matching_decisions(store, build_filter(states=["plan_validation"]), ["wf-b"]))
    assert [(w, r.seq) for w, r in gate] == [("wf-b", 3)]


def test_since_reads_dates_and_ages() -> None:
    """--since takes a date (UTC), a zoned date-time, or an age counted back from now."""
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_since("2026-11-30", now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2026, 12, 1, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 11, 24, 12, tzinfo=UTC)
    with pytest.raises(ConfigError, match="neither a date"):
        parse_since("soon", now)


def test_data_dir_is_the_one_named(tmp_path: Path) -> None:
    """An empty data directory has no decisions: the table says so, exit 0."""
    result = invoke({"ORCHESTRATOR_DATA_DIR": str(tmp_path / "empty")}, "decisions")
    assert result.exit_code == 0 and "no decision matches" in result.output
