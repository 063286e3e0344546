"""Level 2 of code validation: deterministic tools over the workspace.

Four tools, each giving a :class:`state.reports.ToolResult`:

- ``compile``: byte-compiles every ``.py`` file; a SyntaxError fails it.
- ``ruff``: ``ruff check``, with the workspace's own ruff configuration when it has one and a
  small default rule set (pyflakes, syntax and statement errors, bugbear) otherwise.
- ``pytest``: the tests under coverage.py; reports the line coverage of the non-test code.
- ``plan_alignment``: every file the plan names exists in the workspace (no subprocess).

The first three run concurrently, each in its own sandbox copy of the workspace, with the
orchestrator's interpreter (``python -m ruff``, ``-m pytest``, ``-m coverage``). A tool that is
not installed, or that the sandbox cannot start, is recorded as ``crashed``: nothing here
raises for a tool's sake. Statuses follow the tools' exit codes: ``failed`` is a verdict on the
code, ``crashed`` an anomaly of the tool, ``timeout`` a run that hit the wall or CPU limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator.execution.sandbox import Sandbox, SandboxResult
from state.errors import SandboxError
from state.reports import ToolResult, ToolStatus

DEFAULT_RUFF_RULES = ("E4", "E7", "E9", "F", "B")
"""Ruff rules used when the workspace has no ruff configuration: errors and likely bugs."""

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

_DETAIL_CHARS = 3000
_COVERAGE_FILE = ".hybrid-coverage.json"
_TEST_FILE_PATTERNS = ("*/tests/*", "*/test_*.py", "*_test.py", "*/conftest.py")
_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules", ".tox"})
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_BULLET = re.compile(r"\s*(?:[-*+]|\d+[.)])\s")
_UNSAFE = re.compile(r"[*?\[\]{}<>$%|\\]")
_EDGE_PUNCTUATION = "\"'()[],;:!?*"


@dataclass(frozen=True, slots=True)
class ToolRun:
    """The level-2 outcome.

    Attributes:
        tools: one result per tool, in the order compile, ruff, pytest, plan_alignment.
        line_coverage: percent of non-test lines the tests ran, None when not measured.
    """

    tools: tuple[ToolResult, ...]
    line_coverage: float | None


async def run_validation_tools(workspace: Path, plan_markdown: str, sandbox: Sandbox) -> ToolRun:
    """Run every deterministic tool over ``workspace``.

    Args:
        workspace: the code to check; each tool runs in its own sandbox copy of it.
        plan_markdown: the approved plan, whose named files must exist.
        sandbox: runs the tools (its limits apply to each tool).

    Returns:
        The four results and the line coverage.
    """
    python = sys.executable
    compiled, linted, (tested, coverage), aligned = await asyncio.gather(
        run_compile(workspace, sandbox, python=python),
        run_ruff(workspace, sandbox, python=python),
        run_pytest(workspace, sandbox, python=python),
        asyncio.to_thread(check_plan_alignment, workspace, plan_markdown),
    )
    return ToolRun(tools=(compiled, linted, tested, aligned), line_coverage=coverage)


async def run_compile(workspace: Path, sandbox: Sandbox, *, python: str) -> ToolResult:
    """Byte-compile every ``.py`` file of the workspace; a SyntaxError fails it.

    Args:
        workspace: the code to compile.
        sandbox: where to run the compiler.
        python: the interpreter to compile with.

    Returns:
        passed, failed (a file does not compile, or there is no Python file), crashed or
        timeout.
    """
    if not await asyncio.to_thread(_python_files, workspace):
        return ToolResult(
            name="compile",
            status=ToolStatus.FAILED,
            detail="the workspace has no Python file to compile",
        )
    argv = [python, "-m", "compileall", "-q", "-x", r"/\.", "."]
    run = await _run("compile", workspace, sandbox, argv)
    if isinstance(run, ToolResult):
        return run
    return _by_exit_code("compile", run, {0: ToolStatus.PASSED, 1: ToolStatus.FAILED})


async def run_ruff(
    workspace: Path, sandbox: Sandbox, *, python: str, rules: Collection[str] = DEFAULT_RUFF_RULES
) -> ToolResult:
    """Lint the workspace with ``ruff check``.

    Args:
        workspace: the code to lint.
        sandbox: where to run ruff.
        python: the interpreter whose environment provides ruff.
        rules: the rules to select when the workspace has no ruff configuration.

    Returns:
        passed, failed (exit 1: violations), crashed (exit 2, or ruff missing) or timeout.
    """
    argv = [python, "-m", "ruff", "check", "--no-cache", "--output-format", "concise"]
    if not _has_ruff_config(workspace):
        target = f"py{sys.version_info.major}{sys.version_info.minor}"
        argv += ["--isolated", "--select", ",".join(rules), "--target-version", target]
    run = await _run("ruff", workspace, sandbox, [*argv, "."])
    if isinstance(run, ToolResult):
        return run
    if _missing_module(run, "ruff"):
        return _not_installed("ruff", run, python)
    return _by_exit_code("ruff", run, {0: ToolStatus.PASSED, 1: ToolStatus.FAILED})


async def run_pytest(
    workspace: Path, sandbox: Sandbox, *, python: str
) -> tuple[ToolResult, float | None]:
    """Run the workspace's tests under coverage.py.

    Args:
        workspace: the code and its tests.
        sandbox: where to run them.
        python: the interpreter whose environment provides pytest and coverage.

    Returns:
        The result (passed; failed on a failing test or when no test was collected; crashed
        on pytest's usage, internal or interrupted errors and when a tool is missing; timeout)
        and the line coverage of the non-test files, None when it could not be measured.
    """
    py = shlex.quote(python)
    omit = ",".join(_TEST_FILE_PATTERNS)
    script = (
        f"{py} -m coverage run --source=. --omit={shlex.quote(omit)} -m pytest -q "
        f"-p no:cacheprovider --color=no; status=$?; "
        f"{py} -m coverage json -q -o {_COVERAGE_FILE} >/dev/null 2>&1; exit $status"
    )
    run = await _run("pytest", workspace, sandbox, ["sh", "-c", script], collect=(_COVERAGE_FILE,))
    if isinstance(run, ToolResult):
        return run, None
    coverage = _line_coverage(run.collected.get(_COVERAGE_FILE))
    for module in ("coverage", "pytest"):
        if _missing_module(run, module):
            return _not_installed(module, run, python), None
    if run.exit_code == 5:
        return ToolResult(
            name="pytest",
            status=ToolStatus.FAILED,
            exit_code=5,
            duration_s=run.duration_s,
            detail=f"no tests: pytest collected none\n{_output(run)}",
        ), coverage
    if run.exit_code == 2 and "error" in run.stdout.lower() and "collect" in run.stdout.lower():
        # Collection errors (a syntax error, an import that fails) are a verdict on the code,
        # not a broken tool: reported as failed, they do not look like an anomaly.
        return ToolResult(
            name="pytest",
            status=ToolStatus.FAILED,
            exit_code=2,
            duration_s=run.duration_s,
            detail=f"the tests could not be collected\n{_output(run)}",
        ), coverage
    result = _by_exit_code("pytest", run, {0: ToolStatus.PASSED, 1: ToolStatus.FAILED})
    if coverage is not None:
        result = result.model_copy(
            update={"detail": f"line coverage {coverage:.1f}%\n{result.detail}"}
        )
    return result, coverage


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


# --- helpers --------------------------------------------------------------------------------


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


async def _run(
    name: str, workspace: Path, sandbox: Sandbox, argv: list[str], *, collect: tuple[str, ...] = ()
) -> SandboxResult | ToolResult:
    """Run a tool in the sandbox; a sandbox failure becomes a crashed result."""
    started = time.monotonic()
    try:
        return await sandbox.run(workspace, argv, collect=collect)
    except SandboxError as exc:
        return ToolResult(
            name=name,
            status=ToolStatus.CRASHED,
            duration_s=round(time.monotonic() - started, 3),
            detail=f"the sandbox could not run {name}: {exc}",
        )


def _by_exit_code(name: str, run: SandboxResult, statuses: dict[int, ToolStatus]) -> ToolResult:
    """Map a finished run to a result: limits first, then the exit code (others crashed)."""
    if run.limit_hit in ("wall_timeout", "cpu"):
        status = ToolStatus.TIMEOUT
        note = f"{name} ran out of time ({run.limit_hit.replace('_', ' ')} limit of the sandbox)\n"
    elif run.exit_code is not None and run.exit_code in statuses:
        status, note = statuses[run.exit_code], ""
    else:
        status = ToolStatus.CRASHED
        how = f"exit code {run.exit_code}" if run.exit_code is not None else f"signal {run.signal}"
        limit = f", {run.limit_hit} limit hit" if run.limit_hit else ""
        note = f"{name} crashed ({how}{limit})\n"
    return ToolResult(
        name=name,
        status=status,
        exit_code=run.exit_code,
        duration_s=run.duration_s,
        detail=note + _output(run),
    )


def _missing_module(run: SandboxResult, module: str) -> bool:
    """Whether the interpreter said it has no such module (``python -m`` or an import)."""
    said = re.search(rf"No module named '?{re.escape(module)}'?$", run.stderr, re.MULTILINE)
    return run.exit_code not in (0, None) and said is not None


def _not_installed(tool: str, run: SandboxResult, python: str) -> ToolResult:
    """The crashed result of a tool that is not installed."""
    return ToolResult(
        name="pytest" if tool == "coverage" else tool,
        status=ToolStatus.CRASHED,
        exit_code=run.exit_code,
        duration_s=run.duration_s,
        detail=f"{tool} is not installed for {python}; install it in the "
        f"orchestrator's environment\n{_output(run)}",
    )


def _output(run: SandboxResult) -> str:
    """The useful tail of a run's output: stdout, then stderr when there is any."""
    parts = [text.strip() for text in (run.stdout, run.stderr) if text.strip()]
    text = "\n--- stderr ---\n".join(parts)
    return text if len(text) <= _DETAIL_CHARS else "..." + text[-_DETAIL_CHARS:]


def _line_coverage(report: bytes | None) -> float | None:
    """The total line coverage from coverage.py's JSON report."""
    if report is None:
        return None
    try:
        percent = json.loads(report)["totals"]["percent_covered"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(percent, int | float) and 0.0 <= percent <= 100.0:
        return round(float(percent), 2)
    return None


def _has_ruff_config(workspace: Path) -> bool:
    """Whether the workspace configures ruff itself."""
    if (workspace / "ruff.toml").is_file() or (workspace / ".ruff.toml").is_file():
        return True
    pyproject = workspace / "pyproject.toml"
    try:
        return pyproject.is_file() and "[tool.ruff" in pyproject.read_text(errors="replace")
    except OSError:
        return False


def _files(workspace: Path) -> list[Path]:
    """Every file of the workspace, outside caches and virtual environments."""
    found: list[Path] = []
    for directory, dirnames, filenames in os.walk(workspace):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        found += (Path(directory, name) for name in filenames)
    return found


def _python_files(workspace: Path) -> list[Path]:
    """The workspace's ``.py`` files."""
    return [path for path in _files(workspace) if path.suffix == ".py"]
