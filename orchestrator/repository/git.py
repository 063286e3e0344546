"""The one home of ``git``: every git command the orchestrator runs goes through this module.

git is run as a real subprocess (``git`` on PATH), never through a library. The user's
checkout is only ever read (``rev-parse``, ``show-ref``) and given a new worktree and branch
(``git worktree add -b``); its index and working tree are never written. Everything else runs
in the workflow's own worktree.

The variables git inherits from a hook (``GIT_DIR``, ``GIT_INDEX_FILE``, ``GIT_WORK_TREE``
and the like) are dropped, so a run started from inside another repository's hook cannot
write that repository's index.

Refusals of bad input are ``ConfigError`` (not a repository, unknown base, branch taken, git
missing); a git command that fails at run time is ``GitError``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from state.errors import ConfigError, OrchestratorError

GIT_TIMEOUT_S = 120.0
BRANCH_PREFIX = "orchestrator/"
_IDENTITY = ("-c", "user.name=hybrid-orchestrator", "-c", "user.email=orchestrator@localhost")
_SCRUBBED = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
)


class GitError(OrchestratorError):
    """A git command failed; the message names the command, the directory and git's words."""


@dataclass(frozen=True, slots=True)
class Worktree:
    """A workflow's branch and worktree, made by ``create_worktree``."""

    repo: Path
    base: str
    base_commit: str
    branch: str
    path: Path


