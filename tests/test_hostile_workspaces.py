"""Workspaces that try to fool validation: every one must get a failing verdict, with a reason.

Each workspace holds code that is genuinely wrong (a syntax error, an undefined name, a failing
test) plus a trick that made the old tools report success. The tools run for real in the
sandbox; nothing is mocked.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.execution.tools import run_compile, run_pytest, run_ruff
from state.reports import ToolStatus

PYTHON = sys.executable
SANDBOX = Sandbox(SandboxLimits(wall_timeout_s=60, cpu_s=60, memory_mb=1024))

CODE = (
    "def double(x: int) -> int:\n    return x * 2\n\n\n"
    "def triple(x: int) -> int:\n    return x * 3\n"  # never tested: coverage is below 100 %
)
FAILING_TEST = (
    "from src.calc import double\n\n\ndef test_double() -> None:\n    assert double(2) == 5\n"
)
FORGED_JUNIT = (
    '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="1" failures="0" '
    'errors="0" skipped="0"><testcase classname="tests.test_calc" name="test_double"/>'
    "</testsuite></testsuites>"
)
STALE_JUNIT = FORGED_JUNIT.replace("<testsuite ", '<testsuite timestamp="2020-01-01T00:00:00" ')
FORGED_COVERAGE = '{"totals": {"percent_covered": 100.0}, "files": {}}'
# Paths a hostile suite might guess the orchestrator reads its reports from.
GUESSES = (
    "junit.xml",
    "report.xml",
    "coverage.json",
    ".hybrid-coverage.json",
    "../junit.xml",
    "../coverage.json",
    "/tmp/junit.xml",
    "/tmp/coverage.json",
    "/dev/shm/junit.xml",
)
WRITE_FORGERIES = f"""
import os
for _name in {GUESSES!r}:
    for _base in (".", os.environ.get("TMPDIR", "."), os.environ.get("HOME", ".")):
        try:
            with open(os.path.join(_base, _name), "w") as _f:
                _f.write({FORGED_COVERAGE!r} if _name.endswith(".json") else {FORGED_JUNIT!r})
        except OSError:
            pass
"""


def workspace(root: Path, extra: dict[str, str]) -> Path:
    """A workspace with wrong code and a failing test, plus the hostile ``extra`` files."""
    files = {
        "src/__init__.py": "",
        "src/calc.py": CODE,
        "tests/__init__.py": "",
        "tests/test_calc.py": FAILING_TEST,
        **extra,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


async def test_a_workspace_ruff_module_does_not_replace_ruff(tmp_path: Path) -> None:
    """A ruff.py that exits 0 is not run as ruff: the undefined name still fails the lint."""
    ws = workspace(
        tmp_path,
        {"ruff.py": "import sys\nsys.exit(0)\n", "src/bad.py": "def f():\n    return nope\n"},
    )
    result = await run_ruff(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "F821 Undefined name `nope`" in result.detail


async def test_a_workspace_compileall_module_does_not_replace_compileall(tmp_path: Path) -> None:
    """A compileall.py that exits 0 is not run as the compiler: the syntax error fails."""
    ws = workspace(
        tmp_path,
        {"compileall.py": "import sys\nsys.exit(0)\n", "src/broken.py": "def f(:\n    pass\n"},
    )
    result = await run_compile(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "broken.py" in result.detail
    assert "SyntaxError" in result.detail


async def test_a_workspace_coverage_module_does_not_replace_coverage(tmp_path: Path) -> None:
    """A coverage.py that forges a full report and exits 0 is ignored: the failing test fails."""
    forger = f"""
    import sys
    for arg in sys.argv:
        if arg.endswith(".json"):
            open(arg, "w").write({FORGED_COVERAGE!r})
    open(".hybrid-coverage.json", "w").write({FORGED_COVERAGE!r})
    sys.exit(0)
    """
    ws = workspace(tmp_path, {"coverage.py": forger})
    result, coverage = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "1 test ran: 0 passed, 1 failed (tests.test_calc::test_double)" in result.detail
    assert coverage is not None
    assert coverage.percent < 100.0, "the coverage measured, not the forged 100 %"


async def test_a_workspace_pytest_module_does_not_replace_pytest(tmp_path: Path) -> None:
    """A pytest.py that exits 0 is not run as pytest: the failing test is found and fails."""
    ws = workspace(tmp_path, {"pytest.py": "import sys\nsys.exit(0)\n"})
    result, _ = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "test_double" in result.detail
    assert "1 failed" in result.detail


async def test_a_project_with_its_own_coverage_module_is_tested_and_measured(
    tmp_path: Path,
) -> None:
    """An ML repo's own coverage.py (data coverage) imports as itself; the real tool measures."""
    ws = workspace(
        tmp_path,
        {
            "src/calc.py": "def double(x: int) -> int:\n    return x * 2\n",
            "coverage.py": "def share_labelled(rows: list[int]) -> float:\n"
            "    return sum(1 for r in rows if r) / len(rows)\n",
            "tests/test_calc.py": "from coverage import share_labelled\n"
            "from src.calc import double\n\n\n"
            "def test_share() -> None:\n    assert share_labelled([1, 0]) == 0.5\n\n\n"
            "def test_double() -> None:\n    assert double(2) == 4\n",
        },
    )
    result, coverage = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.PASSED, result.detail
    assert "2 tests ran: 2 passed" in result.detail
    assert coverage is not None and coverage.percent == 100.0


