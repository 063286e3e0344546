"""The programmer agent: steps 4 (implementation) and 6 (code refinement).

The model is asked for ``{"files": [{"path", "content" | "diff"}], "summary"}``: a file with
``content`` is replaced whole, a file with ``diff`` is edited by that unified diff. An answer
that is not usable JSON falls back to markdown, where each file is a ``# File: path`` line
followed by one fenced code block (a ```` ```diff ```` block is a diff) and the summary is a
``## Summary`` section.

The prompt shows the workspace's layout and the files most relevant to the plan (named by
path, file name or module name), within a token budget; the result says which files were
shown and how many tokens they took (``CodeChange.context_*``).

Diffs are applied by ``git apply`` (``orchestrator.repository.git.apply_patch``): checked
whole before anything changes, in the worktree of a ``--repo`` workflow and as a plain patch
tool in a plain directory. A diff that does not apply undoes the step's whole-file writes and
fails the step with ``invalid_output`` and git's reason, which the next attempt is told.

Files are written into the workflow's workspace only. A path that is absolute, contains
``..``, lies in ``plans/`` or leads out through a symlink is refused: the safe files are
still written, then the step fails with ``workspace_violation`` naming the refused paths, so
the attempt is recorded as a step error and retried with the correction in the prompt.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, ValidationError

from agents.calls import LLMOptions, call_structured, format_list, render_prompt
from agents.context import StepContext, require_plan
from agents.workspace import CHARS_PER_TOKEN, resolve_in_workspace, select_context
from orchestrator.llm.protocol import ChatModel, LLMResponse
from orchestrator.repository import git
from prompt_templates.loader import TemplateLoader
from state.errors import AgentError, ConfigError
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
                    "diff": {
                        "type": "string",
                        "description": "instead of content: a unified diff of this file",
                    },
                },
                "required": ["path"],
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
_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIFF_LANGUAGES = frozenset({"diff", "patch", "udiff"})
_DIFF_PATH = re.compile(r"^(?:---|\+\+\+) (?P<path>\S+)|^diff --git a/(?P<a>\S+) b/(?P<b>\S+)")
_SUMMARY = re.compile(
    r"^#{1,6}[ \t]*(?:refinement[ \t]+)?summary[ \t]*$", re.IGNORECASE | re.MULTILINE
)


class _FileOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    content: str | None = None
    diff: str | None = None


@dataclass(frozen=True, slots=True)
class FileEdit:
    """One file of the programmer's answer: its whole new content, or a unified diff."""

    path: str
    text: str
    is_diff: bool = False


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
    patched: tuple[str, ...] = ()
    patch_error: str = ""
    """why the diffs did not apply ("" when they did, or there were none)"""


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
        selection = await asyncio.to_thread(
            select_context,
            ctx.workspace,
            "\n".join([plan, *ctx.change_requests]),
            budget_tokens=self._max_context_chars // CHARS_PER_TOKEN,
        )
        code = selection.markdown
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
                "JSON {files: [{path, content or diff}], summary} or '# File: path' lines "
                "each followed by a fenced code block",
                error_type="invalid_output",
            )
        outcome = await asyncio.to_thread(write_files, ctx, files)
        log.info(
            "agent.code.written",
            workflow_id=ctx.workflow_id,
            step=int(ctx.step),
            written=list(outcome.written),
            patched=list(outcome.patched),
            refused=[p for p, _ in outcome.refused],
            context_files=len(selection.files),
            context_tokens=selection.tokens,
        )
        if outcome.patch_error:
            raise AgentError(
                f"{ctx.label}: a diff did not apply, so no file was changed: "
                f"{outcome.patch_error}. Make each diff against the file as shown (with "
                "enough unchanged context lines), or send the complete file as 'content'",
                error_type="invalid_output",
            )
        if outcome.refused:
            refused = "; ".join(f"'{path}' ({why})" for path, why in outcome.refused)
            raise AgentError(
                f"{ctx.label}: refused to write outside the workspace: {refused}. "
                f"{len(outcome.written)} other file(s) were written. Use paths relative to "
                "the workspace root, without '..', outside 'plans/'",
                error_type="workspace_violation",
            )
        return CodeChange(
            files=tuple(dict.fromkeys([*outcome.written, *outcome.patched])),
            summary=summary,
            patched=outcome.patched,
            context_files=selection.files,
            context_tokens=selection.tokens,
            context_budget_tokens=selection.budget_tokens,
        )


