"""Results that workflow steps produce: plans, validation reports, code and tool runs.

Scores are kept exactly as the validator gave them. A missing score is ``None`` and an
out-of-range or NaN score is stored as is: the classifier's anomaly signals need to see them,
so nothing here clamps or defaults.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# NaN scores are kept through JSON (as the NaN constant): the classifier must see them.
_FROZEN = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class Verdict(StrEnum):
    """A report's overall verdict."""

    PASS = "PASS"  # noqa: S105 -- a verdict, not a password
    FAIL = "FAIL"


class ToolStatus(StrEnum):
    """How one deterministic tool ended."""

    PASSED = "passed"
    FAILED = "failed"  # the tool ran and found problems
    CRASHED = "crashed"  # the tool itself broke: an anomaly, not a verdict on the code
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


class PlanDraft(BaseModel):
    """A plan written by the planner (step 1 or 3)."""

    model_config = _FROZEN
    kind: Literal["plan"] = "plan"
    version: int = Field(ge=1)
    markdown: str
    path: str | None = Field(None, description="where the plan file lies in the workspace")
    commit: str | None = Field(None, description="the git commit of this round (--repo runs)")


class PlanValidationReport(BaseModel):
    """The step-2 report on a plan."""

    model_config = _FROZEN
    kind: Literal["plan_validation"] = "plan_validation"
    plan_version: int | None = None
    alignment_score: float | None = None
    standardization_score: float | None = None
    compatibility_score: float | None = None
    critical_issues: int | None = None
    minor_issues: int | None = None
    verdict: Verdict | None = None
    markdown: str = ""
    parse_problems: tuple[str, ...] = Field(
        (), description="what the parser could not read (missing or out-of-range values)"
    )


class ToolResult(BaseModel):
    """One deterministic tool run in the sandbox."""

    model_config = _FROZEN
    name: str
    status: ToolStatus
    exit_code: int | None = None
    duration_s: float = 0.0
    detail: str = ""


class CodeReview(BaseModel):
    """Level 1: the validator LLM's review of the code against the plan (template 5a)."""

    model_config = _FROZEN
    overall_score: float | None = None
    critical_issues: int | None = None
    minor_issues: int | None = None
    verdict: Verdict | None = None
    markdown: str = ""
    parse_problems: tuple[str, ...] = ()


class StandardizationReview(BaseModel):
    """The standardization report (template 5b): PASSED is required to converge."""

    model_config = _FROZEN
    status: Literal["PASSED", "FAILED"] | None = None
    critical_issues: int | None = None
    minor_issues: int | None = None
    markdown: str = ""
    parse_problems: tuple[str, ...] = ()


class LineHits(BaseModel):
    """Which lines of one file the tests ran, from coverage.py's JSON report."""

    model_config = _FROZEN
    executed: tuple[int, ...] = ()
    missing: tuple[int, ...] = ()


class CodeValidationReport(BaseModel):
    """The step-5/7 result: level-1 LLM reviews and level-2 deterministic tools."""

    model_config = _FROZEN
    kind: Literal["code_validation"] = "code_validation"
    review: CodeReview
    standardization: StandardizationReview
    tools: tuple[ToolResult, ...] = ()
    tools_skipped_reason: str | None = Field(
        None, description="why level 2 did not run (review score below its threshold)"
    )
    line_coverage: float | None = Field(None, description="percent; None when not measured")
    line_hits: dict[str, LineHits] | None = Field(
        None, description="per file (workspace-relative): lines run and missed; None: not measured"
    )


class CodeChange(BaseModel):
    """Files the programmer wrote (step 4) or refined (step 6)."""

    model_config = _FROZEN
    kind: Literal["code"] = "code"
    files: tuple[str, ...] = ()
    summary: str = ""
    refused_paths: tuple[str, ...] = Field((), description="paths outside the workspace")
    patched: tuple[str, ...] = Field((), description="files changed by a unified diff")
    commit: str | None = Field(None, description="the git commit of this round (--repo runs)")
    context_files: tuple[str, ...] = Field((), description="files the prompt showed in full")
    context_tokens: int | None = Field(None, description="estimated tokens of code shown")
    context_budget_tokens: int | None = Field(None, description="the budget for code shown")


StepResult = Annotated[
    PlanDraft | PlanValidationReport | CodeValidationReport | CodeChange,
    Field(discriminator="kind"),
]