async def test_forged_reports_in_the_workspace_and_guessable_paths_are_not_read(
    tmp_path: Path,
) -> None:
    """Reports pre-placed in the workspace, or written where the code guesses, are never read."""
    conftest = WRITE_FORGERIES + "\nos._exit(0)\n"
    ws = workspace(
        tmp_path,
        {
            "junit.xml": FORGED_JUNIT,
            ".hybrid-coverage.json": FORGED_COVERAGE,
            "coverage.json": FORGED_COVERAGE,
            "tests/conftest.py": conftest,
        },
    )
    result, coverage = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "wrote no junit report" in result.detail
    assert "cannot be trusted to have run" in result.detail
    assert coverage is None


async def test_a_stale_report_written_through_the_descriptor_is_refused(
    tmp_path: Path,
) -> None:
    """A consistent, passing junit report replayed into the real descriptor is refused."""
    replay = f"""
    import os, sys
    for arg in sys.argv:
        if arg.startswith("/proc/self/fd/"):
            with open(arg, "w") as f:
                f.write({STALE_JUNIT!r})
            break
    os._exit(0)
    """
    ws = workspace(tmp_path, {"conftest.py": replay})
    result, _ = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "its junit report does not date from this run" in result.detail


async def test_exiting_at_collection_is_a_failure(tmp_path: Path) -> None:
    """A conftest.py that calls os._exit(0) while pytest collects fails: no test ran."""
    ws = workspace(tmp_path, {"conftest.py": "import os\nos._exit(0)\n"})
    result, _ = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert result.detail.startswith("pytest exited with status 0 but the test run wrote no")


async def test_a_conftest_that_redirects_the_report_and_forces_exit_0_fails(
    tmp_path: Path,
) -> None:
    """A conftest.py that points junit elsewhere and rewrites the exit status still fails."""
    conftest = """
    def pytest_configure(config):
        config.option.xmlpath = "junit.xml"

    def pytest_sessionfinish(session, exitstatus):
        session.exitstatus = 0
    """
    ws = workspace(tmp_path, {"conftest.py": conftest})
    result, _ = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "wrote no junit report" in result.detail


async def test_sys_exit_0_from_a_fixture_is_a_failure(tmp_path: Path) -> None:
    """A session fixture that calls sys.exit(0) does not turn the run into a pass."""
    conftest = """
    import sys
    import pytest

    @pytest.fixture(autouse=True, scope="session")
    def leave():
        sys.exit(0)
    """
    ws = workspace(tmp_path, {"tests/conftest.py": conftest})
    result, _ = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "1 test ran: 0 passed, 1 errored (tests.test_calc::test_double)" in result.detail
    assert "SystemExit" in result.detail


async def test_a_test_that_kills_its_parent_does_not_end_the_run(tmp_path: Path) -> None:
    """SIGKILL to the test's parent process cannot stop the run; the failing test fails."""
    killer = (
        "import os, signal\n\n\ndef test_kill() -> None:\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"
    )
    ws = workspace(tmp_path, {"tests/test_kill.py": killer})
    result, _ = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert "test_double" in result.detail


async def test_a_test_that_sleeps_forever_hits_the_wall_limit(tmp_path: Path) -> None:
    """A test that never returns is killed at the wall-clock limit and says so."""
    sleeper = "import time\n\n\ndef test_sleep() -> None:\n    time.sleep(10_000)\n"
    ws = workspace(tmp_path, {"tests/test_sleep.py": sleeper})
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=3, cpu_s=60, memory_mb=1024))
    result, coverage = await run_pytest(ws, sandbox, python=PYTHON)
    assert result.status is ToolStatus.TIMEOUT, result.detail
    assert "pytest ran out of time (killed: wall-clock limit 3 s exceeded)" in result.detail
    assert coverage is None


async def test_a_memory_hog_is_reported_as_a_memory_limit_kill(tmp_path: Path) -> None:
    """A test that allocates without bound fails as a memory-limit kill, not a plain failure."""
    hog = (
        "def test_hog() -> None:\n    chunks = []\n    while True:\n"
        "        chunks.append(bytearray(64 * 1024 * 1024))\n"
    )
    ws = workspace(tmp_path, {"tests/test_hog.py": hog})
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=60, cpu_s=60, memory_mb=512))
    result, _ = await run_pytest(ws, sandbox, python=PYTHON)
    assert result.status is ToolStatus.FAILED, result.detail
    assert result.detail.startswith("killed: memory limit 512 MB exceeded"), result.detail


@pytest.mark.parametrize("plugin", ["asyncio", "hypothesis"])
async def test_the_orchestrators_pytest_plugins_stay_out_of_the_users_run(
    tmp_path: Path, plugin: str
) -> None:
    """pytest-asyncio and hypothesis, installed beside pytest, are not loaded for the user."""
    probe = (
        "def test_plugins(pytestconfig) -> None:\n"
        f"    names = {{n for n, _ in pytestconfig.pluginmanager.list_name_plugin()}}\n"
        f"    assert not any({plugin!r} in str(n) for n in names), names\n"
    )
    ws = workspace(tmp_path, {"tests/test_calc.py": probe})
    result, _ = await run_pytest(ws, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.PASSED, result.detail
    assert "PytestDeprecationWarning" not in result.detail
