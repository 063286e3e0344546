"""The shared example reports: their defaults and bad cases mean what their names say."""

from __future__ import annotations

import math

import pytest

from orchestrator.deciding.facts import code_shortfalls, plan_shortfalls
from state.config import CodeThresholds, PlanThresholds
from state.examples import (
    BAD_CODE,
    BAD_PLAN,
    SKIPPED_REASON,
    code_report,
    plan_report,
    tools_would_run,
)
from state.reports import ToolStatus


def test_default_reports_converge() -> None:
    """plan_report() and code_report() meet every default convergence criterion."""
    assert plan_shortfalls(plan_report(), PlanThresholds()) == ()
    assert code_shortfalls(code_report(), CodeThresholds()) == ()


def test_bad_reports_miss_several_criteria() -> None:
    """BAD_PLAN misses every plan criterion; BAD_CODE a tool and the minor-issue limit."""
    assert plan_shortfalls(BAD_PLAN, PlanThresholds()) == (
        "alignment_score",
        "standardization_score",
        "compatibility_score",
        "critical_issues",
    )
    assert set(code_shortfalls(BAD_CODE, CodeThresholds())) == {"tool_pass_rate", "minor_issues"}


@pytest.mark.parametrize("score", [6.9, None, math.nan, 10.5, -1.0])
def test_tools_are_skipped_without_a_valid_review_score_of_7(score: float | None) -> None:
    """Below 7, missing, NaN or off the 0-10 scale, level 2 is skipped and says why."""
    report = code_report(score)
    assert not tools_would_run(score)
    assert report.tools == ()
    assert report.line_coverage is None
    assert report.tools_skipped_reason == SKIPPED_REASON


def test_tools_ran_overrides_the_rule_and_names_the_tools() -> None:
    """tools_ran=True runs the named tools even for an out-of-range score."""
    report = code_report(
        10.5, (ToolStatus.PASSED, ToolStatus.CRASHED), tool_names=("ruff", "pytest"), tools_ran=True
    )
    assert [(t.name, t.status) for t in report.tools] == [
        ("ruff", ToolStatus.PASSED),
        ("pytest", ToolStatus.CRASHED),
    ]
    assert report.tools_skipped_reason is None
    assert report.line_coverage == 92.0


def test_tool_names_must_match_the_tools() -> None:
    """A name list shorter than the tools is refused rather than silently dropping a tool."""
    with pytest.raises(ValueError, match="zip"):
        code_report(9.0, (ToolStatus.PASSED, ToolStatus.FAILED), tool_names=("ruff",))
