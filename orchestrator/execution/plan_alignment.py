"""Plan alignment: every file the approved plan names exists in the workspace (no subprocess)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from state.reports import ToolResult, ToolStatus

PLAN_FILE_EXTENSIONS = frozenset(
    {
        "py",
        "pyi",
        "ipynb",
        "toml",
        "cfg",
        "ini",
        "yaml",
        "yml",
        "sh",
        "sql",
    }
)
"""Extensions of files a plan names for the programmer to write. Data, model and report files
(``.csv``, ``.pkl``, ``.json``, ``.md``) are left out: plans name them as outputs of a run."""

_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules", ".tox"})
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_BULLET = re.compile(r"\s*(?:[-*+]|\d+[.)])\s")
_UNSAFE = re.compile(r"[*?\[\]{}<>$%|\\]")
_EDGE_PUNCTUATION = "\"'()[],;:!?*"


def check_plan_alignment(
    workspace: Path, plan_markdown: str, *, extensions: Collection[str] = PLAN_FILE_EXTENSIONS
) -> ToolResult:
    """Check that every file the plan names exists in the workspace.

    A bare file name (``prep.py``) may lie anywhere in the workspace; a path
    (``src/prep.py``) must lie exactly there.

    Args:
        workspace: the code.
        plan_markdown: the plan.
        extensions: which file extensions count as files to write.

    Returns:
        passed (also when the plan names no file, with a note) or failed, listing the
        missing files.
    """
    started = time.monotonic()
    named = named_files(plan_markdown, extensions=extensions)
    bare = {name for name in named if "/" not in name}
    found_anywhere = (
        {path.name for path in _files(workspace) if path.name in bare} if bare else set()
    )
    missing = [
        name for name in named if not ((workspace / name).is_file() or name in found_anywhere)
    ]
    duration = round(time.monotonic() - started, 3)
    if missing:
        return ToolResult(
            name="plan_alignment",
            status=ToolStatus.FAILED,
            duration_s=duration,
            detail="missing files named in the plan: " + ", ".join(missing),
        )
    detail = (
        "the plan names no file to check"
        if not named
        else f"all {len(named)} files named in the plan exist: " + ", ".join(named)
    )
    return ToolResult(
        name="plan_alignment", status=ToolStatus.PASSED, duration_s=duration, detail=detail
    )


def named_files(
    plan_markdown: str, *, extensions: Collection[str] = PLAN_FILE_EXTENSIONS
) -> tuple[str, ...]:
    """The relative file paths a plan names, in order of first mention.

    Paths are read from backticked spans and from bulleted or numbered lines. URLs, absolute
    and home paths, paths leaving the workspace (``..``), globs and placeholders are ignored,
    and so is every name whose extension is not in ``extensions``.

    Args:
        plan_markdown: the plan.
        extensions: the extensions that count (without the dot, lower case).

    Returns:
        Normalised relative paths (``./src/a.py`` gives ``src/a.py``).
    """
    candidates: list[str] = []
    for line in plan_markdown.splitlines():
        if _BULLET.match(line):
            candidates += line.replace("`", " ").split()
        else:
            candidates += " ".join(_BACKTICKED.findall(line)).split()
    wanted = {ext.lower().lstrip(".") for ext in extensions}
    paths: dict[str, None] = {}
    for candidate in candidates:
        path = _as_relative_path(candidate, wanted)
        if path is not None:
            paths.setdefault(path, None)
    return tuple(paths)


# --- helpers ---------------------------------------------------------------------------------


def _as_relative_path(token: str, extensions: Collection[str]) -> str | None:
    """A normalised relative path when ``token`` names a file to write, else None."""
    token = token.strip(_EDGE_PUNCTUATION).rstrip(".")
    for marker in ("**", "__"):  # markdown emphasis around a path
        if token.startswith(marker) and token.endswith(marker) and len(token) > 4:
            token = token[2:-2]
    if (
        not token
        or "://" in token
        or token.startswith(("/", "~", "www.", "-"))
        or re.match(r"^[A-Za-z]:", token)
        or _UNSAFE.search(token)
    ):
        return None
    parts = [part for part in PurePosixPath(token).parts if part != "."]
    if not parts or ".." in parts:
        return None
    name = parts[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or ext.lower() not in extensions:
        return None
    if not re.fullmatch(r"[\w.\-/]+", token):
        return None
    return "/".join(parts)


def _files(workspace: Path) -> list[Path]:
    """Every file of the workspace, outside caches and virtual environments."""
    found: list[Path] = []
    for directory, dirnames, filenames in os.walk(workspace):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        found += (Path(directory, name) for name in filenames)
    return found


def python_files(workspace: Path) -> list[Path]:
    """The workspace's ``.py`` files."""
    return [path for path in _files(workspace) if path.suffix == ".py"]
