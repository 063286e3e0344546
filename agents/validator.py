"""The validator agent: step 2 (plan validation) and steps 5/7 (code validation).

How its reports are read is in ``agents.validator_reports``; how it reaches the deterministic
tools in ``agents.validator_tools``. A self-contradictory report (PASS with critical issues)
is passed through unchanged: the classifier's anomaly signals need to see it.

Code validation has two levels. Level 1 is two LLM reviews run concurrently: 5a (alignment
with the plan, with an overall score) and 5b (the team's standards, PASSED or FAILED).
Level 2, the deterministic tools in the sandbox, runs only when 5a's score is valid and at
least ``code_thresholds.review_score_for_tools``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, TypeVar

import structlog
from pydantic import ValidationError

from agents.base import (
    LLMOptions,
    StepContext,
    call_structured,
    code_context,
    render_prompt,
    require_plan,
)
from agents.validator_reports import (
    CODE_REVIEW,
    PLAN_REPORT,
    STANDARDIZATION,
    FieldKind,
    ReportField,
    ReportSpec,
    read_report,
)
from agents.validator_tools import (
    ToolRunLike,
    ToolRunner,
    default_tool_runner,
    sandbox_for,
)
from orchestrator.llm.protocol import ChatModel, LLMResponse, Message
from prompt_templates.loader import TemplateLoader
from state.config import PlanThresholds
from state.errors import AgentError
from state.reports import (
    CodeReview,
    CodeValidationReport,
    PlanValidationReport,
    StandardizationReview,
    ToolStatus,
)
from state.steps import Step

__all__ = [
    "CODE_REVIEW",
    "PLAN_REPORT",
    "STANDARDIZATION",
    "VALIDATOR_OPTIONS",
    "FieldKind",
    "ReportField",
    "ReportSpec",
    "ToolRunLike",
    "ToolRunner",
    "ValidatorAgent",
    "default_tool_runner",
    "describe_plan_thresholds",
    "read_report",
    "sandbox_for",
    "tools_skip_reason",
]

log = structlog.get_logger(__name__)

VALIDATOR_OPTIONS = LLMOptions(max_tokens=2048)


class ValidatorAgent:
    """Validates plans and code with an LLM, and code also with deterministic tools.

    Args:
        model: the chat model to ask.
        templates: where the step templates come from.
        tool_runner: runs the level-2 tools; defaults to ``run_validation_tools``.
        sandbox: handed to the tool runner (None: one built from each workflow's
            ``sandbox:`` settings, ``StepContext.sandbox``).
        options: sampling settings of each review call.
        max_context_chars: how much of the workspace's code the reviews see.
    """

    def __init__(
        self,
        model: ChatModel,
        templates: TemplateLoader,
        *,
        tool_runner: ToolRunner = default_tool_runner,
        sandbox: Any = None,
        options: LLMOptions = VALIDATOR_OPTIONS,
        max_context_chars: int = 60_000,
    ) -> None:
        self._model = model
        self._templates = templates
        self._tool_runner = tool_runner
        self._sandbox = sandbox
        self._options = options
        self._max_context_chars = max_context_chars

    async def run(self, ctx: StepContext) -> PlanValidationReport | CodeValidationReport:
        """Validate the plan (step 2) or the code (steps 5 and 7).

        Raises:
            AgentError: ``invalid_output`` when nothing in an answer can be read,
                ``missing_input`` without a plan, ``template_error`` for a bad template.
            LLMUnavailableError: the LLM could not answer.
        """
        if ctx.step is Step.PLAN_VALIDATION:
            return await self.validate_plan(ctx)
        if ctx.step in (Step.CODE_VALIDATION, Step.CONVERGENCE_VALIDATION):
            return await self.validate_code(ctx)
        raise AgentError(
            f"{ctx.label}: the validator runs steps 2, 5 and 7 only",
            error_type="internal_error",
            retryable=False,
        )

    async def validate_plan(self, ctx: StepContext) -> PlanValidationReport:
        """Step 2: score the current plan."""
        plan, version = require_plan(ctx)
        template = "step2_plan_validator"
        messages = render_prompt(
            self._templates,
            template,
            ctx,
            requirements=ctx.requirements or "(no requirement given)",
            plan=plan,
            plan_version=str(version),
            thresholds=describe_plan_thresholds(ctx.plan_thresholds),
        )
        response = await self._ask(ctx, template, messages, PLAN_REPORT)
        values, markdown, problems = read_report(
            response.data, response.text, PLAN_REPORT, where=f"{ctx.label}: the plan report"
        )
        report = _build(
            ctx,
            PlanValidationReport,
            plan_version=version,
            markdown=markdown,
            parse_problems=problems,
            **values,
        )
        log.info(
            "agent.validation.plan",
            workflow_id=ctx.workflow_id,
            plan_version=version,
            alignment=report.alignment_score,
            standardization=report.standardization_score,
            compatibility=report.compatibility_score,
            critical=report.critical_issues,
            minor=report.minor_issues,
            verdict=report.verdict,
            problems=len(problems),
        )
        return report

    async def validate_code(self, ctx: StepContext) -> CodeValidationReport:
        """Steps 5 and 7: the two concurrent LLM reviews, then the tools if the score allows."""
        plan, _ = require_plan(ctx)
        code = await asyncio.to_thread(
            code_context, ctx.workspace, max_total_chars=self._max_context_chars
        )
        review_task = asyncio.ensure_future(self._review(ctx, plan, code))
        standard_task = asyncio.ensure_future(self._standardize(ctx, plan, code))
        try:
            review, standard = await asyncio.gather(review_task, standard_task)
        except BaseException:
            # gather leaves the sibling running when one review fails: stop it
            for task in (review_task, standard_task):
                task.cancel()
            await asyncio.gather(review_task, standard_task, return_exceptions=True)
            raise
        bound = log.bind(workflow_id=ctx.workflow_id, step=int(ctx.step))
        bound.info(
            "agent.validation.level1",
            overall_score=review.overall_score,
            verdict=review.verdict,
            standardization=standard.status,
            critical=review.critical_issues,
            minor=review.minor_issues,
        )

        skipped = tools_skip_reason(review, ctx.code_thresholds.review_score_for_tools)
        if skipped is not None:
            bound.info("agent.validation.tools_skipped", reason=skipped)
            return CodeValidationReport(
                review=review, standardization=standard, tools_skipped_reason=skipped
            )
        sandbox = self._sandbox if self._sandbox is not None else ctx.sandbox
        run = await self._tool_runner(ctx.workspace, plan, sandbox, ctx.validation)
        bound.info(
            "agent.validation.tools",
            tools=len(run.tools),
            passed=sum(1 for t in run.tools if t.status is ToolStatus.PASSED),
            line_coverage=run.line_coverage,
        )
        return CodeValidationReport(
            review=review,
            standardization=standard,
            tools=tuple(run.tools),
            line_coverage=run.line_coverage,
            line_hits=run.line_hits,
        )

    async def _review(self, ctx: StepContext, plan: str, code: str) -> CodeReview:
        template = "step5a_alignment_validator"
        messages = render_prompt(
            self._templates,
            template,
            ctx,
            requirements=ctx.requirements or "(no requirement given)",
            plan=plan,
            code=code,
            review_threshold=f"{ctx.code_thresholds.review_score_for_tools:g}",
        )
        response = await self._ask(ctx, template, messages, CODE_REVIEW)
        values, markdown, problems = read_report(
            response.data, response.text, CODE_REVIEW, where=f"{ctx.label}: the 5a review"
        )
        return _build(ctx, CodeReview, markdown=markdown, parse_problems=problems, **values)

    async def _standardize(self, ctx: StepContext, plan: str, code: str) -> StandardizationReview:
        template = "step5b_standardization_validator"
        messages = render_prompt(
            self._templates,
            template,
            ctx,
            plan=plan,
            code=code,
            max_minor_issues=str(ctx.code_thresholds.max_minor_issues),
        )
        response = await self._ask(ctx, template, messages, STANDARDIZATION)
        values, markdown, problems = read_report(
            response.data, response.text, STANDARDIZATION, where=f"{ctx.label}: the 5b review"
        )
        return _build(
            ctx, StandardizationReview, markdown=markdown, parse_problems=problems, **values
        )

    async def _ask(
        self, ctx: StepContext, template: str, messages: tuple[Message, ...], spec: ReportSpec
    ) -> LLMResponse:
        return await call_structured(
            self._model,
            ctx,
            messages,
            purpose=template,
            options=self._options,
            json_schema=spec.schema,
            schema_name=spec.name,
        )


def tools_skip_reason(review: CodeReview, threshold: float) -> str | None:
    """Why level 2 must not run after ``review``, or None when it may."""
    score = review.overall_score
    if score is None:
        return "the level-1 review gave no readable overall score"
    if math.isnan(score) or not 0 <= score <= 10:
        return f"the level-1 review score {score:g} is not a valid 0-10 score"
    if score < threshold:
        return f"the level-1 review score {score:g} is below {threshold:g}"
    return None


def describe_plan_thresholds(thresholds: PlanThresholds) -> str:
    """The phase-1 convergence criteria, in the words the step-2 template uses."""
    return (
        f"Alignment Rules Score >= {thresholds.alignment:g}, "
        f"Standardization Score >= {thresholds.standardization:g}, "
        f"Compatibility Score >= {thresholds.compatibility:g}, and at most "
        f"{thresholds.max_critical_issues} critical issue(s)"
    )


_Report = TypeVar("_Report", PlanValidationReport, CodeReview, StandardizationReview)


def _build(ctx: StepContext, model: type[_Report], **fields: Any) -> _Report:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise AgentError(
            f"{ctx.label}: the report could not be built ({exc})", error_type="invalid_output"
        ) from exc
