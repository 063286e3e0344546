"""The planner agent: steps 1 (initial plan) and 3 (plan revision).

A plan is markdown, versioned per revision: step 1 writes v1, step 3 revises vN into vN+1.
Each version is kept in the workspace as ``plans/plan_v{N}.md`` so the history can be read and
compared; ``PlanDraft.path`` is that file, relative to the workspace.
"""

from __future__ import annotations

import asyncio
import re

import structlog

from agents.calls import LLMOptions, call_model, format_list, render_prompt
from agents.context import StepContext, require_plan
from agents.workspace import code_context
from orchestrator.llm.protocol import ChatModel
from prompt_templates.loader import TemplateLoader
from state.errors import AgentError
from state.reports import PlanDraft, PlanValidationReport
from state.steps import Step

log = structlog.get_logger(__name__)

PLANS_DIR = "plans"
PLANNER_OPTIONS = LLMOptions(max_tokens=4096)

# A whole answer wrapped in a ```markdown fence; plain ``` fences are left alone, since a plan
# may well start and end with code blocks of its own.
_WHOLE_FENCE = re.compile(
    r"\A\s*(`{3,}|~{3,})[ \t]*(?:markdown|md)[ \t]*\n(.*)\n\1\s*\Z", re.DOTALL | re.IGNORECASE
)


class PlannerAgent:
    """Writes implementation plans with an LLM.

    Args:
        model: the chat model to ask.
        templates: where the step templates come from.
        options: sampling settings (plans are long: allow enough tokens).
        max_context_chars: how much of the workspace's existing code goes into step 1.
    """

    def __init__(
        self,
        model: ChatModel,
        templates: TemplateLoader,
        *,
        options: LLMOptions = PLANNER_OPTIONS,
        max_context_chars: int = 60_000,
    ) -> None:
        self._model = model
        self._templates = templates
        self._options = options
        self._max_context_chars = max_context_chars

    async def run(self, ctx: StepContext) -> PlanDraft:
        """Write plan v1 (step 1) or the next version of the plan (step 3).

        Raises:
            AgentError: ``invalid_output`` for an empty answer, ``missing_input`` for a
                revision without a plan, ``template_error`` for a bad template.
            LLMUnavailableError: the LLM could not answer.
        """
        if ctx.step is Step.INITIAL_PLANNING:
            version = 1
            template = "step1_initial_planner"
            messages = render_prompt(
                self._templates,
                template,
                ctx,
                requirements=ctx.requirements or "(no requirement given)",
                workspace_context=await asyncio.to_thread(
                    code_context, ctx.workspace, max_total_chars=self._max_context_chars
                ),
                change_requests=format_list(ctx.change_requests),
            )
        elif ctx.step is Step.PLAN_REVISION:
            plan, current = require_plan(ctx)
            version = current + 1
            template = "step3_revision_planner"
            messages = render_prompt(
                self._templates,
                template,
                ctx,
                requirements=ctx.requirements or "(no requirement given)",
                plan=plan,
                plan_version=str(current),
                validation_report=format_plan_report(ctx.plan_report),
                change_requests=format_list(ctx.change_requests),
            )
        else:
            raise AgentError(
                f"{ctx.label}: the planner runs steps 1 and 3 only",
                error_type="internal_error",
                retryable=False,
            )

        response = await call_model(
            self._model, ctx, messages, purpose=template, options=self._options
        )
        markdown = unwrap_fence(response.text).strip()
        if not markdown:
            raise AgentError(
                f"{ctx.label}: the planner's answer was empty; expected a markdown plan",
                error_type="invalid_output",
            )
        path = await asyncio.to_thread(write_plan, ctx, version, markdown)
        log.info(
            "agent.plan.written",
            workflow_id=ctx.workflow_id,
            step=int(ctx.step),
            version=version,
            path=path,
            chars=len(markdown),
        )
        return PlanDraft(version=version, markdown=markdown, path=path)


def unwrap_fence(text: str) -> str:
    """The plan inside a code fence, when the model wrapped its whole answer in one."""
    match = _WHOLE_FENCE.match(text)
    return match.group(2) if match else text


def write_plan(ctx: StepContext, version: int, markdown: str) -> str:
    """Write plan ``version`` into the workspace; return its path relative to the workspace.

    Raises:
        AgentError: ``workspace_violation`` when ``plans/`` leads outside the workspace.
    """
    root = ctx.workspace.resolve()
    plans = root / PLANS_DIR
    if plans.is_symlink() or (plans.exists() and not plans.resolve().is_relative_to(root)):
        raise AgentError(
            f"{ctx.label}: '{PLANS_DIR}/' in the workspace is a symlink; the plan "
            "was not written there",
            error_type="workspace_violation",
        )
    plans.mkdir(parents=True, exist_ok=True)
    relative = f"{PLANS_DIR}/plan_v{version}.md"
    target = root / relative
    if target.is_symlink():
        target.unlink()  # never write through a link someone left in place of a plan
    target.write_text(markdown + "\n", encoding="utf-8")
    return relative


def format_plan_report(report: PlanValidationReport | None) -> str:
    """The latest plan report as the revision prompt shows it: scores first, then the text."""
    if report is None:
        return "(no validation report yet)"

    def show(value: object) -> str:
        return "missing" if value is None else str(value)

    lines = [
        f"- Alignment Rules Score: {show(report.alignment_score)}",
        f"- Standardization Score: {show(report.standardization_score)}",
        f"- Compatibility Score: {show(report.compatibility_score)}",
        f"- Critical Issues: {show(report.critical_issues)}",
        f"- Minor Issues: {show(report.minor_issues)}",
        f"- Overall: {show(report.verdict.value if report.verdict else None)}",
    ]
    if report.parse_problems:
        lines.append(f"- Problems reading the report: {'; '.join(report.parse_problems)}")
    body = report.markdown.strip() or "(the report has no text)"
    return "\n".join(lines) + "\n\n" + body
