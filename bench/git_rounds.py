"""What git adds to a ``--repo`` workflow's round: the commit, and the restore before it.

Per round, in a worktree of a fresh temp repository: ``commit_all`` (stage everything and
commit, as ``workspace_commits.commit_round_sync`` does), then the checks and reset of
``workspace_commits.restore_sync`` after a stray file (lock check, HEAD, status, reset,
clean). Each is a few git subprocesses; an LLM call takes seconds, so these are the part of
a round that is not the model.

    python -m bench.git_rounds [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator.repository import git


def _repo(path: Path) -> Path:
    """A repository with one commit, made as a user would (through our git module)."""
    path.mkdir()
    git.git(path, "init", "-q", "-b", "main")
    git.git(path, "config", "user.email", "bench@example.invalid")
    git.git(path, "config", "user.name", "bench")
    (path / "prep.py").write_text("x = 0\n")
    git.git(path, "add", ".")
    git.git(path, "commit", "-qm", "initial")
    return path


def main() -> None:
    """Print the median commit and restore times over ``--rounds`` rounds."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repo(Path(tmp) / "repo")
        worktree = git.create_worktree(repo, "wf-bench", Path(tmp) / "wt", None).path
        commits: list[float] = []
        restores: list[float] = []
        for i in range(rounds):
            (worktree / "prep.py").write_text(f"x = {i + 1}\n")
            started = time.perf_counter()
            sha = git.commit_all(worktree, f"round {i + 1}")
            commits.append(time.perf_counter() - started)
            (worktree / "stray.py").write_text("half-written\n")
            started = time.perf_counter()
            git.remove_stale_index_lock(worktree)
            git.head(worktree)
            git.is_clean(worktree)
            git.reset_to(worktree, sha)
            restores.append(time.perf_counter() - started)
    print(
        f"git per round over {rounds} rounds: commit median "
        f"{statistics.median(commits) * 1000:.1f} ms, restore median "
        f"{statistics.median(restores) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
