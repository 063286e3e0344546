"""The configured level-2 checks: built-ins and the project's own commands, in its Python.

:func:`run_validation_tools` resolves the workflow's project environment
(``environments.py``), then runs every check of its ``checks:`` list concurrently, each in
its own sandbox copy of the workspace, with its own time limit:

- the built-ins (``tools.py``): ``compile``, ``ruff``, ``pytest`` (under coverage),
  ``plan_alignment`` and ``mypy``. The Python tools among them (pytest, mypy) run in the
  project environment and are reported as crashed, saying so, when it lacks them; ruff falls
  back to the orchestrator's own when the project has none.
- command checks (``{name: lint, run: make lint}``): the command runs with the project
  environment first on PATH (so ``python``, ``pytest`` or ``tox`` are the project's) and is
  read by its exit code (0 passes) or by a junit XML report: the file ``junit:`` names in the
  copy, or a ``{report:junit}`` placeholder in the command, which becomes a descriptor the
  code cannot reach by path (see ``launch.py``). A junit check passes when tests ran and none
  failed or errored.

Every check gives one :class:`state.reports.ToolResult`; a check that cannot run is
``crashed``, never an exception. Only a project environment that cannot be built raises
(:class:`SandboxError`, with the installer's last lines): no check can run without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.execution.environments import Progress, project_environment
from orchestrator.execution.plan_alignment import check_plan_alignment
from orchestrator.execution.reports import Coverage, ReportError, read_junit
from orchestrator.execution.sandbox import Sandbox
from orchestrator.execution.tools import (
    Python,
    ToolRun,
    by_exit_code,
    output_tail,
    run_compile,
    run_in_sandbox,
    run_mypy,
    run_pytest,
    run_ruff,
)
from state.check_settings import CheckSettings, CheckVerdict, ValidationSetup, default_checks
from state.reports import ToolResult, ToolStatus

__all__ = ["run_check", "run_checks", "run_command_check", "run_validation_tools"]

# 0 passes; any other status is a verdict on the code, but for the shell's "cannot execute"
# and "not found" (126, 127), which say the command itself is broken (crashed).
_EXIT_STATUSES = {0: ToolStatus.PASSED} | {
    code: ToolStatus.FAILED for code in range(1, 256) if code not in (126, 127)
}


async def run_validation_tools(
    workspace: Path,
    plan_markdown: str,
    sandbox: Sandbox,
    setup: ValidationSetup | None = None,
    *,
    progress: Progress | None = None,
) -> ToolRun:
    """Run the workflow's checks over ``workspace`` in its project environment.

    Args:
        workspace: the code to check; each check runs in its own sandbox copy of it.
        plan_markdown: the approved plan, whose named files must exist (plan_alignment).
        sandbox: runs the checks (its limits apply to each, a check's timeout_s aside).
        setup: the environment and the checks (default: the orchestrator's interpreter and
            compile, ruff, pytest, plan_alignment).
        progress: told how an environment build goes.

    Returns:
        One result per check, in the configured order, and pytest's line coverage.

    Raises:
        SandboxError: the project environment could not be found or built.
    """
    setup = setup or ValidationSetup()
    env = await project_environment(setup.environment, workspace, progress=progress)
    python: Python = env if env is not None else sys.executable
    return await run_checks(workspace, plan_markdown, sandbox, setup.checks, python=python)


async def run_checks(
    workspace: Path,
    plan_markdown: str,
    sandbox: Sandbox,
    checks: Sequence[CheckSettings] = (),
    *,
    python: Python = sys.executable,
) -> ToolRun:
    """Run ``checks`` (default: the four built-ins) concurrently with ``python``."""
    checks = tuple(checks) or default_checks()
    outcomes = await asyncio.gather(
        *(run_check(check, workspace, plan_markdown, sandbox, python=python) for check in checks)
    )
    coverage = next(
        (cov for check, (_, cov) in zip(checks, outcomes, strict=True) if cov is not None),
        None,
    )
    return ToolRun(
        tools=tuple(result for result, _ in outcomes),
        line_coverage=coverage.percent if coverage is not None else None,
        line_hits=coverage.files if coverage is not None else None,
    )


async def run_check(
    check: CheckSettings,
    workspace: Path,
    plan_markdown: str,
    sandbox: Sandbox,
    *,
    python: Python,
) -> tuple[ToolResult, Coverage | None]:
    """Run one check; returns its result and, for pytest, the coverage it measured."""
    if check.name == "plan_alignment":
        return await asyncio.to_thread(check_plan_alignment, workspace, plan_markdown), None
    box = _limited(sandbox, check.timeout_s)
    if check.run is not None:
        return await run_command_check(check, workspace, box, python=python), None
    if check.name == "pytest":
        return await run_pytest(workspace, box, python=python, args=check.args)
    if check.name == "compile":
        return await run_compile(workspace, box, python=python), None
    if check.name == "ruff":
        return await run_ruff(workspace, box, python=python, args=check.args), None
    if check.name == "mypy":
        return await run_mypy(workspace, box, python=python, args=check.args), None
    raise AssertionError(f"check {check.name!r} passed config validation unknown")


async def run_command_check(
    check: CheckSettings, workspace: Path, sandbox: Sandbox, *, python: Python
) -> ToolResult:
    """Run a project command (``make check``, ``tox -e lint``) and read its verdict.

    Returns:
        passed or failed by the exit code (0 passes) or the junit report (tests ran, none
        failed or errored); crashed when the command cannot start or a junit report is
        missing or unreadable; timeout.
    """
    assert check.run is not None
    argv = shlex.split(check.run) if isinstance(check.run, str) else list(check.run)
    by_descriptor = any("{report:junit}" in arg for arg in argv)
    collect = (check.junit,) if check.junit and not by_descriptor else ()
    run = await run_in_sandbox(
        check.name,
        workspace,
        sandbox,
        argv,
        python=python,
        reports=("junit",) if by_descriptor else (),
        collect=collect,
    )
    if isinstance(run, ToolResult):
        return run
    if check.read is CheckVerdict.EXIT_CODE or run.limit_hit is not None:
        return by_exit_code(check.name, run, _EXIT_STATUSES)
    data = run.reports.get("junit") if by_descriptor else run.collected.get(check.junit or "")
    where = "its {report:junit} descriptor" if by_descriptor else f"{check.junit}"
    base = {"name": check.name, "exit_code": run.exit_code, "duration_s": run.duration_s}
    if not data:
        return ToolResult(
            **base,
            status=ToolStatus.CRASHED,
            detail=f"{check.name} wrote no junit report to {where} (exit code "
            f"{run.exit_code}); check the command and its junit option\n{output_tail(run)}",
        )
    try:
        summary = read_junit(data)
    except ReportError as exc:
        return ToolResult(
            **base,
            status=ToolStatus.CRASHED,
            detail=f"{check.name}'s junit report {where} is unreadable: {exc}\n{output_tail(run)}",
        )
    ok = summary.passed > 0 and not (summary.failures or summary.errors)
    return ToolResult(
        **base,
        status=ToolStatus.PASSED if ok else ToolStatus.FAILED,
        detail=f"{summary.describe()} (exit code {run.exit_code})\n{output_tail(run)}",
    )


def _limited(sandbox: Sandbox, timeout_s: float | None) -> Sandbox:
    """The sandbox with a check's own wall-clock limit (and CPU time to match)."""
    if timeout_s is None:
        return sandbox
    limits = sandbox.limits
    return sandbox.with_limits(
        dataclasses.replace(
            limits, wall_timeout_s=timeout_s, cpu_s=max(limits.cpu_s, math.ceil(timeout_s))
        )
    )
