"""Configured checks: built-ins and project commands, read by exit code or junit XML."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.execution.checks import run_checks, run_validation_tools
from orchestrator.execution.environments import ProjectEnvironment, inspect_python
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from state.check_settings import (
    DEFAULT_CHECKS,
    CheckSettings,
    EnvironmentSettings,
    ValidationSetup,
)
from state.config import WorkflowConfig, load_config, parse_config
from state.errors import ConfigError, SandboxError
from state.reports import ToolResult, ToolStatus

SANDBOX = Sandbox(SandboxLimits(wall_timeout_s=60))

JUNIT_WRITER = '''\
"""Writes a junit report with the given failures to the path given."""
import sys

failures = int(sys.argv[2])
cases = "".join(
    f'<testcase classname="t" name="case{i}">'
    + ('<failure message="boom">boom</failure>' if i < failures else "")
    + "</testcase>"
    for i in range(3)
)
with open(sys.argv[1], "w") as out:
    out.write(
        f'<testsuites><testsuite name="s" tests="3" failures="{failures}" errors="0" '
        f'skipped="0">{cases}</testsuite></testsuites>'
    )
sys.exit(1 if failures else 0)
'''


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with a script that writes junit reports."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "write_junit.py").write_text(JUNIT_WRITER, encoding="utf-8")
    return root


async def one(workspace: Path, **check: object) -> ToolResult:
    """Run one command check with the orchestrator's interpreter."""
    run = await run_checks(workspace, "", SANDBOX, [CheckSettings.model_validate(check)])
    (result,) = run.tools
    return result


@pytest.mark.parametrize(("code", "status"), [(0, ToolStatus.PASSED), (3, ToolStatus.FAILED)])
async def test_a_command_check_is_read_by_its_exit_code(
    workspace: Path, code: int, status: ToolStatus
) -> None:
    """Exit 0 passes, any other status fails, and the result carries the check's name."""
    result = await one(workspace, name="lint", run=f"python -c 'raise SystemExit({code})'")
    assert (result.name, result.status, result.exit_code) == ("lint", status, code)


async def test_a_command_that_does_not_exist_is_crashed(workspace: Path) -> None:
    """A missing program is an anomaly of the check, not a verdict on the code."""
    result = await one(workspace, name="tox", run="no-such-tool-here -e lint")
    assert result.status is ToolStatus.CRASHED
    assert "no-such-tool-here" in result.detail


@pytest.mark.parametrize(("failures", "status"), [(0, ToolStatus.PASSED), (1, ToolStatus.FAILED)])
async def test_a_command_check_is_read_from_its_junit_file(
    workspace: Path, failures: int, status: ToolStatus
) -> None:
    """read: junit counts the report's failures, read back from the copy of the workspace."""
    result = await one(
        workspace,
        name="unit",
        run=f"python write_junit.py junit.xml {failures}",
        read="junit",
        junit="junit.xml",
    )
    assert result.status is status
    assert "3 tests ran" in result.detail


async def test_a_junit_descriptor_placeholder_is_read_too(workspace: Path) -> None:
    """{report:junit} in the command becomes a descriptor the code cannot reach by path."""
    result = await one(
        workspace,
        name="unit",
        run=["python", "write_junit.py", "{report:junit}", "2"],
        read="junit",
    )
    assert result.status is ToolStatus.FAILED
    assert "2 failed" in result.detail or "failures" in result.detail


async def test_a_junit_check_without_its_report_is_crashed(workspace: Path) -> None:
    """No report where the check says it writes one: crashed, saying where it looked."""
    result = await one(
        workspace, name="unit", run="python -c 'pass'", read="junit", junit="out/junit.xml"
    )
    assert result.status is ToolStatus.CRASHED
    assert "wrote no junit report to out/junit.xml" in result.detail


async def test_a_checks_own_timeout_applies(workspace: Path) -> None:
    """timeout_s replaces the sandbox's wall clock for that check alone."""
    slow = "python -c 'import time; time.sleep(30)'"
    run = await run_checks(
        workspace,
        "",
        SANDBOX,
        [
            CheckSettings(name="slow", run=slow, timeout_s=1),
            CheckSettings(name="quick", run="python -c 'pass'"),
        ],
    )
    slow_result, quick = run.tools
    assert slow_result.status is ToolStatus.TIMEOUT
    assert "1 s" in slow_result.detail
    assert quick.status is ToolStatus.PASSED


