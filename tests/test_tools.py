"""The deterministic validation tools, run for real in the sandbox over small workspaces."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.execution.checks import run_validation_tools
from orchestrator.execution.reports import ReportError, read_junit
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.execution.tools import (
    ToolRun,
    check_plan_alignment,
    named_files,
    run_compile,
    run_pytest,
    run_ruff,
)
from state.reports import ToolResult, ToolStatus

PLAN = """\
# Plan: tabular preprocessing

## Files
- `src/prep.py`: the `clean()` step
- tests/test_prep.py - unit tests

Run `python -m pytest tests/test_prep.py`; see https://example.com/guide.py for style.
"""

PREP = """\
def clean(rows: list[dict[str, float | None]]) -> list[dict[str, float]]:
    \"\"\"Drop missing values.\"\"\"
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def scale(values: list[float]) -> list[float]:
    \"\"\"Scale to [0, 1].\"\"\"
    low, high = min(values), max(values)
    if high == low:
        return [0.0 for _ in values]
    return [(v - low) / (high - low) for v in values]
"""

TESTS = """\
from src.prep import clean, scale


def test_clean() -> None:
    assert clean([{"a": 1.0, "b": None}]) == [{"a": 1.0}]


def test_scale() -> None:
    assert scale([1.0, 3.0]) == [0.0, 1.0]
    assert scale([2.0, 2.0]) == [0.0, 0.0]
