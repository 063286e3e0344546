"""The workspace an agent works in: which paths it may write, which files a prompt shows."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from state.errors import HumanAnswerError
from state.validation import check_text

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


def _show_file(root: Path, rel: str, limit: int) -> tuple[str, int] | None:
    """A file as a fenced markdown section and the characters shown; None if unreadable."""
    try:
        raw = (root / rel).read_bytes()
    except OSError:
        return None
    if b"\x00" in raw[:8192]:
        return f"### File: {rel}\n\n(binary file, {len(raw)} bytes, not shown)", 0
    text = raw.decode("utf-8", errors="replace")
    shown = text[:limit]
    note = ""
    if len(text) > limit:
        note = f"\n[... truncated: {len(text) - limit} of {len(text)} characters not shown]"
    longest = max((len(run) for run in _BACKTICKS.findall(shown)), default=0)
    fence = "`" * max(3, longest + 1)
    lang = _LANGUAGES.get(Path(rel).suffix.lower(), "")
    return f"### File: {rel}\n\n{fence}{lang}\n{shown}\n{fence}{note}", len(shown)


def _render(
    root: Path, order: list[str], max_file_chars: int, max_total_chars: int
) -> tuple[list[str], list[str], list[str], int]:
    """(sections, files shown, files omitted, characters of code shown) within the budgets."""
    sections: list[str] = []
    shown: list[str] = []
    omitted: list[str] = []
    budget = max_total_chars
    for rel in order:
        if budget <= 0:
            omitted.append(rel)
            continue
        section = _show_file(root, rel, min(max_file_chars, budget))
        if section is None:
            omitted.append(rel)
            continue
        sections.append(section[0])
        shown.append(rel)
        budget -= section[1]
    return sections, shown, omitted, max_total_chars - budget


def code_context(
    workspace: Path, *, max_file_chars: int = 12_000, max_total_chars: int = 60_000
) -> str:
    """The workspace's files as markdown, for a prompt.

    Each file is shown in a fenced block under a ``### File: path`` heading. A file longer
    than ``max_file_chars`` is cut with a note; once ``max_total_chars`` is spent the rest
    are only named. Binary files are named, not shown.
    """
    root = workspace.resolve()
    sections, _, omitted, _ = _render(root, workspace_files(root), max_file_chars, max_total_chars)
    if not sections and not omitted:
        return "(the workspace has no files yet)"
    if omitted:
        sections.append("Not shown, to keep the prompt short: " + ", ".join(omitted))
    return "\n\n".join(sections)


CHARS_PER_TOKEN = 4
"""The estimate behind a context's token budget (code runs at about four characters a token)."""
MAX_LAYOUT_FILES = 400


@dataclass(frozen=True, slots=True)
class ContextSelection:
    """What a programmer's prompt shows of the workspace, and what that cost."""

    markdown: str
    files: tuple[str, ...]
    """the files shown in full (or cut at the per-file limit), most relevant first"""
    tokens: int
    budget_tokens: int


def relevance(rel: str, mentioned: str) -> int:
    """How plainly ``mentioned`` (a plan, change requests) names the file ``rel``: 0 to 3."""
    path = Path(rel)
    if rel in mentioned:
        return 3
    if len(path.name) > 3 and re.search(rf"(?<![\w.-]){re.escape(path.name)}\b", mentioned):
        return 2
    stem = path.stem.removeprefix("test_")
    if len(stem) > 2 and re.search(rf"\b{re.escape(stem)}\b", mentioned):
        return 1
    return 0


def select_context(
    workspace: Path,
    mentioned: str,
    *,
    budget_tokens: int = 15_000,
    max_file_chars: int = 12_000,
) -> ContextSelection:
    """The workspace's layout and its files most relevant to ``mentioned``, within a budget.

    Every file is listed in the layout; files are then shown whole, those the plan names by
    path first, then by file name, then by module name, then the rest, until
    ``budget_tokens`` (estimated at ``CHARS_PER_TOKEN``) is spent.
    """
    root = workspace.resolve()
    files = workspace_files(root)
    if not files:
        return ContextSelection("(the workspace has no files yet)", (), 0, budget_tokens)
    ranked = sorted(files, key=lambda rel: (-relevance(rel, mentioned), rel))
    listed = files[:MAX_LAYOUT_FILES]
    layout = "### Layout\n\n" + "\n".join(f"- {rel}" for rel in listed)
    if len(files) > len(listed):
        layout += f"\n- ... and {len(files) - len(listed)} more files"
    budget_chars = budget_tokens * CHARS_PER_TOKEN
    sections, shown, omitted, used = _render(root, ranked, max_file_chars, budget_chars)
    if omitted:
        sections.append(
            f"Not shown (the {budget_tokens}-token budget is spent): " + ", ".join(omitted)
        )
    markdown = "\n\n".join([layout, *sections])
    tokens = -(-used // CHARS_PER_TOKEN)  # rounded up
    return ContextSelection(markdown, tuple(shown), tokens, budget_tokens)


def line_comment(workspace: str, where: str, text: str, *, label: str = "--at") -> str:
    """A change request at ``FILE:LINE`` of the workspace, as the programmer is shown it.

    ``request-changes --at FILE:LINE TEXT`` and the console's "at a line" requests both come
    here, so both are checked alike.

    Raises:
        HumanAnswerError: ``where`` is malformed, leaves the workspace, names no file there,
            or a line past its end; or ``text`` carries control characters (``label`` names
            the option or field in the message).
    """
    check_text(text, label, HumanAnswerError)
    path, sep, number = where.rpartition(":")
    if not sep or not path or not number.isdigit() or int(number) < 1:
        raise HumanAnswerError(
            f"{label} {where!r}: give FILE:LINE, e.g. {label} src/prep.py:42 'why'"
        )
    target, why = resolve_in_workspace(Path(workspace), path)
    if target is None or not target.is_file():
        raise HumanAnswerError(
            f"{label} {where}: {why or 'no such file'} in the workspace {workspace}; name a "
            "file of the change (see: orchestrator inspect ID)"
        )
    lines = len(target.read_text(encoding="utf-8", errors="replace").splitlines())
    if int(number) > lines:
        raise HumanAnswerError(f"{label} {where}: {path} has {lines} lines; name one of them")
    return f"At {path}:{int(number)}: {text}"
