"""The validator agent: step 2 (plan validation) and steps 5/7 (code validation).

Reports are asked for as structured output (a JSON schema in the request). Servers without a
JSON mode, or answers whose JSON is unusable, fall back to labelled markdown lines such as
``Alignment Rules Score: 8.5/10`` or ``Overall: PASS``. Both readers share one description of
each report's fields (``ReportSpec``), so the JSON schema and the labels cannot drift apart.

Values are kept as the model gave them: a missing score is None and an out-of-range one is
kept as is, each with a note in ``parse_problems``, because the classifier's anomaly signals
need to see them. A self-contradictory report (PASS with critical issues) is passed through
unchanged for the same reason. Only an answer with nothing readable at all is
``invalid_output``.

Code validation has two levels. Level 1 is two LLM reviews run concurrently: 5a (alignment
with the plan, with an overall score) and 5b (the team's standards, PASSED or FAILED).
Level 2, the deterministic tools in the sandbox, runs only when 5a's score is valid and at
least ``code_thresholds.review_score_for_tools``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import structlog
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from agents.base import (
    LLMOptions,
    StepContext,
    call_structured,
    code_context,
    render_prompt,
    require_plan,
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
    ToolResult,
    ToolStatus,
    Verdict,
)
from state.sandbox_settings import SandboxSettings
from state.steps import Step

log = structlog.get_logger(__name__)

VALIDATOR_OPTIONS = LLMOptions(max_tokens=2048)


# --- reading reports -----------------------------------------------------------------------

FieldKind = Literal["score", "count", "verdict", "status"]


@dataclass(frozen=True, slots=True)
class ReportField:
    """One value a report carries, under its JSON key and its labelled-line names."""

    name: str
    kind: FieldKind
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """The fields of one kind of report; the JSON schema is derived from them."""

    name: str
    fields: tuple[ReportField, ...]

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema asked of the model: every field plus the markdown ``report``.

        Ranges are described, not enforced: an out-of-range score must reach the report so
        the classifier can flag it, rather than fail validation here.
        """
        kinds: dict[FieldKind, dict[str, Any]] = {
            "score": {"type": "number", "description": "a score from 0 to 10"},
            "count": {"type": "integer", "description": "how many issues"},
            "verdict": {"type": "string", "enum": ["PASS", "FAIL"]},
            "status": {"type": "string", "enum": ["PASSED", "FAILED"]},
        }
        properties = {f.name: kinds[f.kind] for f in self.fields}
        properties["report"] = {"type": "string", "description": "the markdown report"}
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }


_ISSUES = (
    ReportField("critical_issues", "count", ("Critical Issues",)),
    ReportField("minor_issues", "count", ("Minor Issues",)),
)

PLAN_REPORT = ReportSpec(
    "plan_validation_report",
    (
        ReportField("alignment_score", "score", ("Alignment Rules Score", "Alignment Score")),
        ReportField(
            "standardization_score",
            "score",
            ("Standardization Score", "Standardization Rules Score"),
        ),
        ReportField("compatibility_score", "score", ("Compatibility Score",)),
        *_ISSUES,
        ReportField("verdict", "verdict", ("Overall", "Overall Verdict", "Verdict")),
    ),
)
CODE_REVIEW = ReportSpec(
    "code_alignment_review",
    (
        ReportField("overall_score", "score", ("Overall Score",)),
        *_ISSUES,
        ReportField("verdict", "verdict", ("Verdict", "Overall Verdict", "Overall")),
    ),
)
STANDARDIZATION = ReportSpec(
    "code_standardization_review",
    (
        ReportField("status", "status", ("Status", "Standardization Status")),
        *_ISSUES,
    ),
)

_NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"
_SCORE_TEXT = re.compile(rf"(?P<num>{_NUMBER}|nan)(?:\s*/\s*(?P<den>{_NUMBER}))?", re.IGNORECASE)
_COUNT_TEXT = re.compile(rf"(?P<num>{_NUMBER})|(?P<none>none|no|zero)\b", re.IGNORECASE)
_VERDICT_TEXT = re.compile(r"(PASS|FAIL)(?:ED)?\b", re.IGNORECASE)
_DECORATION = " \t*_`'\"|"
_JSON_ANSWER = re.compile(
    r"\A\s*(?:```(?:json)?\s*)?(?P<body>\{.*\})\s*(?:```)?\s*\Z", re.DOTALL | re.IGNORECASE
)