def git_executable() -> str:
    """The ``git`` on PATH.

    Raises:
        ConfigError: git is not installed.
    """
    found = shutil.which("git")
    if found is None:
        raise ConfigError(
            "git is not installed (no 'git' on PATH); install git, or run without --repo "
            "to work in a plain directory"
        )
    return found


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def git(
    cwd: Path,
    *args: str,
    check: bool = True,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` in ``cwd`` and return what it did.

    Raises:
        ConfigError: git is not installed.
        GitError: ``check`` and git exited non-zero, or it did not finish in time.
    """
    cmd = [git_executable(), *args]
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=_env(env),
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"'git {' '.join(args)}' in {cwd} took over {GIT_TIMEOUT_S:g}s") from exc
    except OSError as exc:
        raise GitError(f"cannot run 'git {' '.join(args)}' in {cwd}: {exc}") from exc
    if check and done.returncode != 0:
        words = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise GitError(f"'git {' '.join(args)}' failed in {cwd}: {words}")
    return done


def repository_root(path: Path) -> Path:
    """The top level of the git repository at ``path``.

    Raises:
        ConfigError: ``path`` is missing, not a directory or not in a git repository, or
            git is missing.
    """
    if not path.is_dir():
        raise ConfigError(f"--repo {path}: no such directory; give the path of a git checkout")
    done = git(path, "rev-parse", "--show-toplevel", check=False)
    if done.returncode != 0:
        raise ConfigError(
            f"--repo {path} is not a git repository ({done.stderr.strip()}); run 'git init' "
            "there first, or leave out --repo to work in a plain directory"
        )
    return Path(done.stdout.strip()).resolve()


def resolve_base(repo: Path, base: str | None) -> tuple[str, str]:
    """The base's name and commit: ``base`` when given, else the branch checked out.

    Raises:
        ConfigError: ``base`` names no branch or commit, or the repository has no commit.
    """
    if base is None:
        head = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        base = head.stdout.strip() if head.returncode == 0 else "HEAD"
    done = git(repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False)
    if done.returncode != 0:
        branches = git(repo, "branch", "--format=%(refname:short)", check=False).stdout.split()
        known = ", ".join(branches[:10]) or "none: the repository has no commit yet"
        raise ConfigError(
            f"--base {base}: no such branch or commit in {repo} (branches: {known}); "
            "name an existing branch, or commit something first"
        )
    return base, done.stdout.strip()


def branch_for(workflow_id: str) -> str:
    """The branch a workflow commits to."""
    return f"{BRANCH_PREFIX}{workflow_id}"


def branch_exists(repo: Path, branch: str) -> bool:
    """Whether ``refs/heads/BRANCH`` exists in ``repo``."""
    done = git(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return done.returncode == 0


def check_start(repo: Path, workflow_id: str, base: str | None) -> tuple[Path, str, str, str]:
    """Refuse a start that cannot work, before anything is made: (root, base, sha, branch).

    Raises:
        ConfigError: git missing, not a repository, unknown base, the branch exists already
            (another workflow's, or one a killed run left).
    """
    root = repository_root(repo)
    base_name, base_commit = resolve_base(root, base)
    branch = branch_for(workflow_id)
    if branch_exists(root, branch):
        raise ConfigError(
            f"branch {branch} already exists in {root} (another workflow's, or left by a "
            f"run that never started); choose another --id, or delete it with: "
            f"git -C {root} branch -D {branch} (a worktree that has it checked out goes "
            f"first: git -C {root} worktree list, then git worktree remove --force PATH)"
        )
    return root, base_name, base_commit, branch


def create_worktree(repo: Path, workflow_id: str, path: Path, base: str | None) -> Worktree:
    """Make the workflow's branch from ``base`` and check it out in a new worktree at ``path``.

    The user's checkout is not touched: only a branch ref and the worktree's bookkeeping are
    added to its ``.git``.

    Raises:
        ConfigError: not a repository, unknown base, the branch exists already (another
            workflow's, or one a killed run left), ``path`` exists, git missing.
        GitError: git failed to make the worktree.
    """
    root, base_name, base_commit, branch = check_start(repo, workflow_id, base)
    if path.exists():
        raise ConfigError(f"the worktree directory {path} exists already; choose another --id")
    path.parent.mkdir(parents=True, exist_ok=True)
    git(root, "worktree", "add", "--quiet", "-b", branch, str(path), base_commit)
    return Worktree(root, base_name, base_commit, branch, path.resolve())


def remove_worktree(repo: Path, path: Path, branch: str) -> None:
    """Undo ``create_worktree`` (a workflow that could not be stored); best effort."""
    git(repo, "worktree", "remove", "--force", str(path), check=False)
    git(repo, "worktree", "prune", check=False)
    git(repo, "branch", "-D", branch, check=False)


def head(worktree: Path) -> str:
    """The commit checked out in ``worktree``."""
    return git(worktree, "rev-parse", "HEAD").stdout.strip()


def is_clean(worktree: Path) -> bool:
    """Whether ``worktree`` has no staged, unstaged or untracked change (ignored files aside)."""
    return not git(worktree, "status", "--porcelain", "--untracked-files=all").stdout.strip()


def _identity(worktree: Path) -> tuple[str, ...]:
    """A committer identity for git when the user configured none."""
    email = git(worktree, "config", "user.email", check=False).stdout.strip()
    return () if email else _IDENTITY


def commit_all(worktree: Path, message: str) -> str:
    """Stage everything in ``worktree`` and commit it (an empty round is a commit too).

    Hooks that could refuse or rewrite the commit (pre-commit, commit-msg) are skipped:
    the round's change is the programmer's, checked by the validator, not by local hooks.

    Returns:
        The new commit's sha.
    """
    git(worktree, "add", "--all")
    git(
        worktree,
        *_identity(worktree),
        "-c",
        "commit.gpgsign=false",
        "commit",
        "--quiet",
        "--no-verify",
        "--allow-empty",
        "--file",
        "-",
        stdin=message,
    )
    return head(worktree)


def message_of(worktree: Path, commit: str) -> str:
    """The full message of ``commit``."""
    return git(worktree, "log", "-1", "--format=%B", commit).stdout


def remove_stale_index_lock(worktree: Path) -> bool:
    """Remove the worktree's ``index.lock`` that a killed git left; whether there was one.

    Only for a worktree no other process works in (the workflow's lease makes it so).
    """
    done = git(worktree, "rev-parse", "--git-dir", check=False)
    if done.returncode != 0:
        return False
    gitdir = Path(done.stdout.strip())
    lock = (gitdir if gitdir.is_absolute() else worktree / gitdir) / "index.lock"
    if not lock.is_file():
        return False
    lock.unlink(missing_ok=True)
    return True


def reset_to(worktree: Path, commit: str) -> None:
    """Put ``worktree`` back at ``commit``: tracked files reset, untracked ones removed.

    Ignored files (caches, virtual environments) are kept.
    """
    git(worktree, "reset", "--quiet", "--hard", commit)
    git(worktree, "clean", "--quiet", "-d", "--force")


def is_ancestor(worktree: Path, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is ``descendant`` or one of its ancestors."""
    done = git(worktree, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    return done.returncode == 0


def commits_between(worktree: Path, older: str, newer: str) -> list[tuple[str, str]]:
    """(sha, full message) of each commit in ``older..newer``, newest first."""
    out = git(worktree, "log", "--format=%H%x00%B%x1e", f"{older}..{newer}").stdout
    found: list[tuple[str, str]] = []
    for record in out.split("\x1e"):
        sha, sep, message = record.strip("\n").partition("\x00")
        if sep:
            found.append((sha, message))
    return found


def diff_against(worktree: Path, base: str, *, stat: bool = False) -> str:
    """``git diff BASE...HEAD``: what the branch changed since it left ``base``."""
    args = ["diff", "--no-color", "--no-ext-diff", f"{base}...HEAD"]
    if stat:
        args.insert(1, "--stat")
    return git(worktree, *args).stdout


def diff_between(worktree: Path, older: str, newer: str, *, stat: bool = False) -> str:
    """``git diff OLDER NEWER``: what changed from one commit to the other."""
    args = ["diff", "--no-color", "--no-ext-diff", older, newer]
    if stat:
        args.insert(1, "--stat")
    return git(worktree, *args).stdout


def apply_patch(directory: Path, patch: str, *, in_repository: bool) -> str:
    """Apply a unified diff to the files in ``directory``; "" when applied, else why not.

    The patch is checked whole first (``git apply --check``), so a patch that does not apply
    changes nothing. In a plain directory git works as a patch tool (no repository is looked
    for above ``directory``); in a worktree it applies to the working tree, not the index.
    Paths that leave the directory are refused by git itself, besides the caller's checks.

    Raises:
        ConfigError: git is missing.
    """
    env = {} if in_repository else {"GIT_CEILING_DIRECTORIES": str(directory.resolve().parent)}
    base: Sequence[str] = ("apply", "--recount", "--whitespace=nowarn")
    text = patch if patch.endswith("\n") else patch + "\n"
    checked = git(directory, *base, "--check", "-", stdin=text, env=env, check=False)
    if checked.returncode != 0:
        return _apply_reason(checked)
    done = git(directory, *base, "-", stdin=text, env=env, check=False)
    return "" if done.returncode == 0 else _apply_reason(done)


def _apply_reason(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return "; ".join(lines[:6]) or f"git apply exited with {done.returncode}"
