"""The console on a ``--repo`` workflow: its branch, each code round's diff, the change to approve.

A real ``--repo`` workflow (real git, the CLI in-process, a loopback fake LLM whose world
revises the plan once and refines the code once) waits at the final gate; the console's API
names its branch, shows what each code round changed from the round before it, and, at the
gate, the change against the base with the tools and the changed lines' coverage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.composition import open_store
from orchestrator.web.access import AccessPolicy
from orchestrator.web.app import create_app

from support.console import make_service
from support.fake_openai import FakeOpenAIServer
from support.gitrepo import cli_env, git, make_repo, served_world

pytestmark = pytest.mark.slow

FINAL_ONLY = "coordinator: programmatic\ngates: {plan: false, final: true}\n"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with served_world() as srv:
        yield srv


def run_to_final_gate(tmp_path: Path, server: FakeOpenAIServer, wid: str, *repo: str) -> Path:
    """Run ``orchestrator run`` (with ``repo``'s options) to the final gate; the data dir."""
    data = tmp_path / "data"
    (tmp_path / "config.yaml").write_text(FINAL_ONLY)
    result = CliRunner().invoke(
        cli,
        [
            *("run", "-r", "fill missing values", "--id", wid, "--no-input", "--quiet"),
            *("--config", str(tmp_path / "config.yaml"), *repo),
        ],
        env=cli_env(server, data),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return data


@pytest.fixture
def repo_data(tmp_path: Path, server: FakeOpenAIServer) -> Path:
    """The data dir of a ``--repo`` workflow waiting at the final gate."""
    repo = make_repo(tmp_path / "repo")
    return run_to_final_gate(tmp_path, server, "wf-r", "--repo", str(repo))


@pytest.fixture
def plain_data(tmp_path: Path, server: FakeOpenAIServer) -> Path:
    """The data dir of a plain-directory workflow waiting at the final gate."""
    return run_to_final_gate(tmp_path, server, "wf-p")


@pytest.fixture
async def client(repo_data: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The console over ``repo_data``."""
    with open_store(repo_data) as store:
        app = create_app(make_service(store, tmp_path / "ws"), AccessPolicy())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


async def test_the_page_names_the_branch_and_shows_the_change_at_the_gate(
    client: httpx.AsyncClient,
) -> None:
    """At the final gate the workflow carries its branch and the change against the base."""
    info = (await client.get("/api/workflows/wf-r")).json()
    assert info["workflow"]["waiting_gate"] == "final"
    assert info["repository"]["branch"] == "orchestrator/wf-r"
    assert info["repository"]["base"] == "main"
    change = info["change"]
    assert change["branch"] == "orchestrator/wf-r" and "prep.py" in change["stat"]
    assert "+def fill_missing(rows, value):" in change["diff"]
    assert {t["name"]: t["status"] for t in change["tools"]}["pytest"] == "passed"
    assert change["coverage"]["measured"]


async def test_each_code_round_shows_what_it_changed_from_the_round_before(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Round 1's diff starts at the base; the refinement's diff starts at round 1's commit."""
    rounds = (await client.get("/api/workflows/wf-r/rounds")).json()
    code = [r for r in rounds if r["result"] and r["result"]["kind"] == "code"]
    assert len(code) == 2, [r["name"] for r in rounds]
    first, refined = code[0], code[1]
    info = (await client.get("/api/workflows/wf-r")).json()
    assert first["diff"]["from"] == info["repository"]["base_commit"]
    assert first["diff"]["to"] == first["result"]["commit"]
    assert refined["diff"]["from"] == first["result"]["commit"]
    assert refined["diff"]["to"] == refined["result"]["commit"]
    worktree = Path(info["repository"]["worktree"])
    base, one, two = first["diff"]["from"], first["result"]["commit"], refined["result"]["commit"]
    assert first["diff"]["diff"] == git(worktree, "diff", "--no-color", base, one)
    assert "+def fill_missing(rows, value):" in first["diff"]["diff"]
    assert refined["diff"]["diff"] == git(worktree, "diff", "--no-color", one, two)
    assert all(r["diff"] is None for r in rounds if r not in code)


async def test_a_plain_directory_workflow_has_no_branch_and_no_round_diffs(
    plain_data: Path, tmp_path: Path
) -> None:
    """Without --repo the page has no repository, and rounds carry no diff."""
    with open_store(plain_data) as store:
        app = create_app(make_service(store, tmp_path / "ws"), AccessPolicy())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            info = (await c.get("/api/workflows/wf-p")).json()
            rounds = (await c.get("/api/workflows/wf-p/rounds")).json()
    assert info["repository"] is None
    assert info["change"]["diff"] is None and "--repo" in info["change"]["note"]
    assert all(r["diff"] is None for r in rounds)


async def test_a_change_request_at_a_line_is_checked_and_recorded(
    client: httpx.AsyncClient,
) -> None:
    """``at`` takes FILE:LINE requests as ``request-changes --at``: a bad one records nothing."""
    ask = {"gate": "final", "answer": "request_changes", "by": "fatima"}
    bad = await client.post(
        "/api/workflows/wf-r/answer", json=ask | {"at": [{"where": "prep.py:999", "text": "x"}]}
    )
    assert bad.status_code == 422 and "prep.py has 6 lines" in bad.json()["error"]
    outside = await client.post(
        "/api/workflows/wf-r/answer", json=ask | {"at": [{"where": "../x.py:1", "text": "x"}]}
    )
    assert outside.status_code == 422 and "contains '..'" in outside.json()["error"]
    assert (await client.get("/api/workflows/wf-r")).json()["human_answers"] == []
    good = await client.post(
        "/api/workflows/wf-r/answer",
        json=ask | {"at": [{"where": "prep.py:4", "text": "skip empty rows"}]},
    )
    assert good.status_code == 200, good.text
    assert good.json()["recorded"]["changes"] == ["At prep.py:4: skip empty rows"]