def _label_pattern(labels: tuple[str, ...]) -> re.Pattern[str]:
    names = sorted(labels, key=len, reverse=True)
    alternatives = "|".join(r"[ \t]+".join(map(re.escape, name.split())) for name in names)
    return re.compile(
        rf"^[ \t>*_#|+-]*(?:{alternatives})[ \t*_]*[:=|](?P<value>.*)$",
        re.IGNORECASE | re.MULTILINE,
    )


def _parse_text(kind: FieldKind, text: str) -> tuple[Any, str | None]:
    """A value read from text, and a note when its scale is unusual; (None, None) if none."""
    text = text.strip(_DECORATION)
    if kind == "score":
        score = _SCORE_TEXT.match(text)
        if score is None:
            return None, None
        value = float(score.group("num"))
        den = score.group("den")
        note = f"given on a /{den} scale, kept as given" if den and float(den) != 10 else None
        return value, note
    if kind == "count":
        count = _COUNT_TEXT.match(text)
        if count is None:
            return None, None
        if count.group("none"):
            return 0, None
        number = float(count.group("num"))
        return (int(number), None) if number.is_integer() else (None, None)
    verdict = _VERDICT_TEXT.match(text)
    if verdict is None:
        return None, None
    word = verdict.group(1).upper()
    if kind == "verdict":
        return Verdict(word), None
    return f"{word}ED", None


def _convert(field: ReportField, raw: Any) -> tuple[Any, str | None]:
    """A JSON value converted to the field's type; None when it cannot be."""
    if isinstance(raw, bool):
        return None, None
    if isinstance(raw, str):
        return _parse_text(field.kind, raw)
    if field.kind == "score" and isinstance(raw, int | float):
        return float(raw), None
    if field.kind == "count" and isinstance(raw, int | float) and float(raw).is_integer():
        return int(raw), None
    return None, None


def _range_problem(field: ReportField, value: Any) -> str | None:
    if field.kind == "score" and (math.isnan(value) or not 0 <= value <= 10):
        return f"{field.name}: {value:g} is outside 0-10, kept as given"
    if field.kind == "count" and value < 0:
        return f"{field.name}: {value} is negative, kept as given"
    return None


def _read_json(data: dict[str, Any], spec: ReportSpec) -> tuple[dict[str, Any], list[str]]:
    problems = [
        f"schema: {err.message}"
        for err in Draft202012Validator(spec.schema).iter_errors(data)
        # missing fields, wrong types and bad enum values are reported field by field below
        if err.validator not in ("required", "type", "enum")
    ]
    values: dict[str, Any] = {}
    for field in spec.fields:
        raw = data.get(field.name)
        value, note = (None, None) if raw is None else _convert(field, raw)
        values[field.name] = value
        if raw is None:
            problems.append(f"{field.name}: missing")
        elif value is None:
            problems.append(f"{field.name}: unreadable value {raw!r}")
        else:
            problems.extend(p for p in (note, _range_problem(field, value)) if p)
    return values, problems


def _read_labelled(text: str, spec: ReportSpec) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in spec.fields:
        given = [
            m.group("value").strip(_DECORATION) for m in _label_pattern(field.labels).finditer(text)
        ]
        given = [g for g in given if g]
        readings = [(g, *_parse_text(field.kind, g)) for g in given]
        readable = [(g, v, note) for g, v, note in readings if v is not None]
        if not readable:
            values[field.name] = None
            problems.append(
                f"{field.name}: unreadable value {given[-1]!r}"
                if given
                else f"{field.name}: missing (no '{field.labels[0]}:' line)"
            )
            continue
        distinct = list(dict.fromkeys(str(v) for _, v, _ in readable))
        if len(distinct) > 1:
            problems.append(
                f"{field.name}: given {len(readable)} times with different values "
                f"({', '.join(distinct)}); the last is used"
            )
        _, value, note = readable[-1]
        values[field.name] = value
        problems.extend(p for p in (note, _range_problem(field, value)) if p)
    return values, problems


