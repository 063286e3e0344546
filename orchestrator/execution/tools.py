"""Level 2 of code validation: the built-in deterministic tools over the workspace.

Five tools, each giving a :class:`state.reports.ToolResult` (``checks.py`` picks which run,
with which Python, beside the project's own commands):

- ``compile``: byte-compiles every ``.py`` file; a SyntaxError fails it.
- ``ruff``: ``ruff check``, with the workspace's own ruff configuration when it has one and a
  small default rule set (pyflakes, syntax and statement errors, bugbear) otherwise.
- ``pytest``: the tests under coverage.py; reports the line coverage of the non-test code.
- ``plan_alignment``: every file the plan names exists in the workspace (no subprocess).
- ``mypy``: ``mypy`` over the workspace (its own configuration when it has one).

Each runs in its own sandbox copy of the workspace, with the project's interpreter (or the
orchestrator's, see ``environments.py``) in isolated mode (``python -I``): the workspace is
not on the tools' ``sys.path``, so a ``ruff.py``, ``compileall.py``, ``coverage.py`` or
``pytest.py`` in it cannot stand in for the real tool. The tests run through
``pytest_bootstrap.py`` (see there for how the workspace reaches the tests and not the
tools) and their verdict is read from the junit and coverage reports written through the
sandbox's report descriptors, which the code cannot reach by any path (see ``launch.py``): an
exit status of 0 counts only when the junit report says that tests ran and passed, in a
session that began after this run did.

A tool that is not installed, or that the sandbox cannot start, is recorded as ``crashed``:
nothing here raises for a tool's sake. ``failed`` is a verdict on the code (also a run killed
for using too much memory, reported as such), ``crashed`` an anomaly of the tool, ``timeout``
a run that hit the wall or CPU limit.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.execution.environments import ProjectEnvironment
from orchestrator.execution.plan_alignment import (
    PLAN_FILE_EXTENSIONS,
    check_plan_alignment,
    named_files,
    python_files,
)
from orchestrator.execution.reports import (
    Coverage,
    JunitSummary,
    ReportError,
    read_coverage,
    read_junit,
)
from orchestrator.execution.sandbox import Sandbox, SandboxResult
from state.errors import SandboxError
from state.reports import LineHits, ToolResult, ToolStatus

__all__ = [
    "DEFAULT_RUFF_RULES",
    "PLAN_FILE_EXTENSIONS",
    "Python",
    "ToolRun",
    "by_exit_code",
    "check_plan_alignment",
    "named_files",
    "output_tail",
    "run_compile",
    "run_in_sandbox",
    "run_mypy",
    "run_pytest",
    "run_ruff",
]

DEFAULT_RUFF_RULES = ("E4", "E7", "E9", "F", "B")
"""Ruff rules used when the workspace has no ruff configuration: errors and likely bugs."""

PYTEST_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
"""Only pytest's own plugins join the user's run, never those installed beside it."""

_DETAIL_CHARS = 3000
_CLOCK_SLACK_S = 2.0  # junit timestamps have whole-second precision in some pytest versions
_TEST_FILE_PATTERNS = ("*/tests/*", "*/test_*.py", "*_test.py", "*/conftest.py")
_BOOTSTRAP = Path(__file__).with_name("pytest_bootstrap.py")


@dataclass(frozen=True, slots=True)
class ToolRun:
    """The level-2 outcome.

    Attributes:
        tools: one result per check, in the configured order (by default compile, ruff,
            pytest, plan_alignment).
        line_coverage: percent of non-test lines the tests ran, None when not measured.
        line_hits: per file, the lines the tests ran and missed, None when not measured.
    """

    tools: tuple[ToolResult, ...]
    line_coverage: float | None
    line_hits: dict[str, LineHits] | None = None


Python = str | ProjectEnvironment
"""The interpreter a tool runs with: a path (the orchestrator's), or a project environment."""


async def run_compile(workspace: Path, sandbox: Sandbox, *, python: Python) -> ToolResult:
    """Byte-compile every ``.py`` file of the workspace; a SyntaxError fails it.

    Args:
        workspace: the code to compile.
        sandbox: where to run the compiler.
        python: the interpreter to compile with (run isolated from the workspace).

    Returns:
        passed, failed (a file does not compile, or there is no Python file), crashed or
        timeout.
    """
    if not await asyncio.to_thread(python_files, workspace):
        return ToolResult(
            name="compile",
            status=ToolStatus.FAILED,
            detail="the workspace has no Python file to compile",
        )
    argv = [_exe(python), "-I", "-m", "compileall", "-q", "-x", r"/\.", "."]
    run = await run_in_sandbox("compile", workspace, sandbox, argv, python=python)
    if isinstance(run, ToolResult):
        return run
    return by_exit_code("compile", run, {0: ToolStatus.PASSED, 1: ToolStatus.FAILED})


async def run_ruff(
    workspace: Path,
    sandbox: Sandbox,
    *,
    python: Python,
    rules: Collection[str] = DEFAULT_RUFF_RULES,
    args: Sequence[str] = (),
) -> ToolResult:
    """Lint the workspace with ``ruff check``.

    Args:
        workspace: the code to lint.
        sandbox: where to run ruff.
        python: the interpreter whose environment provides ruff (run isolated); a project
            environment without ruff lints with the orchestrator's.
        rules: the rules to select when the workspace has no ruff configuration.
        args: more arguments for ``ruff check``.

    Returns:
        passed, failed (exit 1: violations), crashed (exit 2, or ruff missing) or timeout.
    """
    if isinstance(python, ProjectEnvironment) and not _has_script(python, "ruff"):
        python = sys.executable  # a linter needs nothing of the project: ours will do
    exe = _exe(python)
    argv = [exe, "-I", "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args]
    if not _has_ruff_config(workspace):
        target = f"py{sys.version_info.major}{sys.version_info.minor}"
        argv += ["--isolated", "--select", ",".join(rules), "--target-version", target]
    run = await run_in_sandbox("ruff", workspace, sandbox, [*argv, "."], python=python)
    if isinstance(run, ToolResult):
        return run
    if missing_module(run, "ruff"):
        return _not_installed("ruff", run, python)
    return by_exit_code("ruff", run, {0: ToolStatus.PASSED, 1: ToolStatus.FAILED})


async def run_mypy(
    workspace: Path, sandbox: Sandbox, *, python: Python, args: Sequence[str] = ()
) -> ToolResult:
    """Type-check the workspace with mypy, installed in the environment that runs it.

    Args:
        workspace: the code to check (mypy reads its own configuration there, if any).
        sandbox: where to run mypy.
        python: the interpreter whose environment provides mypy and the project's packages.
        args: mypy's arguments (default: ``.``).

    Returns:
        passed, failed (exit 1: type errors), crashed (exit 2, or mypy missing) or timeout.
    """
    argv = [_exe(python), "-I", "-m", "mypy", "--no-color-output", *(args or (".",))]
    run = await run_in_sandbox("mypy", workspace, sandbox, argv, python=python)
    if isinstance(run, ToolResult):
        return run
    if missing_module(run, "mypy"):
        return _not_installed("mypy", run, python)
    return by_exit_code("mypy", run, {0: ToolStatus.PASSED, 1: ToolStatus.FAILED})


async def run_pytest(
    workspace: Path, sandbox: Sandbox, *, python: Python, args: Sequence[str] = ()
) -> tuple[ToolResult, Coverage | None]:
    """Run the workspace's tests under coverage.py and read the verdict from their reports.

    Args:
        workspace: the code and its tests.
        sandbox: where to run them.
        python: the interpreter whose environment provides pytest and coverage.
        args: more arguments for pytest.

    Returns:
        The result (passed only when pytest exited 0 and its junit report shows tests that
        ran and passed; failed on a failing test, when no test ran, when the report is
        missing or contradicts itself, and when the memory limit killed the run; crashed on
        pytest's usage, internal or interrupted errors and when a tool is missing; timeout)
        and the coverage of the non-test files (the total and per file), None when it could
        not be measured.
    """
    argv = [
        _exe(python),
        "-I",
        "-c",
        await asyncio.to_thread(_BOOTSTRAP.read_text),
        "{report:junit}",
        "{report:coverage}",
        ",".join(_TEST_FILE_PATTERNS),
        "-q",
        "-p",
        "no:cacheprovider",
        "--color=no",
        "-o",
        "junit_family=xunit2",
        *args,
    ]
    started_at = time.time()
    run = await run_in_sandbox(
        "pytest",
        workspace,
        sandbox,
        argv,
        reports=("junit", "coverage"),
        env=PYTEST_ENV,
        python=python,
    )
    if isinstance(run, ToolResult):
        return run, None
    for module in ("coverage", "pytest"):
        if missing_module(run, module):
            return _not_installed(module, run, python), None
    coverage = read_coverage(run.reports.get("coverage"))
    try:
        summary: JunitSummary | None = read_junit(run.reports.get("junit", b""))
        problem = ""
    except ReportError as exc:
        summary, problem = None, str(exc)
    if summary is not None and not (
        summary.started is not None and started_at - _CLOCK_SLACK_S <= summary.started
    ):
        # The descriptor is new for this run: a session older than the run was not this one.
        summary, problem = None, "its junit report does not date from this run"
    result = _pytest_verdict(run, summary, problem, sandbox)
    if coverage is not None and result.status is not ToolStatus.TIMEOUT:
        verdict, _, rest = result.detail.partition("\n")
        result = result.model_copy(
            update={"detail": f"{verdict}\nline coverage {coverage.percent:.1f}%\n{rest}"}
        )
    return result, (None if result.status is ToolStatus.TIMEOUT else coverage)


def _pytest_verdict(
    run: SandboxResult, summary: JunitSummary | None, problem: str, sandbox: Sandbox
) -> ToolResult:
    """The pytest result from the exit status, the limits and the junit report together."""

    def failed(reason: str) -> ToolResult:
        return ToolResult(
            name="pytest",
            status=ToolStatus.FAILED,
            exit_code=run.exit_code,
            duration_s=run.duration_s,
            detail=f"{reason}\n{output_tail(run)}",
        )

    memory_error = summary is not None and any("MemoryError" in m for m in summary.messages)
    if run.limit_hit == "memory" or (memory_error and run.limit_hit is None):
        return failed(sandbox.limits.describe("memory"))
    if run.limit_hit in ("wall_timeout", "cpu"):
        return by_exit_code("pytest", run, {})
    if run.exit_code == 5:
        return failed("no tests: pytest collected none")
    if run.exit_code == 2 and "error" in run.stdout.lower() and "collect" in run.stdout.lower():
        # Collection errors (a syntax error, an import that fails) are a verdict on the code,
        # not a broken tool: reported as failed, they do not look like an anomaly.
        return failed("the tests could not be collected")
    if run.exit_code == 4 and "ImportError while loading conftest" in run.stdout + run.stderr:
        # A conftest that cannot import (a package the environment lacks) is the same verdict.
        return failed("the tests could not be collected: a conftest.py does not import")
    if run.exit_code not in (0, 1):
        return by_exit_code("pytest", run, {})
    if summary is None:
        return failed(
            f"pytest exited with status {run.exit_code} but {problem}: the tests cannot be "
            "trusted to have run (did the code exit early, or replace or forge pytest's "
            "report?)"
        )
    if run.exit_code == 0 and summary.passed == 0:
        return failed(f"no test ran to completion ({summary.describe()})")
    if run.exit_code == 0 and (summary.failures or summary.errors):
        return failed(f"pytest exited 0 but its report says {summary.describe()}")
    if run.exit_code == 1 and not (summary.failures or summary.errors):
        return failed(f"pytest exited 1 although its report says {summary.describe()}")
    status = ToolStatus.PASSED if run.exit_code == 0 else ToolStatus.FAILED
    return ToolResult(
        name="pytest",
        status=status,
        exit_code=run.exit_code,
        duration_s=run.duration_s,
        detail=f"{summary.describe()}\n{output_tail(run)}",
    )


# --- helpers --------------------------------------------------------------------------------


async def run_in_sandbox(
    name: str,
    workspace: Path,
    sandbox: Sandbox,
    argv: Sequence[str],
    *,
    python: Python,
    reports: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    collect: Sequence[str] = (),
) -> SandboxResult | ToolResult:
    """Run a check in the sandbox with ``python``'s environment; a sandbox failure is crashed.

    A project environment is exposed to the run read-only and its ``bin`` put first on PATH.
    """
    started = time.monotonic()
    project = python if isinstance(python, ProjectEnvironment) else None
    try:
        return await sandbox.run(
            workspace,
            argv,
            reports=reports,
            env={**(project.variables if project else {}), **(env or {})},
            collect=collect,
            read_only=project.prefixes if project else (),
            path=(project.bin_dir,) if project else (),
        )
    except SandboxError as exc:
        return ToolResult(
            name=name,
            status=ToolStatus.CRASHED,
            duration_s=round(time.monotonic() - started, 3),
            detail=f"the sandbox could not run {name}: {exc}",
        )


def by_exit_code(name: str, run: SandboxResult, statuses: dict[int, ToolStatus]) -> ToolResult:
    """Map a finished run to a result: limits first, then the exit code (others crashed)."""
    if run.limit_hit in ("wall_timeout", "cpu"):
        status = ToolStatus.TIMEOUT
        note = f"{name} ran out of time ({run.message})\n"
    elif run.limit_hit == "memory":
        status, note = ToolStatus.FAILED, f"{run.message}\n"
    elif run.exit_code is not None and run.exit_code in statuses:
        status, note = statuses[run.exit_code], ""
    else:
        status = ToolStatus.CRASHED
        how = f"exit code {run.exit_code}" if run.exit_code is not None else f"signal {run.signal}"
        limit = f", {run.message}" if run.limit_hit else ""
        note = f"{name} crashed ({how}{limit})\n"
    return ToolResult(
        name=name,
        status=status,
        exit_code=run.exit_code,
        duration_s=run.duration_s,
        detail=note + output_tail(run),
    )


def missing_module(run: SandboxResult, module: str) -> bool:
    """Whether the interpreter said it has no such module (``python -m`` or an import)."""
    said = re.search(rf"No module named '?{re.escape(module)}'?$", run.stderr, re.MULTILINE)
    return run.exit_code not in (0, None) and said is not None


def _not_installed(tool: str, run: SandboxResult, python: Python) -> ToolResult:
    """The crashed result of a tool that is not installed."""
    if isinstance(python, ProjectEnvironment):
        what = (
            f"{tool} is not installed in the project environment ({python.python}); add it "
            "to the requirements the environment is built from (environment: in the "
            "workflow's configuration), or drop the check from checks:"
        )
    else:
        what = f"{tool} is not installed for {python}; install it in the orchestrator's environment"
    return ToolResult(
        name="pytest" if tool == "coverage" else tool,
        status=ToolStatus.CRASHED,
        exit_code=run.exit_code,
        duration_s=run.duration_s,
        detail=f"{what}\n{output_tail(run)}",
    )


def _exe(python: Python) -> str:
    """The interpreter's path."""
    return python.python if isinstance(python, ProjectEnvironment) else python


def _has_script(env: ProjectEnvironment, name: str) -> bool:
    """Whether the environment has the console script ``name`` (the tool is installed)."""
    return Path(env.bin_dir, name).exists()


def output_tail(run: SandboxResult) -> str:
    """The useful tail of a run's output: stdout, then stderr when there is any."""
    parts = [text.strip() for text in (run.stdout, run.stderr) if text.strip()]
    text = "\n--- stderr ---\n".join(parts)
    return text if len(text) <= _DETAIL_CHARS else "..." + text[-_DETAIL_CHARS:]


def _has_ruff_config(workspace: Path) -> bool:
    """Whether the workspace configures ruff itself."""
    if (workspace / "ruff.toml").is_file() or (workspace / ".ruff.toml").is_file():
        return True
    pyproject = workspace / "pyproject.toml"
    try:
        return pyproject.is_file() and "[tool.ruff" in pyproject.read_text(errors="replace")
    except OSError:
        return False
