"""The workspace an agent works in: which paths it may write, which files a prompt shows."""

from __future__ import annotations

import os
import re
from pathlib import Path

RESERVED_DIRS = frozenset({"plans"})
"""Top-level workspace directories the programmer may not write (the planner owns them)."""

_SKIPPED_DIRS = frozenset(
    {"__pycache__", "node_modules", "venv", "env", "build", "dist", "htmlcov", "site-packages"}
)
_BACKTICKS = re.compile(r"`+")
_LANGUAGES = {
    ".py": "python",
    ".md": "markdown",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".json": "json",
    ".cfg": "ini",
    ".ini": "ini",
    ".sh": "bash",
    ".sql": "sql",
    ".txt": "text",
    ".csv": "csv",
}


def resolve_in_workspace(workspace: Path, relative: str) -> tuple[Path | None, str]:
    """Where ``relative`` points inside ``workspace``, or why it is refused.

    A path is refused when it is empty, absolute, contains ``..``, lies in a reserved
    directory, or resolves (through symlinks) outside the workspace.

    Returns:
        The resolved path and "" when allowed, else None and the reason.
    """
    text = relative.strip().replace("\\", "/")
    if not text or "\x00" in text:
        return None, "empty or invalid path"
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None, "absolute path"
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts:
        return None, "names no file"
    if ".." in parts:
        return None, "contains '..'"
    if parts[0] in RESERVED_DIRS:
        return None, f"'{parts[0]}/' is reserved for the planner's plans"
    root = workspace.resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root) or target == root:
        return None, "resolves outside the workspace (through a symlink)"
    return target, ""


def workspace_files(workspace: Path) -> list[str]:
    """The workspace's source files as sorted relative POSIX paths.

    Plans, hidden files and directories, caches and virtual environments are skipped;
    symlinked directories are not entered, and a symlinked file that leads outside the
    workspace is skipped, so nothing outside it reaches a prompt.
    """
    root = workspace.resolve()
    if not root.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [
            d
            for d in dirnames
            if not (
                d.startswith(".")
                or d in _SKIPPED_DIRS
                or d.endswith(".egg-info")
                or (here == root and d in RESERVED_DIRS)
            )
        ]
        for name in filenames:
            path = here / name
            if name.startswith(".") or path.suffix in (".pyc", ".pyo"):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                continue
            if path.is_file():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def code_context(
    workspace: Path, *, max_file_chars: int = 12_000, max_total_chars: int = 60_000
) -> str:
    """The workspace's files as markdown, for a prompt.

    Each file is shown in a fenced block under a ``### File: path`` heading. A file longer
    than ``max_file_chars`` is cut with a note; once ``max_total_chars`` is spent the rest
    are only named. Binary files are named, not shown.
    """
    root = workspace.resolve()
    sections: list[str] = []
    omitted: list[str] = []
    budget = max_total_chars
    for rel in workspace_files(root):
        if budget <= 0:
            omitted.append(rel)
            continue
        try:
            raw = (root / rel).read_bytes()
        except OSError:
            omitted.append(rel)
            continue
        if b"\x00" in raw[:8192]:
            sections.append(f"### File: {rel}\n\n(binary file, {len(raw)} bytes, not shown)")
            continue
        text = raw.decode("utf-8", errors="replace")
        limit = min(max_file_chars, budget)
        shown = text[:limit]
        note = ""
        if len(text) > limit:
            note = f"\n[... truncated: {len(text) - limit} of {len(text)} characters not shown]"
        budget -= len(shown)
        longest = max((len(run) for run in _BACKTICKS.findall(shown)), default=0)
        fence = "`" * max(3, longest + 1)
        lang = _LANGUAGES.get(Path(rel).suffix.lower(), "")
        sections.append(f"### File: {rel}\n\n{fence}{lang}\n{shown}\n{fence}{note}")
    if not sections and not omitted:
        return "(the workspace has no files yet)"
    if omitted:
        sections.append("Not shown, to keep the prompt short: " + ", ".join(omitted))
    return "\n\n".join(sections)