def read_files(response: LLMResponse) -> tuple[list[FileEdit], str]:
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
                edits = [_edit(f) for f in out.files]
                if all(e is not None for e in edits):
                    return [e for e in edits if e is not None], out.summary.strip()
        log.info("agent.code.json_unusable", errors=[e.message for e in errors[:3]])
    return parse_markdown_files(response.text)


def _edit(out: _FileOut) -> FileEdit | None:
    """The edit a JSON file entry asks for; None unless exactly one of content, diff is set."""
    if (out.content is None) == (out.diff is None):
        return None
    if out.diff is not None:
        return FileEdit(out.path, out.diff, is_diff=True)
    return FileEdit(out.path, out.content or "")


def parse_markdown_files(text: str) -> tuple[list[FileEdit], str]:
    """Files given as ``# File: path`` lines each followed by a fenced block, and the summary.

    A block whose language is ``diff`` (or ``patch``) is a unified diff of that file. A block
    that is never closed (a truncated answer) is dropped rather than written half.
    """
    lines = text.splitlines()
    files: list[FileEdit] = []
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
        is_diff = opening.group("info").strip().lower() in _DIFF_LANGUAGES
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i])
            i += 1
        if i < len(lines):
            files.append(FileEdit(path, "\n".join(body) + "\n", is_diff))
            i += 1
    # the last heading: a file's own content (a README) may have a summary section too
    headings = list(_SUMMARY.finditer(text))
    summary = text[headings[-1].end() :].strip() if headings else ""
    return files, summary


def diff_paths(diff: str) -> list[str]:
    """The paths a unified diff's headers name (``a/`` and ``b/`` prefixes dropped)."""
    found: list[str] = []
    for line in diff.splitlines():
        match = _DIFF_PATH.match(line)
        if match is None:
            continue
        for name in (match.group("path"), match.group("a"), match.group("b")):
            if name and name != "/dev/null":
                found.append(name[2:] if name[:2] in ("a/", "b/") else name)
    return found


def _with_headers(path: str, diff: str) -> str:
    """``diff`` with ``---``/``+++`` headers for ``path`` when it starts at a hunk."""
    body = diff.lstrip("\n")
    if body.startswith("@@"):
        return f"--- a/{path}\n+++ b/{path}\n{body}"
    return body


def write_files(ctx: StepContext, files: list[FileEdit]) -> WriteOutcome:
    """Write the safe files into the workspace, apply the diffs, and list the refused ones.

    Every path (of a file, and in a diff's headers) is checked before anything is written.
    A file given twice is written once, with its last content. Diffs are applied after the
    whole files, as one patch; if it does not apply, the whole-file writes are undone.
    """
    ctx.workspace.mkdir(parents=True, exist_ok=True)
    root = ctx.workspace.resolve()
    latest: dict[Path, str] = {}
    patches: list[str] = []
    patched: dict[Path, None] = {}
    refused: list[tuple[str, str]] = []
    for edit in files:
        names = [edit.path]
        if edit.is_diff:
            patch = _with_headers(edit.path, edit.text)
            names += diff_paths(patch)
        checked = [(name, *resolve_in_workspace(root, name)) for name in names]
        bad = [(name, why) for name, target, why in checked if target is None]
        if bad:
            refused.extend(bad)
            for name, why in bad:
                log.warning(
                    "agent.code.path_refused", workflow_id=ctx.workflow_id, path=name, reason=why
                )
            continue
        if edit.is_diff:
            patches.append(patch)
            patched.update((t, None) for _, t, _ in checked if t is not None)
        else:
            target = checked[0][1]
            assert target is not None
            latest[target] = edit.text  # "a.py" and "./a.py" are one file
    before: dict[Path, bytes | None] = {}
    for target, content in latest.items():
        before[target] = target.read_bytes() if target.is_file() else None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    error = ""
    if patches:
        text = "".join(p if p.endswith("\n") else p + "\n" for p in patches)
        try:
            error = git.apply_patch(root, text, in_repository=(root / ".git").exists())
        except ConfigError as exc:  # git missing: the diff cannot be applied
            error = f"{exc}; send complete files instead of diffs"
        if error:
            for target, old in before.items():  # nothing of a failed answer stays
                if old is None:
                    target.unlink(missing_ok=True)
                else:
                    target.write_bytes(old)
    written = tuple(target.relative_to(root).as_posix() for target in latest)
    changed = tuple(t.relative_to(root).as_posix() for t in patched if t not in latest)
    if error:
        return WriteOutcome((), tuple(refused), (), error)
    return WriteOutcome(written, tuple(refused), changed)


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
