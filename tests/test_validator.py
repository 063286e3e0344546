"""The validator: plan reports (step 2) and code validation (steps 5/7)."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents.base import StepAgents, StepContext
from agents.validator import ValidatorAgent, sandbox_for
from orchestrator.llm.protocol import LLMRequest, LLMResponse
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.agent_context import build_step_context
from prompt_templates.loader import TemplateLoader
from state.config import CodeThresholds, parse_config
from state.decision import ActionKind, Decision
from state.errors import AgentError, LLMOutputError, LLMUnavailableError
from state.reports import (
    CodeValidationReport,
    LineHits,
    PlanValidationReport,
    ToolResult,
    ToolStatus,
    Verdict,
)
from state.sandbox_settings import SandboxSettings
from state.steps import Step
from state.workflow import StepRecord, StepStatus, WorkflowState

PLAN = "# Implementation Plan: tabular preprocessing\n\n## 6. Files to create\n- prep.py"

GOOD_PLAN_JSON = {
    "alignment_score": 9.5,
    "standardization_score": 8.5,
    "compatibility_score": 9,
    "critical_issues": 0,
    "minor_issues": 1,
    "verdict": "PASS",
    "report": "## Summary\nSolid plan.",
}

LABELLED_PLAN_REPORT = """## Summary
The plan fits the requirement but fits the scaler on all rows.

## Critical findings
1. Section 3: the scaler is fitted before the train/test split.

**Alignment Rules Score:** 8.5/10
- Standardization Score: 8/10
Compatibility Score: 9
Critical Issues: 1
Minor Issues: 2
Overall: **FAIL**
"""


@pytest.fixture(scope="module")
def templates() -> TemplateLoader:
    return TemplateLoader()


def make_ctx(workspace: Path, step: Step = Step.PLAN_VALIDATION, **overrides: Any) -> StepContext:
    values: dict[str, Any] = {
        "workflow_id": "wf-v",
        "step": step,
        "workspace": workspace,
        "requirements": "create a data preprocessing step for tabular data",
        "plan_markdown": PLAN,
        "plan_version": 2,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return StepContext(**values)


def agents_with(validator: ValidatorAgent) -> StepAgents:
    return StepAgents(planner=validator, validator=validator, programmer=validator)


async def validate_plan(
    model: ScriptedChatModel, templates: TemplateLoader, workspace: Path
) -> PlanValidationReport:
    report = await ValidatorAgent(model, templates).run(make_ctx(workspace))
    assert isinstance(report, PlanValidationReport)
    return report


# --- step 2 --------------------------------------------------------------------------------


async def test_plan_report_is_read_from_structured_output(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A JSON answer becomes a report with every score, the counts, the verdict and the text."""
    model = ScriptedChatModel([GOOD_PLAN_JSON])
    report = await validate_plan(model, templates, tmp_path)
    assert report == PlanValidationReport(
        plan_version=2,
        alignment_score=9.5,
        standardization_score=8.5,
        compatibility_score=9.0,
        critical_issues=0,
        minor_issues=1,
        verdict=Verdict.PASS,
        markdown="## Summary\nSolid plan.",
    )
    request = model.calls[0]
    assert request.json_schema is not None
    assert set(request.json_schema["required"]) == {*GOOD_PLAN_JSON}
    assert request.purpose == "step2_plan_validator"
    assert "Alignment Rules Score >= 9" in request.messages[0].content


