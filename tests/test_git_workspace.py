"""``run --repo``: a branch and worktree per workflow, a commit per round, the checkout untouched.

Real git in temp directories, the real CLI in a subprocess, the LLM a loopback fake server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.composition import open_store
from state.reports import CodeChange, PlanDraft
from state.workflow import StepStatus

from support.fake_openai import FakeOpenAIServer
from support.gitrepo import (
    cli_env,
    git,
    make_dirty,
    make_repo,
    round_subjects,
    run_cli,
    served_world,
    snapshot,
)

pytestmark = pytest.mark.slow

NO_GATES = "coordinator: programmatic\ngates: {plan: false, final: false}\n"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with served_world() as srv:
        yield srv


@pytest.fixture
def env(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, str]:
    (tmp_path / "config.yaml").write_text(NO_GATES)
    return cli_env(server, tmp_path / "data")


def start(
    env: dict[str, str], tmp_path: Path, repo: Path, *extra: str, wid: str = "wf-git"
) -> subprocess.CompletedProcess[str]:
    """Run a workflow on ``repo`` to its end."""
    return run_cli(
        env,
        "run",
        "-r",
        "fill missing values",
        "--id",
        wid,
        "--no-input",
        "--config",
        str(tmp_path / "config.yaml"),
        "--repo",
        str(repo),
        *extra,
    )


def test_a_run_commits_every_round_on_its_own_branch(env: dict[str, str], tmp_path: Path) -> None:
    """Each plan and code round is one commit naming workflow, step and round; HEAD is clean."""
    repo = make_repo(tmp_path / "repo")
    done = start(env, tmp_path, repo)
    assert done.returncode == 0, done.stderr
    subjects = git(repo, "log", "--format=%s", "main..orchestrator/wf-git").splitlines()
    assert subjects == round_subjects("wf-git")
    head = git(repo, "rev-parse", "orchestrator/wf-git").strip()
    assert f"step 6 done (commit {head[:12]})" in done.stderr  # progress names each commit
    body = git(repo, "log", "-1", "--format=%B", "orchestrator/wf-git")
    assert "Orchestrator-Workflow: wf-git" in body and "Orchestrator-Round: 2" in body
    changed = git(repo, "diff", "--name-only", "main...orchestrator/wf-git").split()
    assert changed == ["plans/plan_v1.md", "plans/plan_v2.md", "prep.py", "test_prep.py"]
    worktree = tmp_path / "data" / "workspaces" / "wf-git"
    assert git(worktree, "status", "--porcelain") == ""  # ready to push or merge
    assert git(worktree, "rev-parse", "--abbrev-ref", "HEAD").strip() == "orchestrator/wf-git"
    with open_store(tmp_path / "data") as store:
        state = store.load("wf-git").state
    shas = [
        r.result.commit
        for r in state.history
        if r.status is StepStatus.COMPLETED and isinstance(r.result, PlanDraft | CodeChange)
    ]
    assert shas == git(repo, "rev-list", "--reverse", "main..orchestrator/wf-git").split()


def test_a_dirty_checkout_is_untouched(env: dict[str, str], tmp_path: Path) -> None:
    """Staged, unstaged and untracked changes, the index and HEAD are byte-for-byte the same."""
    repo = make_repo(tmp_path / "repo")
    make_dirty(repo)
    before = snapshot(repo)
    done = start(env, tmp_path, repo)
    assert done.returncode == 0, done.stderr
    assert snapshot(repo) == before
    # the work started from the commit, not from the uncommitted edits
    assert "untracked.txt" not in git(repo, "ls-tree", "-r", "--name-only", "orchestrator/wf-git")


def test_status_and_inspect_name_the_branch(env: dict[str, str], tmp_path: Path) -> None:
    """``status``, ``status --json`` and ``inspect --json`` name the branch and the worktree."""
    repo = make_repo(tmp_path / "repo")
    assert start(env, tmp_path, repo).returncode == 0
    worktree = str((tmp_path / "data" / "workspaces" / "wf-git").resolve())
    text = run_cli(env, "status", "wf-git").stdout
    assert "orchestrator/wf-git" in text and worktree in text
    info = json.loads(run_cli(env, "status", "wf-git", "--json").stdout)
    assert info["branch"] == "orchestrator/wf-git" and info["worktree"] == worktree
    assert info["base"] == "main"
    inspected = json.loads(run_cli(env, "inspect", "wf-git", "--json").stdout)
    assert inspected["workflow"]["branch"] == "orchestrator/wf-git"


def test_base_branch_is_where_the_work_starts(env: dict[str, str], tmp_path: Path) -> None:
    """``--base dev`` branches from dev, not from the branch checked out."""
    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", "dev")
    (repo / "dev.txt").write_text("dev\n")
    git(repo, "add", "dev.txt")
    git(repo, "commit", "-q", "-m", "dev work")
    git(repo, "checkout", "-q", "main")
    assert start(env, tmp_path, repo, "--base", "dev").returncode == 0
    assert git(repo, "merge-base", "--is-ancestor", "dev", "orchestrator/wf-git") == ""
    files = git(repo, "ls-tree", "-r", "--name-only", "orchestrator/wf-git").split()
    assert "dev.txt" in files


def test_bad_starts_are_refused_clearly(env: dict[str, str], tmp_path: Path) -> None:
    """Not a repository, an unknown base, a taken branch, git missing: one line, exit 2."""
    plain = tmp_path / "plain"
    plain.mkdir()
    done = start(env, tmp_path, plain)
    assert done.returncode == 2 and "is not a git repository" in done.stderr

    repo = make_repo(tmp_path / "repo")
    done = start(env, tmp_path, repo, "--base", "nope")
    assert done.returncode == 2 and "--base nope: no such branch" in done.stderr
    assert "main" in done.stderr

    git(repo, "branch", "orchestrator/wf-git")
    done = start(env, tmp_path, repo)
    assert done.returncode == 2 and "branch orchestrator/wf-git already exists" in done.stderr

    no_git = tmp_path / "empty-path"
    no_git.mkdir()
    done = start({**env, "PATH": str(no_git)}, tmp_path, repo, wid="wf-nogit")
    assert done.returncode == 2 and "git is not installed" in done.stderr
    assert "Traceback" not in done.stderr
    with open_store(tmp_path / "data") as store:
        assert store.list_workflows() == []  # nothing refused was stored
    assert not (tmp_path / "data" / "workspaces" / "wf-git").exists()


def test_a_second_workflow_gets_its_own_branch(env: dict[str, str], tmp_path: Path) -> None:
    """Two workflows on one repository: two branches, two worktrees, neither in the way."""
    repo = make_repo(tmp_path / "repo")
    assert start(env, tmp_path, repo, wid="wf-one").returncode == 0
    assert start(env, tmp_path, repo, wid="wf-two").returncode == 0
    branches = git(repo, "branch", "--format=%(refname:short)").split()
    assert {"orchestrator/wf-one", "orchestrator/wf-two"} <= set(branches)


def test_submit_repo_queues_a_workflow_on_its_own_branch(
    env: dict[str, str], tmp_path: Path
) -> None:
    """``submit --repo`` makes the branch and worktree, stores them and queues the workflow."""
    repo = make_repo(tmp_path / "repo")
    before = snapshot(repo)
    done = run_cli(
        env,
        *("submit", "-r", "fill missing values", "--id", "wf-sub"),
        *("--config", str(tmp_path / "config.yaml"), "--repo", str(repo)),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wf-sub"
    assert git(repo, "branch", "--list", "orchestrator/wf-sub").strip()
    with open_store(tmp_path / "data") as store:
        stored = store.load("wf-sub")
    assert stored.config.repository.branch == "orchestrator/wf-sub"
    worktree = Path(stored.config.repository.worktree or "")
    assert worktree == tmp_path / "data" / "workspaces" / "wf-sub" and worktree.is_dir()
    assert stored.state.workspace == str(worktree)
    assert snapshot(repo) == before  # the user's checkout untouched

    both = run_cli(env, "submit", "-r", "x", "--repo", str(repo), "--workspace", "/tmp/x")
    assert both.returncode == 2 and "give --repo or --workspace, not both" in both.stderr
