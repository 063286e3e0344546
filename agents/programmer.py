"""The programmer agent: steps 4 (implementation) and 6 (code refinement).

The model is asked for ``{"files": [{"path", "content"}], "summary"}``; an answer that is not
usable JSON falls back to markdown, where each file is a ``# File: path`` line followed by one
fenced code block and the summary is a ``## Summary`` section.

Files are written into the workflow's workspace only. A path that is absolute, contains
``..``, lies in ``plans/`` or leads out through a symlink is refused: the safe files are
still written, then the step fails with ``workspace_violation`` naming the refused paths, so
the attempt is recorded as a step error and retried with the correction in the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, ValidationError

from agents.calls import LLMOptions, call_structured, format_list, render_prompt
from agents.context import StepContext, require_plan
from agents.workspace import code_context, resolve_in_workspace
from orchestrator.llm.protocol import ChatModel, LLMResponse
from prompt_templates.loader import TemplateLoader
from state.errors import AgentError
from state.reports import CodeChange, CodeValidationReport
from state.steps import Step

log = structlog.get_logger(__name__)

PROGRAMMER_OPTIONS = LLMOptions(max_tokens=8192)
MAX_TOOL_DETAIL_CHARS = 2_000

FILES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "relative to the workspace root"},
                    "content": {"type": "string", "description": "the complete file"},
                },
                "required": ["path", "content"],
                "additionalProperties": False,
            },
        },
        "summary": {"type": "string"},
    },
    "required": ["files", "summary"],
    "additionalProperties": False,
}

_FILE_LINE = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?File:(?:\*\*)?[ \t]*(?P<path>.+?)[ \t]*$", re.IGNORECASE
)
_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[^`]*$")
_SUMMARY = re.compile(
    r"^#{1,6}[ \t]*(?:refinement[ \t]+)?summary[ \t]*$", re.IGNORECASE | re.MULTILINE
)


class _FileOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    content: str


class _ProgrammerOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    files: tuple[_FileOut, ...]
    summary: str


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What writing a set of files into the workspace did."""

    written: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    """(path as given, why it was refused)"""


class ProgrammerAgent:
    """Writes and refines code with an LLM.

    Args:
        model: the chat model to ask.
        templates: where the step templates come from.
        options: sampling settings (whole files: allow many tokens).
        max_context_chars: how much of the workspace's code goes into the prompt.
    """

    def __init__(
        self,
        model: ChatModel,
        templates: TemplateLoader,
        *,
        options: LLMOptions = PROGRAMMER_OPTIONS,
        max_context_chars: int = 60_000,
    ) -> None:
        self._model = model
        self._templates = templates
        self._options = options
        self._max_context_chars = max_context_chars

    async def run(self, ctx: StepContext) -> CodeChange:
        """Implement the plan (step 4) or refine the code from its reports (step 6).

        Raises:
            AgentError: ``invalid_output`` when the answer holds no file,
                ``workspace_violation`` when a path was refused (after the safe files were
                written), ``missing_input`` without a plan, ``template_error``.
            LLMUnavailableError: the LLM could not answer.
        """
        plan, _ = require_plan(ctx)
        code = code_context(ctx.workspace, max_total_chars=self._max_context_chars)
        requirements = ctx.requirements or "(no requirement given)"
        changes = format_list(ctx.change_requests)
        if ctx.step is Step.IMPLEMENTATION:
            template = "step4_programmer"
            messages = render_prompt(
                self._templates,
                template,
                ctx,
                requirements=requirements,
                plan=plan,
                workspace_context=code,
                change_requests=changes,
            )
        elif ctx.step is Step.CODE_REFINEMENT:
            template = "step6_code_refinement"
            messages = render_prompt(
                self._templates,
                template,
                ctx,
                requirements=requirements,
                plan=plan,
                code=code,
                validation_reports=format_code_report(ctx.code_report),
                change_requests=changes,
            )
        else:
            raise AgentError(
                f"{ctx.label}: the programmer runs steps 4 and 6 only",
                error_type="internal_error",
                retryable=False,
            )

        response = await call_structured(
            self._model,
            ctx,
            messages,
            purpose=template,
            options=self._options,
            json_schema=FILES_SCHEMA,
            schema_name="code_files",
        )
        files, summary = read_files(response)
        if not files:
            raise AgentError(
                f"{ctx.label}: the programmer's answer holds no file; expected "
                "JSON {files: [{path, content}], summary} or '# File: path' lines "
                "each followed by a fenced code block",
                error_type="invalid_output",
            )
        outcome = write_files(ctx, files)
        log.info(
            "agent.code.written",
            workflow_id=ctx.workflow_id,
            step=int(ctx.step),
            written=list(outcome.written),
            refused=[p for p, _ in outcome.refused],
        )
        if outcome.refused:
            refused = "; ".join(f"'{path}' ({why})" for path, why in outcome.refused)
            raise AgentError(
                f"{ctx.label}: refused to write outside the workspace: {refused}. "
                f"{len(outcome.written)} other file(s) were written. Use paths relative to "
                "the workspace root, without '..', outside 'plans/'",
                error_type="workspace_violation",
            )
        return CodeChange(files=outcome.written, summary=summary)


