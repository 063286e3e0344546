"""Example states and reports, for tests, benchmarks and docs.

Each builder returns a real, validated step result with readable defaults; the defaults of
``plan_report`` and ``code_report`` meet every default convergence criterion, and
``BAD_PLAN`` / ``BAD_CODE`` miss several. Only data is built here: driving a workflow
through the machine needs the deciding layer, so that lives with its callers (the tests'
``Driver``, the routing benchmark's generator).

Example::

    from state.examples import code_report, plan_report
    from state.reports import ToolStatus

    converged = plan_report()                       # 9.5 / 8.5 / 8.5, no critical issue
    near_miss = plan_report(a=8.9)                  # alignment just under its 9.0
    failing = code_report(8.0, (ToolStatus.PASSED, ToolStatus.FAILED))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from state.config import CodeThresholds
from state.reports import (
    CodeChange,
    CodeReview,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
    StandardizationReview,
    ToolResult,
    ToolStatus,
    Verdict,
)

StandardizationStatus = Literal["PASSED", "FAILED"]

# The level-1 review score the deterministic tools wait for, by default.
TOOLS_AFTER_SCORE = CodeThresholds().review_score_for_tools
SKIPPED_REASON = f"review score below {TOOLS_AFTER_SCORE:g}"


def plan_draft(version: int = 1, markdown: str = "# plan") -> PlanDraft:
    """A plan as step 1 or 3 writes it."""
    return PlanDraft(version=version, markdown=markdown)


def code_change(files: Sequence[str] = ("prep.py",), summary: str = "") -> CodeChange:
    """Files as step 4 or 6 writes them."""
    return CodeChange(files=tuple(files), summary=summary)


def plan_report(
    a: float | None = 9.5,
    s: float | None = 8.5,
    c: float | None = 8.5,
    critical: int | None = 0,
    minor: int | None = 1,
    verdict: Verdict | None = None,
    markdown: str = "",
) -> PlanValidationReport:
    """A step-2 report (the defaults converge).

    Args:
        a: alignment score; ``s`` standardization, ``c`` compatibility (None: missing).
        critical: critical issues (None: missing).
        minor: minor issues.
        verdict: the validator's overall verdict (None: not given).
        markdown: the report's text.
    """
    return PlanValidationReport(
        alignment_score=a,
        standardization_score=s,
        compatibility_score=c,
        critical_issues=critical,
        minor_issues=minor,
        verdict=verdict,
        markdown=markdown,
    )


def tools_would_run(score: float | None, threshold: float = TOOLS_AFTER_SCORE) -> bool:
    """Whether the validator runs level 2 after a review scored ``score``.

    It does for a valid 0-10 score at or above ``threshold`` (NaN fails every comparison).
    """
    return score is not None and 0 <= score <= 10 and score >= threshold


def code_report(
    score: float | None = 9.0,
    tools: Iterable[ToolStatus] = (ToolStatus.PASSED, ToolStatus.PASSED),
    critical: int | None = 0,
    minor: int | None = 0,
    status: StandardizationStatus | None = "PASSED",
    coverage: float | None = 92.0,
    markdown: str = "",
    *,
    verdict: Verdict | None = None,
    std_critical: int | None = 0,
    std_minor: int | None = 0,
    tool_names: Sequence[str] | None = None,
    tools_ran: bool | None = None,
    skipped_reason: str = SKIPPED_REASON,
) -> CodeValidationReport:
    """A step-5/7 report (the defaults converge); a review score below 7 skips the tools.

    Args:
        score: the level-1 review's overall score (None: missing).
        tools: the status of each deterministic tool, in order.
        critical: the review's critical issues; ``minor`` its minor issues.
        status: the standardization report's status (None: missing).
        coverage: line coverage in percent (None: not measured).
        markdown: the review's text.
        verdict: the review's overall verdict (None: not given).
        std_critical: the standardization report's critical issues; ``std_minor`` its
            minor ones.
        tool_names: one name per tool, as many as ``tools`` (default ``tool0``,
            ``tool1``, ...).
        tools_ran: whether level 2 ran; None applies the validator's rule
            (``tools_would_run``). When it did not run, the report has no tools and no
            coverage, and says why in ``skipped_reason``.
    """
    ran = tools_would_run(score) if tools_ran is None else tools_ran
    statuses = tuple(tools)
    names = (
        tuple(tool_names)
        if tool_names is not None
        else tuple(f"tool{i}" for i in range(len(statuses)))
    )
    return CodeValidationReport(
        review=CodeReview(
            overall_score=score,
            critical_issues=critical,
            minor_issues=minor,
            verdict=verdict,
            markdown=markdown,
        ),
        standardization=StandardizationReview(
            status=status, critical_issues=std_critical, minor_issues=std_minor
        ),
        tools=tuple(ToolResult(name=n, status=t) for n, t in zip(names, statuses, strict=True))
        if ran
        else (),
        tools_skipped_reason=None if ran else skipped_reason,
        line_coverage=coverage if ran else None,
    )


# Plan scores under their thresholds and a critical issue: revise.
BAD_PLAN = plan_report(7.0, 7.0, 7.0, critical=1)
# A failing tool and three minor issues: refine.
BAD_CODE = code_report(8.0, (ToolStatus.PASSED, ToolStatus.FAILED), minor=3)
