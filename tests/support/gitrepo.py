"""Real git repositories in temp directories, and the orchestrator CLI run against them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.fake_openai import FakeOpenAIServer
from support.world import World

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` (as a user would), return its stdout; fail the test on an error."""
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GIT_ENV, "HOME": str(repo.parent)},
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def make_repo(path: Path) -> Path:
    """A repository with one commit on ``main`` (a module and its README)."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.invalid")
    git(path, "config", "user.name", "Dev")
    (path / "README.md").write_text("# project\n")
    (path / "prep.py").write_text('"""Old prep."""\n\n\ndef old():\n    return 1\n')
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "initial")
    return path


def make_dirty(repo: Path) -> None:
    """Staged, unstaged and untracked changes in the user's checkout."""
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "README.md").write_text("# project\n\nunstaged edit\n")
    (repo / "untracked.txt").write_text("untracked\n")


def snapshot(repo: Path) -> dict[str, str]:
    """Every byte of the checkout that a run could change: the files, the index, HEAD.

    Taken without running git (``git status`` would refresh the index itself).
    """
    out: dict[str, str] = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and (not rel.startswith(".git/") or rel in (".git/index", ".git/HEAD")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cli_env(server: FakeOpenAIServer, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run against the fake LLM server and ``data_dir``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GIT_"))},
        **GIT_ENV,
        "HOME": str(data_dir.parent),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
        "ORCHESTRATOR_DATA_DIR": str(data_dir),
        "NO_COLOR": "1",
        **extra,
    }


def cli(*args: str) -> list[str]:
    """The command line of ``orchestrator ARGS``."""
    return [sys.executable, "-m", "orchestrator", *args]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``orchestrator ARGS`` to its end."""
    return subprocess.run(
        cli(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def served_world() -> Iterator[FakeOpenAIServer]:
    """The scripted world (a plan revision, a code refinement) on a loopback server."""
    world = World()
    with FakeOpenAIServer(responder=world.http_responder) as srv:
        yield srv


def round_subjects(workflow_id: str) -> list[str]:
    """The commit subjects of a scripted-world run on its branch, newest first."""
    return [
        f"orchestrator {workflow_id}: step 6 code refinement, round 2",
        f"orchestrator {workflow_id}: step 4 implementation, round 1",
        f"orchestrator {workflow_id}: step 3 plan revision, round 2",
        f"orchestrator {workflow_id}: step 1 plan, round 1",
    ]