def read_files(response: LLMResponse) -> tuple[list[tuple[str, str]], str]:
    """The (path, content) pairs and the summary in an answer: JSON first, else markdown."""
    data = response.data
    if data is not None:
        errors = list(Draft202012Validator(FILES_SCHEMA).iter_errors(data))
        if not errors:
            try:
                out = _ProgrammerOut.model_validate(data)
            except ValidationError:
                pass  # the markdown reader below gets its chance
            else:
                return [(f.path, f.content) for f in out.files], out.summary.strip()
        log.info("agent.code.json_unusable", errors=[e.message for e in errors[:3]])
    return parse_markdown_files(response.text)


def parse_markdown_files(text: str) -> tuple[list[tuple[str, str]], str]:
    """Files given as ``# File: path`` lines each followed by a fenced block, and the summary.

    A block that is never closed (a truncated answer) is dropped rather than written half.
    """
    lines = text.splitlines()
    files: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        header = _FILE_LINE.match(lines[i])
        i += 1
        if header is None:
            continue
        path = header.group("path").strip("`*_ '\"")
        while i < len(lines) and not lines[i].strip():
            i += 1
        opening = _FENCE_OPEN.match(lines[i]) if i < len(lines) else None
        if opening is None:
            continue
        fence = opening.group("fence")
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i])
            i += 1
        if i < len(lines):
            files.append((path, "\n".join(body) + "\n"))
            i += 1
    # the last heading: a file's own content (a README) may have a summary section too
    headings = list(_SUMMARY.finditer(text))
    summary = text[headings[-1].end() :].strip() if headings else ""
    return files, summary


def write_files(ctx: StepContext, files: list[tuple[str, str]]) -> WriteOutcome:
    """Write the safe files into the workspace and list the refused ones.

    Every path is checked before anything is written. A file given twice is written once,
    with its last content.
    """
    ctx.workspace.mkdir(parents=True, exist_ok=True)
    root = ctx.workspace.resolve()
    latest: dict[Path, str] = {}
    refused: list[tuple[str, str]] = []
    for path, content in files:
        target, why = resolve_in_workspace(root, path)
        if target is None:
            refused.append((path, why))
            log.warning(
                "agent.code.path_refused", workflow_id=ctx.workflow_id, path=path, reason=why
            )
        else:
            latest[target] = content  # "a.py" and "./a.py" are one file
    for target, content in latest.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    written = tuple(target.relative_to(root).as_posix() for target in latest)
    return WriteOutcome(written, tuple(refused))


def format_code_report(report: CodeValidationReport | None) -> str:
    """Both level-1 reports and the tool results, as the refinement prompt shows them."""
    if report is None:
        return "(no validation report yet)"

    def show(value: object) -> str:
        return "missing" if value is None else str(value)

    review, standard = report.review, report.standardization
    parts = [
        "### Alignment review (5a)",
        f"- Overall Score: {show(review.overall_score)}",
        f"- Critical Issues: {show(review.critical_issues)}",
        f"- Minor Issues: {show(review.minor_issues)}",
        f"- Verdict: {show(review.verdict.value if review.verdict else None)}",
        "",
        review.markdown.strip() or "(no text)",
        "",
        "### Standardization review (5b)",
        f"- Status: {show(standard.status)}",
        f"- Critical Issues: {show(standard.critical_issues)}",
        f"- Minor Issues: {show(standard.minor_issues)}",
        "",
        standard.markdown.strip() or "(no text)",
        "",
        "### Deterministic tools",
    ]
    if report.tools_skipped_reason:
        parts.append(f"Not run: {report.tools_skipped_reason}.")
    for tool in report.tools:
        exit_code = "" if tool.exit_code is None else f", exit code {tool.exit_code}"
        parts.append(f"- {tool.name}: {tool.status.value}{exit_code}")
        detail = tool.detail.strip()
        if detail and tool.status.value != "passed":
            if len(detail) > MAX_TOOL_DETAIL_CHARS:
                detail = detail[:MAX_TOOL_DETAIL_CHARS] + "\n[... truncated]"
            fence = "`" * max([3, *(len(run) + 1 for run in re.findall("`+", detail))])
            parts.append(f"{fence}text\n{detail}\n{fence}")
    if report.line_coverage is not None:
        parts.append(f"- Line coverage: {report.line_coverage:.1f}%")
    return "\n".join(parts)