async def test_plan_report_falls_back_to_labelled_lines(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """Plain markdown with labelled lines (bold, bullets, /10) is read when there is no JSON."""
    report = await validate_plan(ScriptedChatModel([LABELLED_PLAN_REPORT]), templates, tmp_path)
    assert (report.alignment_score, report.standardization_score, report.compatibility_score) == (
        8.5,
        8.0,
        9.0,
    )
    assert (report.critical_issues, report.minor_issues, report.verdict) == (1, 2, Verdict.FAIL)
    assert report.markdown == LABELLED_PLAN_REPORT.strip()
    assert report.parse_problems == ()


async def test_rejected_structured_answer_is_re_asked_as_text(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """When the adapter finds no JSON, the validator re-asks without a schema and reads lines."""
    model = ScriptedChatModel(
        [LLMOutputError("no JSON object in the answer"), LABELLED_PLAN_REPORT]
    )
    report = await validate_plan(model, templates, tmp_path)
    assert report.alignment_score == 8.5
    assert [c.json_schema is None for c in model.calls] == [False, True]


async def test_json_given_as_plain_text_is_still_read(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A text-mode answer that is the JSON object (even fenced) is read as structured output."""
    text = f"```json\n{json.dumps(GOOD_PLAN_JSON)}\n```"
    model = ScriptedChatModel([LLMOutputError("no JSON object in the answer"), text])
    report = await validate_plan(model, templates, tmp_path)
    assert (report.alignment_score, report.verdict) == (9.5, Verdict.PASS)
    assert report.markdown == "## Summary\nSolid plan."


async def test_labelled_lines_in_a_markdown_table_are_read(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """Scores given as table rows ("| Compatibility Score | 7.5/10 |") are read too."""
    row = "| Compatibility Score | 7.5/10 |"
    text = LABELLED_PLAN_REPORT.replace("Compatibility Score: 9", row)
    report = await validate_plan(ScriptedChatModel([text]), templates, tmp_path)
    assert report.compatibility_score == 7.5
    assert report.parse_problems == ()


async def test_out_of_range_score_is_kept_and_noted(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A 12/10 score is stored as 12, never clamped, with a parse problem saying so."""
    text = LABELLED_PLAN_REPORT.replace("8.5/10", "12/10")
    report = await validate_plan(ScriptedChatModel([text]), templates, tmp_path)
    assert report.alignment_score == 12.0
    assert report.parse_problems == ("alignment_score: 12 is outside 0-10, kept as given",)


async def test_missing_labelled_score_is_none_and_noted(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A score line that is absent gives None and a note, never a default."""
    text = LABELLED_PLAN_REPORT.replace("Compatibility Score: 9\n", "")
    report = await validate_plan(ScriptedChatModel([text]), templates, tmp_path)
    assert report.compatibility_score is None
    assert report.alignment_score == 8.5
    assert report.parse_problems == (
        "compatibility_score: missing (no 'Compatibility Score:' line)",
    )


async def test_json_missing_and_bad_values_are_none_and_noted(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """In JSON, a missing field, a wrong type and a NaN are each kept visible with a note."""
    data = {
        **GOOD_PLAN_JSON,
        "alignment_score": "high",
        "minor_issues": None,
        "compatibility_score": float("nan"),
    }
    del data["standardization_score"]
    report = await validate_plan(ScriptedChatModel([data]), templates, tmp_path)
    assert report.alignment_score is None
    assert report.standardization_score is None
    assert report.minor_issues is None
    assert report.compatibility_score is not None
    assert math.isnan(report.compatibility_score)
    assert report.critical_issues == 0
    assert report.parse_problems == (
        "alignment_score: unreadable value 'high'",
        "standardization_score: missing",
        "compatibility_score: nan is outside 0-10, kept as given",
        "minor_issues: missing",
    )


async def test_contradictory_report_passes_through_unchanged(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """PASS with critical issues and a failing score is kept as given: the classifier flags it."""
    data = {**GOOD_PLAN_JSON, "alignment_score": 3.0, "critical_issues": 4, "verdict": "PASS"}
    report = await validate_plan(ScriptedChatModel([data]), templates, tmp_path)
    assert (report.alignment_score, report.critical_issues, report.verdict) == (
        3.0,
        4,
        Verdict.PASS,
    )
    assert report.parse_problems == ()


async def test_repeated_label_with_different_values_is_noted(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A label given twice with different values keeps the last and says so."""
    text = "Overall: PASS\n\n" + LABELLED_PLAN_REPORT
    report = await validate_plan(ScriptedChatModel([text]), templates, tmp_path)
    assert report.verdict is Verdict.FAIL
    assert report.parse_problems == (
        "verdict: given 2 times with different values (PASS, FAIL); the last is used",
    )


async def test_json_without_readable_fields_falls_back_to_its_report_text(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A JSON object with only a report string is read through the report's labelled lines."""
    model = ScriptedChatModel([{"report": LABELLED_PLAN_REPORT}])
    report = await validate_plan(model, templates, tmp_path)
    assert report.alignment_score == 8.5
    assert report.parse_problems[0].startswith("the structured answer had no readable field")


@pytest.mark.parametrize("garbage", ["I think the plan is quite good overall.", {"ok": True}])
async def test_nothing_readable_is_invalid_output(
    tmp_path: Path, templates: TemplateLoader, garbage: Any
) -> None:
    """An answer with not one readable value fails the step as invalid_output."""
    agents = agents_with(ValidatorAgent(ScriptedChatModel([garbage]), templates))
    with pytest.raises(AgentError, match="could not be read") as info:
        await agents.run(make_ctx(tmp_path))
    assert info.value.error_type == "invalid_output"


# --- steps 5 and 7 -------------------------------------------------------------------------

REVIEW = {
    "overall_score": 8.0,
    "critical_issues": 0,
    "minor_issues": 1,
    "verdict": "PASS",
    "report": "## Summary\nImplements the plan.",
}
STANDARDS = {
    "status": "PASSED",
    "critical_issues": 0,
    "minor_issues": 1,
    "report": "## Summary\nFollows the standards.",
}


@dataclass(frozen=True)
class FakeToolRun:
    tools: tuple[ToolResult, ...]
    line_coverage: float | None
    line_hits: dict[str, LineHits] | None = None


@dataclass
class FakeRunner:
    """Stands in for run_validation_tools and records its calls."""

    run: FakeToolRun = FakeToolRun(
        (
            ToolResult(name="pytest", status=ToolStatus.PASSED, exit_code=0),
            ToolResult(name="ruff", status=ToolStatus.FAILED, exit_code=1, detail="E501"),
        ),
        91.5,
    )
    calls: list[tuple[Path, str, Any]] = field(default_factory=list)

    async def __call__(
        self, workspace: Path, plan_markdown: str, sandbox: Any, setup: Any
    ) -> FakeToolRun:
        self.calls.append((workspace, plan_markdown, sandbox))
        return self.run


def by_purpose(replies: dict[str, Any]) -> ScriptedChatModel:
    return ScriptedChatModel(responder=lambda req: replies[req.purpose])


def code_workspace(root: Path) -> Path:
    (root / "prep.py").write_text("def fit(frame):\n    return frame\n", encoding="utf-8")
    return root


async def validate_code(
    model: Any, templates: TemplateLoader, workspace: Path, runner: FakeRunner, **ctx: Any
) -> CodeValidationReport:
    validator = ValidatorAgent(model, templates, tool_runner=runner, sandbox="the-sandbox")
    report = await validator.run(make_ctx(workspace, Step.CODE_VALIDATION, **ctx))
    assert isinstance(report, CodeValidationReport)
    return report


@dataclass
class RendezvousModel:
    """Answers only once two requests are in flight together: sequential calls time out."""

    replies: dict[str, Any]
    arrived: list[str] = field(default_factory=list)
    both: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def model_name(self) -> str:
        return "rendezvous"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.arrived.append(request.purpose)
        if len(self.arrived) == 2:
            self.both.set()
        async with asyncio.timeout(2.0):
            await self.both.wait()
        reply = self.replies[request.purpose]
        return LLMResponse(text=json.dumps(reply), data=reply, model="rendezvous")


async def test_reviews_5a_and_5b_run_concurrently(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """Both level-1 reviews are in flight at once (each waits for the other to arrive)."""
    model = RendezvousModel(
        {"step5a_alignment_validator": REVIEW, "step5b_standardization_validator": STANDARDS}
    )
    report = await validate_code(model, templates, code_workspace(tmp_path), FakeRunner())
    assert sorted(model.arrived) == [
        "step5a_alignment_validator",
        "step5b_standardization_validator",
    ]
    assert report.review.overall_score == 8.0
    assert report.standardization.status == "PASSED"


async def test_tools_run_when_the_review_score_reaches_the_threshold(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """At score 7 the tools run on the workspace with the plan, and their results are kept."""
    runner = FakeRunner()
    model = by_purpose(
        {
            "step5a_alignment_validator": {**REVIEW, "overall_score": 7},
            "step5b_standardization_validator": STANDARDS,
        }
    )
    report = await validate_code(model, templates, code_workspace(tmp_path), runner)
    assert runner.calls == [(tmp_path, PLAN, "the-sandbox")]
    assert report.tools == runner.run.tools
    assert report.line_coverage == 91.5
    assert report.tools_skipped_reason is None


@pytest.mark.parametrize(
    ("score", "reason"),
    [
        (6.5, "the level-1 review score 6.5 is below 7"),
        (12, "the level-1 review score 12 is not a valid 0-10 score"),
        (None, "the level-1 review gave no readable overall score"),
    ],
)
async def test_tools_are_skipped_without_a_valid_passing_score(
    tmp_path: Path, templates: TemplateLoader, score: float | None, reason: str
) -> None:
    """Below 7, out of range or missing, level 2 does not run and the reason is recorded."""
    runner = FakeRunner()
    model = by_purpose(
        {
            "step5a_alignment_validator": {**REVIEW, "overall_score": score},
            "step5b_standardization_validator": STANDARDS,
        }
    )
    report = await validate_code(model, templates, code_workspace(tmp_path), runner)
    assert runner.calls == []
    assert report.tools == ()
    assert report.tools_skipped_reason == reason
    assert report.review.overall_score == score


async def test_without_a_sandbox_the_workflows_sandbox_settings_reach_the_tools(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A validator built without a sandbox hands the tool runner the workflow's settings."""
    runner = FakeRunner()
    model = by_purpose(
        {"step5a_alignment_validator": REVIEW, "step5b_standardization_validator": STANDARDS}
    )
    settings = parse_config({"sandbox": {"memory_mb": 512, "wall_seconds": 30}}).sandbox
    validator = ValidatorAgent(model, templates, tool_runner=runner)
    await validator.run(make_ctx(code_workspace(tmp_path), Step.CODE_VALIDATION, sandbox=settings))
    assert runner.calls == [(tmp_path, PLAN, SandboxSettings(memory_mb=512, wall_seconds=30))]


def test_the_step_context_carries_the_workflows_sandbox_settings(tmp_path: Path) -> None:
    """The runner's step context hands the validator the workflow config's sandbox section."""
    config = parse_config({"sandbox": {"memory_mb": 768, "max_processes": 40}})
    state = WorkflowState(
        workflow_id="wf-s",
        workspace=str(tmp_path),
        history=(StepRecord(step=Step.CODE_VALIDATION, status=StepStatus.RUNNING),),
    )
    decision = Decision(action=ActionKind.INVOKE_AGENT, step=Step.CODE_VALIDATION)
    ctx = build_step_context(state, config, decision)
    assert ctx.sandbox == SandboxSettings(memory_mb=768, max_processes=40)


def test_the_default_runner_builds_its_sandbox_from_the_settings() -> None:
    """Settings become a sandbox with exactly those limits, one per distinct settings."""
    sandbox = sandbox_for(SandboxSettings(memory_mb=512, wall_seconds=30, max_processes=16))
    assert sandbox.limits.memory_mb == 512
    assert sandbox.limits.wall_timeout_s == 30
    assert sandbox.limits.max_processes == 16
    assert sandbox_for(SandboxSettings(memory_mb=512, wall_seconds=30, max_processes=16)) is sandbox


async def test_review_threshold_comes_from_the_code_thresholds(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A workflow's own review_score_for_tools gates the tools and appears in the 5a prompt."""
    model = by_purpose(
        {
            "step5a_alignment_validator": {**REVIEW, "overall_score": 8.0},
            "step5b_standardization_validator": STANDARDS,
        }
    )
    runner = FakeRunner()
    report = await validate_code(
        model,
        templates,
        code_workspace(tmp_path),
        runner,
        code_thresholds=CodeThresholds(review_score_for_tools=8.5),
    )
    assert report.tools_skipped_reason == "the level-1 review score 8 is below 8.5"
    review_request = next(c for c in model.calls if c.purpose.startswith("step5a"))
    assert "at least\n8.5;" in review_request.messages[0].content


async def test_labelled_fallback_for_both_code_reviews(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """Markdown answers to 5a and 5b are read from their labelled lines."""
    model = by_purpose(
        {
            "step5a_alignment_validator": "## Summary\nok\n\nOverall Score: 6/10\n"
            "Critical Issues: 2\nMinor Issues: none\nVerdict: FAIL\n",
            "step5b_standardization_validator": "## Summary\nprints\n\nStatus: FAILED\n"
            "Critical Issues: 1\nMinor Issues: 3\n",
        }
    )
    report = await validate_code(model, templates, code_workspace(tmp_path), FakeRunner())
    assert (
        report.review.overall_score,
        report.review.critical_issues,
        report.review.minor_issues,
        report.review.verdict,
    ) == (6.0, 2, 0, Verdict.FAIL)
    assert (
        report.standardization.status,
        report.standardization.critical_issues,
        report.standardization.minor_issues,
    ) == ("FAILED", 1, 3)


async def test_code_context_skips_plans_hidden_files_and_caches(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """The reviews see the code, not plans, hidden dirs, caches or an escaping symlink."""
    code_workspace(tmp_path)
    for rel in ("plans/plan_v1.md", ".git/config", "__pycache__/prep.cpython-311.pyc", ".env"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("SECRET-ISH", encoding="utf-8")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("OUTSIDE CONTENT", encoding="utf-8")
    (tmp_path / "leak.txt").symlink_to(outside)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_prep.py").write_text("def test_fit(): ...\n", encoding="utf-8")
    model = by_purpose(
        {
            "step5a_alignment_validator": {**REVIEW, "overall_score": 5},
            "step5b_standardization_validator": STANDARDS,
        }
    )
    await validate_code(model, templates, tmp_path, FakeRunner())
    prompt = model.calls[0].messages[-1].content
    assert "### File: prep.py" in prompt
    assert "### File: tests/test_prep.py" in prompt
    assert "SECRET-ISH" not in prompt
    assert "OUTSIDE CONTENT" not in prompt


async def test_large_files_are_truncated_with_a_note(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A file beyond the context cap is cut and the prompt says how much is missing."""
    (tmp_path / "big.py").write_text("x = 1\n" * 5_000, encoding="utf-8")
    (tmp_path / "zzz_after.py").write_text("y = 2\n", encoding="utf-8")
    model = by_purpose(
        {
            "step5a_alignment_validator": {**REVIEW, "overall_score": 5},
            "step5b_standardization_validator": STANDARDS,
        }
    )
    validator = ValidatorAgent(model, templates, tool_runner=FakeRunner(), max_context_chars=1_000)
    await validator.run(make_ctx(tmp_path, Step.CONVERGENCE_VALIDATION))
    prompt = model.calls[0].messages[-1].content
    assert "[... truncated: 29000 of 30000 characters not shown]" in prompt
    assert "Not shown, to keep the prompt short: zzz_after.py" in prompt


async def test_a_failing_review_cancels_the_other(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """When 5b's LLM is unavailable, the pending 5a call is cancelled and the step fails fast."""
    cancelled = asyncio.Event()

    @dataclass
    class HalfDownModel:
        @property
        def model_name(self) -> str:
            return "half-down"

        async def complete(self, request: LLMRequest) -> LLMResponse:
            if request.purpose.startswith("step5b"):
                raise LLMUnavailableError("connection refused")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("5a was not cancelled")

    validator = ValidatorAgent(HalfDownModel(), templates, tool_runner=FakeRunner())
    with pytest.raises(AgentError) as info:
        await agents_with(validator).run(make_ctx(code_workspace(tmp_path), Step.CODE_VALIDATION))
    assert info.value.error_type == "llm_unavailable"
    assert cancelled.is_set()


async def test_unreadable_code_review_is_invalid_output(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A 5a answer with nothing readable fails the whole step as invalid_output."""
    model = by_purpose(
        {
            "step5a_alignment_validator": "Looks fine to me!",
            "step5b_standardization_validator": STANDARDS,
        }
    )
    validator = ValidatorAgent(model, templates, tool_runner=FakeRunner())
    with pytest.raises(AgentError, match="the 5a review could not be read") as info:
        await agents_with(validator).run(make_ctx(code_workspace(tmp_path), Step.CODE_VALIDATION))
    assert info.value.error_type == "invalid_output"