async def test_default_checks_are_the_four_built_ins(workspace: Path) -> None:
    """Without checks: compile, ruff, pytest and plan_alignment, in that order."""
    assert tuple(c.name for c in WorkflowConfig().checks) == DEFAULT_CHECKS
    run = await run_validation_tools(workspace, "", SANDBOX)
    assert [t.name for t in run.tools] == list(DEFAULT_CHECKS)


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory: pytest.TempPathFactory) -> ProjectEnvironment:
    """A virtualenv with nothing installed (not even pip)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    import asyncio  # noqa: PLC0415 -- only this fixture runs a coroutine outside a test

    return asyncio.run(inspect_python(str(venv / "bin" / "python")))


async def test_python_tools_missing_from_the_project_env_say_so(
    workspace: Path, bare_env: ProjectEnvironment
) -> None:
    """Pytest and mypy run in the project env; absent there, they are crashed and say why."""
    (workspace / "test_a.py").write_text("def test_a():\n    assert True\n", encoding="utf-8")
    checks = [CheckSettings(name="pytest"), CheckSettings(name="mypy"), CheckSettings(name="ruff")]
    run = await run_checks(workspace, "", SANDBOX, checks, python=bare_env)
    pytest_result, mypy_result, ruff_result = run.tools
    for result, tool in ((pytest_result, "coverage"), (mypy_result, "mypy")):
        assert result.status is ToolStatus.CRASHED
        assert f"{tool} is not installed in the project environment" in result.detail
        assert "add it to the requirements" in result.detail
    assert ruff_result.status is ToolStatus.PASSED  # the orchestrator's ruff stands in


async def test_mypy_runs_where_it_is_installed(workspace: Path) -> None:
    """With the orchestrator's interpreter (which has mypy) a type error fails the check."""
    (workspace / "typed.py").write_text('x: int = "one"\n', encoding="utf-8")
    (workspace / "write_junit.py").unlink()
    run = await run_checks(workspace, "", SANDBOX, [CheckSettings(name="mypy", args=("typed.py",))])
    (result,) = run.tools
    assert result.status is ToolStatus.FAILED
    assert "Incompatible types" in result.detail


async def test_command_checks_find_the_project_env_first_on_path(
    workspace: Path, bare_env: ProjectEnvironment
) -> None:
    """``python`` in a command is the project's interpreter, and VIRTUAL_ENV names it."""
    code = "import os, sys; assert sys.prefix == os.environ['VIRTUAL_ENV'], sys.prefix"
    run = await run_checks(
        workspace,
        "",
        SANDBOX,
        [CheckSettings(name="which", run=["python", "-c", code])],
        python=bare_env,
    )
    assert run.tools[0].status is ToolStatus.PASSED, run.tools[0].detail


async def test_an_environment_that_cannot_be_found_raises(workspace: Path) -> None:
    """No check can run without the environment: the error names the setting to fix."""
    setup = ValidationSetup(environment=EnvironmentSettings(python="/no/such/python"))
    with pytest.raises(SandboxError, match=r"environment\.python"):
        await run_validation_tools(workspace, "", SANDBOX, setup)


@pytest.mark.parametrize(
    ("checks", "says"),
    [
        (["pytset"], "unknown check 'pytset': the built-ins are compile, ruff, pytest"),
        ([{"name": "pytest", "timeout_s": 0}], "checks.0.timeout_s"),
        ([{"name": "pytest", "timeout_s": "fast"}], "checks.0.timeout_s"),
        (["ruff", "ruff"], "check 'ruff' is listed twice"),
        ([], "checks is empty"),
        ([{"name": "pytest", "run": "make test"}], "is a built-in; give the command check"),
        ([{"name": "unit", "run": "make", "read": "junit"}], "needs junit: FILE"),
        ([{"name": "unit", "run": "make", "read": "tap"}], "checks.0.read"),
        ([{"name": "lint", "run": "  "}], "run is empty"),
        ([{"name": "ruff", "junit": "x.xml"}], "apply to run: checks"),
    ],
)
def test_bad_checks_are_refused_clearly(checks: list[object], says: str) -> None:
    """Each mistake in checks: is one ConfigError naming the field and what to do."""
    with pytest.raises(ConfigError, match="fix it") as err:
        parse_config({"checks": checks}, "wf.yaml")
    assert says in str(err.value)
    assert str(err.value).startswith("wf.yaml: ")


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({"python": "/x", "requirements": "r.txt"}, "one of python, requirements or pyproject"),
        ({"requirements": "r.txt", "offline": True}, "offline: true needs find_links"),
        ({"requirements": "r.txt", "extras": ["dev"]}, "extras apply to pyproject"),
        ({"requirements": "r.txt", "build_timeout_s": -5}, "environment.build_timeout_s"),
        ({"venv": "x"}, "environment.venv"),
    ],
)
def test_bad_environments_are_refused_clearly(environment: dict[str, object], says: str) -> None:
    """Each mistake in environment: is one ConfigError naming the field."""
    with pytest.raises(ConfigError) as err:
        parse_config({"environment": environment})
    assert says in str(err.value)


def test_config_paths_are_read_beside_the_config_file(tmp_path: Path) -> None:
    """find_links, cache_dir and a python path are resolved from the file's directory."""
    config_file = tmp_path / "conf" / "wf.yaml"
    config_file.parent.mkdir()
    config_file.write_text(
        textwrap.dedent(
            """\
            environment:
              requirements: requirements.txt
              find_links: ../wheels
              cache_dir: envs
            checks: [compile, {name: unit, run: make test, timeout_s: 30}]
            """
        ),
        encoding="utf-8",
    )
    config = load_config(config_file)
    assert config.environment.find_links == str(tmp_path / "conf" / ".." / "wheels")
    assert config.environment.cache_dir == str(tmp_path / "conf" / "envs")
    assert config.environment.requirements == "requirements.txt"  # read from the workspace
    assert [c.name for c in config.checks] == ["compile", "unit"]
    bare = parse_config({"environment": {"python": "python3.11"}})
    assert bare.environment.python == "python3.11"  # a bare name is looked up on PATH