def _json_object_in(text: str) -> dict[str, Any] | None:
    match = _JSON_ANSWER.match(text)
    if match is None:
        return None
    try:
        value = json.loads(match.group("body"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_report(
    data: dict[str, Any] | None, text: str, spec: ReportSpec, *, where: str
) -> tuple[dict[str, Any], str, tuple[str, ...]]:
    """Read a report's values from structured output, else from labelled lines.

    Args:
        data: the parsed JSON object, if the model gave one.
        text: the raw answer text.
        spec: the report's fields.
        where: names the report in the error message.

    Returns:
        The values by field name (None where missing or unreadable), the markdown report,
        and the notes on what could not be read as expected.

    Raises:
        AgentError: ``invalid_output`` when not one value can be read.
    """
    fallback = text
    notes: list[str] = []
    if data is None:
        data = _json_object_in(text)  # a text-mode answer may still be the JSON asked for
    if data is not None:
        values, problems = _read_json(data, spec)
        report = data.get("report")
        if any(v is not None for v in values.values()):
            if isinstance(report, str) and report.strip():
                return values, report.strip(), tuple(problems)
            return values, text.strip(), (*problems, "report: missing, the raw answer is kept")
        if isinstance(report, str):
            fallback = report
        notes.append("the structured answer had no readable field; labelled lines were read")
    values, problems = _read_labelled(fallback, spec)
    if all(v is None for v in values.values()):
        labels = ", ".join(f"'{f.labels[0]}:'" for f in spec.fields)
        raise AgentError(
            f"{where} could not be read: no JSON object with its fields and no "
            f"labelled lines ({labels})",
            error_type="invalid_output",
        )
    return values, fallback.strip(), (*notes, *problems)


# --- the agent ------------------------------------------------------------------------------


class ToolRunLike(Protocol):
    """What the tool runner returns (``orchestrator.execution.tools.ToolRun``)."""

    @property
    def tools(self) -> tuple[ToolResult, ...]:
        """One result per deterministic tool."""
        ...

    @property
    def line_coverage(self) -> float | None:
        """Percent of lines covered by the tests, None when not measured."""
        ...


# The sandbox is typed loosely: the validator only hands it through, a fake runner in tests
# needs none, and importing this module must not import orchestrator.execution.sandbox.
ToolRunner = Callable[[Path, str, Any], Awaitable[ToolRunLike]]
"""``async (workspace, plan_markdown, sandbox) -> ToolRun``, like ``run_validation_tools``.

``sandbox`` is the sandbox the validator was built with or, without one, the workflow's
:class:`SandboxSettings`."""


async def default_tool_runner(workspace: Path, plan_markdown: str, sandbox: Any) -> ToolRunLike:
    """Run the real deterministic tools (``orchestrator.execution.tools.run_validation_tools``).

    The sandbox module is imported on first use, so the validator can be built and tested
    without it. A ``sandbox`` of None means a ``Sandbox()`` with default limits; a
    :class:`SandboxSettings` means a sandbox with those limits (one per distinct settings).
    """
    # imported here, not at the top: plan validation and tests never load the sandbox
    from orchestrator.execution.tools import run_validation_tools  # noqa: PLC0415 -- deferred on purpose

    if sandbox is None or isinstance(sandbox, SandboxSettings):
        sandbox = sandbox_for(sandbox or SandboxSettings())
    return await run_validation_tools(workspace, plan_markdown, sandbox)


@functools.cache
def sandbox_for(settings: SandboxSettings) -> Any:
    """The sandbox (``orchestrator.execution.sandbox.Sandbox``) for a workflow's settings.

    Cached, so the machine's namespaces are probed once per distinct settings.
    """
    from orchestrator.execution.sandbox import Sandbox, SandboxLimits  # noqa: PLC0415 -- deferred on purpose, see above

    return Sandbox(SandboxLimits.from_settings(settings))


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
        code = code_context(ctx.workspace, max_total_chars=self._max_context_chars)
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
        run = await self._tool_runner(ctx.workspace, plan, sandbox)
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