"""

PYTHON = sys.executable
SYSTEM_PYTHON = "/usr/bin/python3"  # a Python without the dev tools, on most systems
SANDBOX = Sandbox(SandboxLimits(wall_timeout_s=60, cpu_s=60, memory_mb=1024))


def write(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """A workspace whose code compiles, lints clean, and is fully tested."""
    return write(
        tmp_path / "ws",
        {
            "src/__init__.py": "",
            "src/prep.py": PREP,
            "tests/__init__.py": "",
            "tests/test_prep.py": TESTS,
        },
    )


def by_name(run: ToolRun) -> dict[str, ToolResult]:
    """The results of a run keyed by tool name."""
    return {tool.name: tool for tool in run.tools}


async def test_good_workspace_passes_every_tool(good: Path) -> None:
    """Clean, tested code passes all four tools and reports its line coverage."""
    run = await run_validation_tools(good, PLAN, SANDBOX)
    assert [tool.name for tool in run.tools] == ["compile", "ruff", "pytest", "plan_alignment"]
    assert {tool.name: tool.status for tool in run.tools} == dict.fromkeys(
        ["compile", "ruff", "pytest", "plan_alignment"], ToolStatus.PASSED
    ), run.tools
    assert run.line_coverage == 100.0
    assert "line coverage 100.0%" in by_name(run)["pytest"].detail
    assert not (good / ".coverage").exists(), "the tools never write into the workspace"
    assert run.line_hits is not None, "the lines each file ran, for the gates' changed lines"
    prep = run.line_hits["src/prep.py"]
    assert prep.executed and not prep.missing


async def test_syntax_error_fails_compile(good: Path) -> None:
    """A SyntaxError fails compile and names the file; pytest cannot collect the tests."""
    write(
        good,
        {"src/broken.py": "def f(:\n    pass\n", "tests/test_broken.py": "import src.broken\n"},
    )
    tools = by_name(await run_validation_tools(good, PLAN, SANDBOX))
    assert tools["compile"].status is ToolStatus.FAILED
    assert tools["compile"].exit_code == 1
    assert "broken.py" in tools["compile"].detail
    assert tools["ruff"].status is ToolStatus.FAILED
    # A collection error is a verdict on the code, not a crashed tool (not an anomaly).
    assert tools["pytest"].status is ToolStatus.FAILED
    assert tools["pytest"].exit_code == 2
    assert "could not be collected" in tools["pytest"].detail


async def test_lint_violation_fails_ruff_but_not_compile(good: Path) -> None:
    """An unused import fails ruff (exit 1) with the rule in the detail; it still compiles."""
    write(good, {"src/extra.py": "import os\n"})
    linted = await run_ruff(good, SANDBOX, python=PYTHON)
    compiled = await run_compile(good, SANDBOX, python=PYTHON)
    assert linted.status is ToolStatus.FAILED
    assert linted.exit_code == 1
    assert "src/extra.py:1:8: F401" in linted.detail
    assert compiled.status is ToolStatus.PASSED


async def test_workspace_ruff_config_is_respected(good: Path) -> None:
    """A workspace that configures ruff itself is linted with its own rules."""
    write(good, {"src/extra.py": "import os\n", "ruff.toml": "[lint]\nselect = ['E9']\n"})
    result = await run_ruff(good, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.PASSED, result.detail


async def test_ruff_crash_is_recorded_as_crashed(good: Path) -> None:
    """A ruff configuration ruff cannot read makes it exit 2: crashed, not failed."""
    write(good, {"ruff.toml": "this is = not [valid toml\n"})
    result = await run_ruff(good, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.CRASHED
    assert result.exit_code == 2


async def test_failing_test_fails_pytest_and_still_measures_coverage(good: Path) -> None:
    """A failing test fails pytest (exit 1) and the coverage is still reported."""
    write(
        good,
        {
            "tests/test_more.py": """\
        from src.prep import scale


        def test_wrong() -> None:
            assert scale([0.0, 2.0]) == [0.0, 2.0]
        """
        },
    )
    result, coverage = await run_pytest(good, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED
    assert result.exit_code == 1
    assert "test_wrong" in result.detail
    assert coverage is not None and coverage.percent == 100.0


async def test_no_tests_fails_pytest_with_a_clear_detail(tmp_path: Path) -> None:
    """A workspace without tests fails pytest with detail "no tests" (exit 5)."""
    workspace = write(tmp_path / "ws", {"src/prep.py": PREP})
    result, _coverage = await run_pytest(workspace, SANDBOX, python=PYTHON)
    assert result.status is ToolStatus.FAILED
    assert result.exit_code == 5
    assert result.detail.startswith("no tests")


async def test_hanging_test_is_a_timeout(good: Path) -> None:
    """A test that never ends is stopped at the wall timeout and recorded as timeout."""
    write(good, {"tests/test_hang.py": "import time\n\ndef test_hang():\n    time.sleep(60)\n"})
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=4, cpu_s=60, memory_mb=1024))
    result, coverage = await run_pytest(good, sandbox, python=PYTHON)
    assert result.status is ToolStatus.TIMEOUT
    assert coverage is None
    assert result.duration_s < 60  # stopped, not run to the end of its sleep


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="needs a system Python")
async def test_missing_tools_are_crashed_not_raised(good: Path) -> None:
    """An interpreter without ruff, pytest and coverage gives crashed results with the reason."""
    ruff = await run_ruff(good, SANDBOX, python=SYSTEM_PYTHON)
    tests, coverage = await run_pytest(good, SANDBOX, python=SYSTEM_PYTHON)
    if ruff.status is not ToolStatus.CRASHED or tests.status is not ToolStatus.CRASHED:
        pytest.skip("the system Python has the dev tools installed")
    assert "ruff is not installed" in ruff.detail
    assert "not installed" in tests.detail
    assert coverage is None


async def test_sandbox_failure_is_crashed_not_raised(tmp_path: Path) -> None:
    """A workspace the sandbox cannot copy gives crashed tools, and plan_alignment fails."""
    run = await run_validation_tools(tmp_path / "missing", PLAN, SANDBOX)
    tools = by_name(run)
    assert tools["ruff"].status is ToolStatus.CRASHED
    assert "not a directory" in tools["ruff"].detail
    assert tools["pytest"].status is ToolStatus.CRASHED
    assert tools["compile"].status is ToolStatus.FAILED  # no Python file at all
    assert tools["plan_alignment"].status is ToolStatus.FAILED
    assert run.line_coverage is None


def test_plan_alignment_lists_missing_files(good: Path) -> None:
    """Files the plan names but the workspace lacks are listed; present ones are not."""
    plan = PLAN + "\n- `src/features.py` and `config/settings.yaml`\n"
    result = check_plan_alignment(good, plan)
    assert result.status is ToolStatus.FAILED
    assert result.detail == (
        "missing files named in the plan: src/features.py, config/settings.yaml"
    )


def test_plan_alignment_passes_when_every_file_exists(good: Path) -> None:
    """Every named file present (a bare name may lie anywhere) passes, listing them."""
    result = check_plan_alignment(good, PLAN + "\nAlso update `prep.py`.\n")
    assert result.status is ToolStatus.PASSED
    assert "src/prep.py" in result.detail
    assert "prep.py" in result.detail


def test_named_files_reads_backticks_and_bullets() -> None:
    """Paths come from backticks and bullets; URLs, absolute paths, globs and prose do not."""
    plan = """\
    1. **src/load.py**: read the CSV from `data/raw.csv`
    * Create ./src/split.py, then `tests/test_split.py`.
    - Use `sklearn.preprocessing.StandardScaler` and `df.fillna(0)`, e.g. on numbers.
    - See https://docs.python.org/3/library/ast.py and `/etc/app/config.yaml`
    - Not `../outside.py`, `~/.bashrc.sh`, `tests/test_*.py` or `<module>.py`
    - `src/__init__.py` and `pyproject.toml`
    Prose mentioning other.py without a bullet is ignored.
    """
    assert named_files(textwrap.dedent(plan)) == (
        "src/load.py",
        "src/split.py",
        "tests/test_split.py",
        "src/__init__.py",
        "pyproject.toml",
    )


def test_plan_naming_no_file_passes_with_a_note(good: Path) -> None:
    """A plan that names no file passes plan_alignment and says there was nothing to check."""
    result = check_plan_alignment(good, "# Plan\nClean the data.\n")
    assert result.status is ToolStatus.PASSED
    assert result.detail == "the plan names no file to check"


def test_a_junit_report_whose_counts_disagree_with_its_cases_is_refused() -> None:
    """A report claiming more tests than it lists, or fewer failures, contradicts itself."""
    claims_more = (
        b'<testsuites><testsuite tests="5" failures="0" errors="0" skipped="0">'
        b'<testcase classname="t" name="a"/></testsuite></testsuites>'
    )
    hides_failure = (
        b'<testsuite tests="1" failures="0" errors="0" skipped="0">'
        b'<testcase classname="t" name="a"><failure message="boom"/></testcase></testsuite>'
    )
    for report in (claims_more, hides_failure):
        with pytest.raises(ReportError, match="contradicts itself"):
            read_junit(report)


def test_empty_or_foreign_reports_are_refused_and_a_good_one_is_summarised() -> None:
    """No bytes, no XML or no suite is a ReportError; a real report gives its counts."""
    for report, reason in (
        (b"", "wrote no junit report"),
        (b"{}", "not valid XML"),
        (b"<html/>", "no test suite"),
    ):
        with pytest.raises(ReportError, match=reason):
            read_junit(report)
    summary = read_junit(
        b'<testsuite tests="3" failures="1" errors="0" skipped="1" '
        b'timestamp="2026-12-01T10:00:00+00:00">'
        b'<testcase classname="t" name="a"/><testcase classname="t" name="b">'
        b'<failure message="MemoryError"/></testcase>'
        b'<testcase classname="t" name="c"><skipped/></testcase></testsuite>'
    )
    assert summary.describe() == "3 tests ran: 1 passed, 1 failed, 1 skipped (t::b)"
    assert summary.started == 1796119200.0
    assert any("MemoryError" in m for m in summary.messages)
