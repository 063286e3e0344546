"""Kill a ``--repo`` run in the middle of a round's commit, then resume it.

The kill point is a ``post-commit`` hook in the test's repository (git's own mechanism, not a
patch of ours): when the round of step 4 is committed, the hook leaves a half-written change
in the worktree, says so through a file and blocks; the test then kills the whole process
group with SIGKILL. The commit is made but its step result never reached the store.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.composition import open_store
from state.reports import CodeChange, PlanDraft
from state.store import LedgerKind
from state.workflow import StepStatus

from support.fake_openai import FakeOpenAIServer
from support.gitrepo import (
    cli,
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

HOOK = """#!/bin/sh
if [ -f "$KILL_HOOK_DIR/armed" ] && git log -1 --format=%s | grep -q "step 4"; then
  rm "$KILL_HOOK_DIR/armed"
  echo "half of the next change" > half_written.py
  echo "# a half-applied edit" >> prep.py
  touch "$KILL_HOOK_DIR/committed"
  sleep 120
fi
"""


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with served_world() as srv:
        yield srv


def at_plan_gate(
    server: FakeOpenAIServer, tmp_path: Path, wid: str
) -> tuple[Path, dict[str, str], Path]:
    """A ``--repo`` workflow run to the plan gate: (repository, CLI environment, worktree)."""
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "config.yaml").write_text("coordinator: programmatic\n")
    env = cli_env(server, tmp_path / "data")
    first = run_cli(
        env,
        *("run", "-r", "x", "--id", wid, "--no-input"),
        *("--config", str(tmp_path / "config.yaml"), "--repo", str(repo)),
    )
    assert first.returncode == 0, first.stderr
    return repo, env, tmp_path / "data" / "workspaces" / wid


def approve_and_resume(env: dict[str, str], wid: str) -> None:
    """Approve the plan and run the workflow on to its next stop."""
    assert run_cli(env, "approve", wid).returncode == 0
    done = run_cli(env, "resume", wid, "--no-input")
    assert done.returncode == 0, done.stderr


def test_kill_after_the_commit_before_the_record(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """The unrecorded commit and the half-written files are undone; each round commits once."""
    repo = make_repo(tmp_path / "repo")
    make_dirty(repo)
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text(HOOK)
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    hooks = tmp_path / "hook"
    hooks.mkdir()
    (hooks / "armed").touch()
    (tmp_path / "config.yaml").write_text(
        "coordinator: programmatic\ngates: {plan: false, final: false}\n"
    )
    env = cli_env(server, tmp_path / "data", KILL_HOOK_DIR=str(hooks))
    before = snapshot(repo)
    proc = subprocess.Popen(
        cli(
            *("run", "-r", "fill missing values", "--id", "wf-kill", "--no-input"),
            *("--config", str(tmp_path / "config.yaml"), "--repo", str(repo)),
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while not (hooks / "committed").exists():
        assert proc.poll() is None, "the run ended before the step-4 commit"
        assert time.monotonic() < deadline, "the step-4 commit never happened"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    worktree = tmp_path / "data" / "workspaces" / "wf-kill"
    orphan = git(worktree, "rev-parse", "HEAD").strip()
    assert (worktree / "half_written.py").exists()
    assert snapshot(repo) == before  # killed mid-commit: the checkout is still untouched

    done = run_cli(env, "resume", "wf-kill", "--no-input")
    assert done.returncode == 0, done.stderr

    subjects = git(repo, "log", "--format=%s", "main..orchestrator/wf-kill").splitlines()
    assert subjects == round_subjects("wf-kill")
    branch = git(repo, "rev-list", "main..orchestrator/wf-kill").split()
    assert orphan not in branch  # the commit whose result was never recorded left the branch
    assert not (worktree / "half_written.py").exists()
    assert "half-applied" not in (worktree / "prep.py").read_text()
    assert git(worktree, "status", "--porcelain") == ""
    with open_store(tmp_path / "data") as store:
        state = store.load("wf-kill").state
        ledger = store.ledger("wf-kill")
    recorded = [
        r.result.commit
        for r in state.history
        if r.status is StepStatus.COMPLETED and isinstance(r.result, PlanDraft | CodeChange)
    ]
    assert recorded == list(reversed(branch))  # every recorded commit is on the branch, once
    interrupted = [r for r in state.history if r.status is StepStatus.FAILED]
    assert [int(r.step) for r in interrupted] == [4]
    events = [e.content for e in ledger if e.kind is LedgerKind.EVENT]
    restored = [e for e in events if getattr(e, "event", "") == "workspace_restored"]
    assert len(restored) == 1 and restored[0].data["from"] == orphan  # type: ignore[union-attr]
    assert snapshot(repo) == before


def test_resume_of_a_clean_worktree_changes_nothing(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """A workflow waiting at a gate resumes without a reset: its commits stay as they are."""
    repo, env, _ = at_plan_gate(server, tmp_path, "wf-gate")
    head = git(repo, "rev-parse", "orchestrator/wf-gate").strip()
    approve_and_resume(env, "wf-gate")
    assert git(repo, "merge-base", "--is-ancestor", head, "orchestrator/wf-gate") == ""
    with open_store(tmp_path / "data") as store:
        ledger = store.ledger("wf-gate")
    assert not [e for e in ledger if getattr(e.content, "event", "") == "workspace_restored"]


def test_a_lock_left_by_a_killed_git_is_cleared(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """A stale ``index.lock`` and stray files in the worktree: resume clears both and goes on."""
    repo, env, worktree = at_plan_gate(server, tmp_path, "wf-lock")
    gitdir = Path(git(worktree, "rev-parse", "--absolute-git-dir").strip())
    (gitdir / "index.lock").write_text("")  # what git killed inside a commit leaves
    (worktree / "stray.py").write_text("x = 1\n")
    approve_and_resume(env, "wf-lock")
    assert not (gitdir / "index.lock").exists() and not (worktree / "stray.py").exists()
    assert git(repo, "log", "--format=%s", "main..orchestrator/wf-lock").splitlines() == (
        round_subjects("wf-lock")
    )


def test_a_reviewers_commit_on_the_branch_is_kept(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """Committed on the branch at a gate: kept, and the next round builds on it."""
    repo, env, worktree = at_plan_gate(server, tmp_path, "wf-rev")
    (worktree / "NOTES.md").write_text("reviewer notes\n")
    git(worktree, "add", "NOTES.md")
    git(worktree, "commit", "-q", "-m", "reviewer: notes")
    mine = git(worktree, "rev-parse", "HEAD").strip()
    (worktree / "uncommitted.txt").write_text("dropped\n")
    approve_and_resume(env, "wf-rev")
    assert git(repo, "merge-base", "--is-ancestor", mine, "orchestrator/wf-rev") == ""
    assert (worktree / "NOTES.md").exists() and not (worktree / "uncommitted.txt").exists()
    subjects = git(repo, "log", "--format=%s", "main..orchestrator/wf-rev").splitlines()
    assert subjects[-3] == "reviewer: notes"  # after the two plan rounds, before the code
