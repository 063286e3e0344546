"""What a human approves is the change: the diff against the base, the tools, the coverage.

A real ``--repo`` workflow (real git, the CLI in-process, a loopback fake LLM) waits at the
final gate; ``inspect``, ``inspect --json`` and the terminal prompt show its change, and
``request-changes --at FILE:LINE`` reaches the programmer's next round.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import cli
from orchestrator.cli.display import TerminalHuman
from orchestrator.composition import open_store
from orchestrator.execution.reports import read_line_hits
from orchestrator.reporting import change_text, change_view, changed_line_coverage, changed_lines
from state.reports import (
    CodeReview,
    CodeValidationReport,
    LineHits,
    StandardizationReview,
)
from state.steps import Gate

from support.fake_openai import Content, FakeOpenAIServer
from support.gitrepo import cli_env, make_repo, served_world
from support.world import World

pytestmark = pytest.mark.slow

FINAL_ONLY = "coordinator: programmatic\ngates: {plan: false, final: true}\n"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with served_world() as srv:
        yield srv


@pytest.fixture
def env(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, str]:
    return cli_env(server, tmp_path / "data")


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def at_final_gate(env: dict[str, str], tmp_path: Path) -> str:
    """A ``--repo`` workflow waiting at the final gate; its id."""
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "config.yaml").write_text(FINAL_ONLY)
    result = invoke(
        env,
        *("run", "-r", "fill missing values", "--id", "wf-g", "--no-input", "--quiet"),
        *("--config", str(tmp_path / "config.yaml"), "--repo", str(repo)),
    )
    assert result.exit_code == 0, result.output
    assert "waits at the final gate" in result.output
    return "wf-g"


def test_inspect_json_shows_the_change(env: dict[str, str], at_final_gate: str) -> None:
    """``inspect --json`` carries the stat, the diff against the base, the tools, the coverage."""
    change = json.loads(invoke(env, "inspect", at_final_gate, "--json").output)["change"]
    assert change["base"] == "main" and change["branch"] == "orchestrator/wf-g"
    assert "prep.py" in change["stat"] and "test_prep.py" in change["stat"]
    assert "+def fill_missing(rows, value):" in change["diff"]
    assert "-def old():" in change["diff"]  # the existing file was changed, not added
    assert {t["name"]: t["status"] for t in change["tools"]}["pytest"] == "passed"
    coverage = change["coverage"]
    assert coverage["measured"] and coverage["percent"] == 100.0, coverage
    assert coverage["files"]["prep.py"]["uncovered_lines"] == []
    assert "truncated" not in change


def test_inspect_text_shows_the_change(env: dict[str, str], at_final_gate: str) -> None:
    """``inspect`` prints the change and how many of the changed lines the tests ran."""
    out = invoke(env, "inspect", at_final_gate).output
    assert "change on orchestrator/wf-g against main:" in out
    assert "+def fill_missing(rows, value):" in out
    assert "coverage of the changed lines: 2/2 (100.0%)" in out, out


def test_a_long_diff_is_cut_with_a_note(tmp_path: Path, at_final_gate: str) -> None:
    """Past the limit the diff is cut, and the note says how to see all of it."""
    with open_store(tmp_path / "data") as store:
        stored = store.load(at_final_gate)
    view = change_view(stored.state, stored.config, max_diff_chars=80)
    assert len(view["diff"]) == 80 and view["diff_chars"] > 80
    assert "diff cut at 80 of" in view["truncated"] and "git -C" in view["truncated"]


def test_the_terminal_shows_the_change_before_asking(tmp_path: Path, at_final_gate: str) -> None:
    """At the final gate the prompt prints the stat, the diff and the tools first."""
    with open_store(tmp_path / "data") as store:
        stored = store.load(at_final_gate)
    human = TerminalHuman(
        "ana", show_change=lambda s: change_text(s, stored.config, max_diff_chars=10_000)
    )
    with CliRunner().isolation(input="l\n") as streams:
        assert human._ask(stored.state, Gate.FINAL) is None
    shown = streams[1].getvalue().decode()
    assert "change on orchestrator/wf-g against main:" in shown
    assert "+def fill_missing(rows, value):" in shown and "tools: compile passed" in shown
    assert shown.index("+def fill_missing") < shown.index("[a]pprove")


def test_request_changes_at_a_line_reaches_the_programmer(
    env: dict[str, str], server: FakeOpenAIServer, tmp_path: Path, at_final_gate: str
) -> None:
    """``--at prep.py:4 TEXT`` is recorded with the answer and shown to the next round."""
    result = invoke(env, "request-changes", at_final_gate, "--at", "prep.py:4", "skip empty rows")
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "data") as store:
        answer = store.load(at_final_gate).state.human_answers[-1]
    assert answer.changes == ("At prep.py:4: skip empty rows",)
    before = len(server.chat_requests)
    assert invoke(env, "resume", at_final_gate, "--no-input", "--quiet").exit_code == 0
    prompts = [json.dumps(r.body["messages"]) for r in server.chat_requests[before:]]
    assert any("At prep.py:4: skip empty rows" in p for p in prompts)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("../outside.py:1", "contains '..'"),
        ("prep.py:999", "prep.py has 6 lines"),
        ("prep.py:x", "give FILE:LINE"),
        ("nofile.py:1", "no such file"),
    ],
    ids=["outside", "past-the-end", "no-line", "no-file"],
)
def test_bad_at_is_refused_and_records_nothing(
    env: dict[str, str], tmp_path: Path, at_final_gate: str, where: str, message: str
) -> None:
    """A malformed or wrong ``--at`` exits 2 with the reason; no answer is recorded."""
    before = invoke(env, "export", at_final_gate).output
    result = CliRunner().invoke(
        cli, ["request-changes", at_final_gate, "--at", where, "x"], env=env
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert invoke(env, "export", at_final_gate).output == before


def test_changed_line_coverage_counts_the_lines_the_tests_ran() -> None:
    """Of the added lines, those coverage ran are covered; missed ones are named."""
    diff = (
        "--- a/prep.py\n+++ b/prep.py\n@@ -1,2 +1,4 @@\n"
        " def f(x):\n-    return 1\n+    if x:\n+        return 2\n+    return 3\n"
        "--- /dev/null\n+++ b/README.md\n@@ -0,0 +1 @@\n+# doc\n"
    )
    changed = changed_lines(diff)
    assert changed == {"prep.py": [2, 3, 4], "README.md": [1]}
    report = CodeValidationReport(
        review=CodeReview(),
        standardization=StandardizationReview(),
        line_hits={"prep.py": LineHits(executed=(1, 2, 4), missing=(3,))},
    )
    cov = changed_line_coverage(changed, report)
    assert (cov["covered"], cov["executable"], cov["percent"]) == (2, 3, 66.7)
    assert cov["files"]["prep.py"]["uncovered_lines"] == [3]
    assert changed_line_coverage(changed, None) == {"measured": False, "note": "not measured"}


def test_line_hits_are_read_from_a_real_coverage_report(tmp_path: Path) -> None:
    """coverage.py's JSON report gives each file's run and missed lines; junk gives None."""
    (tmp_path / "m.py").write_text("def f(x):\n    if x:\n        return 1\n    return 2\n\nf(1)\n")
    done = subprocess.run(
        [sys.executable, "-m", "coverage", "run", "m.py"], cwd=tmp_path, check=False
    )
    assert done.returncode == 0
    report = subprocess.run(
        [sys.executable, "-m", "coverage", "json", "-o", "-"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    ).stdout
    hits = read_line_hits(report)
    assert hits == {"m.py": LineHits(executed=(1, 2, 3, 6), missing=(4,))}
    assert read_line_hits(b"{not json") is None and read_line_hits(None) is None


def test_a_diff_that_does_not_apply_is_retried_with_the_reason(
    tmp_path: Path,
) -> None:
    """The first implementation sends a bad diff; the retry is told why and its answer lands."""
    world = World()
    bad = {
        "files": [
            {"path": "prep.py", "diff": "@@ -1,2 +1,2 @@\n-nothing like this\n+x = 1\n context\n"}
        ],
        "summary": "a wrong diff",
    }
    sent: list[str] = []

    def responder(body: dict[str, Any]) -> Content:
        reply = world.http_responder(body)
        if "step4_programmer" in world.requests[-1].purpose and not sent:
            sent.append("bad")
            return Content(json.dumps(bad))
        return reply

    repo = make_repo(tmp_path / "repo")
    (tmp_path / "config.yaml").write_text(FINAL_ONLY)
    with FakeOpenAIServer(responder=responder) as srv:
        env = cli_env(srv, tmp_path / "data")
        result = invoke(
            env,
            *("run", "-r", "fill missing values", "--id", "wf-d", "--no-input", "--quiet"),
            *("--config", str(tmp_path / "config.yaml"), "--repo", str(repo)),
        )
        assert result.exit_code == 0, result.output
        prompts = [json.dumps(r.body["messages"]) for r in srv.chat_requests]
    retried = [p for p in prompts if "a diff did not apply" in p]
    assert len(retried) == 1 and "prep.py" in retried[0]
    with open_store(tmp_path / "data") as store:
        state = store.load("wf-d").state
    failed = [r for r in state.history if r.error is not None]
    assert [(int(r.step), r.error.type) for r in failed if r.error] == [(4, "invalid_output")]
    assert state.waiting_gate is Gate.FINAL
