"""What every step agent shares: the step's context, the agent protocol and the dispatcher.

``StepAgents`` is the one entry point the orchestrator calls: it picks the agent for the
step, bounds it with the step's timeout and turns every failure into an ``AgentError`` whose
``error_type`` the classifier and the retry strategies read:

    ==================== ================================================ =========
    error_type           cause                                            retryable
    ==================== ================================================ =========
    timeout              the step's own timeout (``ctx.timeout_s``) hit    yes
    llm_unavailable      the LLM timed out, refused, rate-limited, 5xx    yes
    invalid_output       the answer could not be used                     yes
    workspace_violation  a path outside the workspace was refused         yes
    workspace_error      the workspace could not be read or written       yes
    sandbox_error        the deterministic tools could not be run         yes
    template_error       a prompt template is missing or invalid          no
    missing_input        the context lacks what the step needs            no
    internal_error       a bug in an agent                                no
    ==================== ================================================ =========

The module also holds the helpers the agents share: rendering a template with the recovery
strategy applied, calling the model with the step's deadline, and formatting context.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse, Message
from prompt_templates.loader import TemplateLoader
from state.config import CodeThresholds, PlanThresholds
from state.decision import RecoveryStrategy
from state.errors import (
    AgentError,
    ConfigError,
    LLMOutputError,
    LLMUnavailableError,
    SandboxError,
)
from state.reports import (
    CodeChange,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
)
from state.sandbox_settings import SandboxSettings
from state.steps import STEP_SPECS, Agent, Step

log = structlog.get_logger(__name__)

AgentResult = PlanDraft | PlanValidationReport | CodeValidationReport | CodeChange
"""What an agent returns: the result type of the step it ran."""

EXPECTED_RESULT: dict[Step, type[AgentResult]] = {
    Step.INITIAL_PLANNING: PlanDraft,
    Step.PLAN_VALIDATION: PlanValidationReport,
    Step.PLAN_REVISION: PlanDraft,
    Step.IMPLEMENTATION: CodeChange,
    Step.CODE_VALIDATION: CodeValidationReport,
    Step.CODE_REFINEMENT: CodeChange,
    Step.CONVERGENCE_VALIDATION: CodeValidationReport,
}

DEFAULT_STEP_TIMEOUT_S = 300.0
NONE_GIVEN = "(none)"


@dataclass(frozen=True, slots=True)
class StepContext:
    """Everything an agent is given to run one attempt at one step.

    Attributes:
        workflow_id: the workflow the step belongs to (bound to every log event).
        step: the step to run.
        workspace: the workflow's workspace directory; agents read and write only inside it.
        requirements: the user's written requirement.
        attempt: 1-based attempt number at this step.
        plan_markdown: the current plan (the approved one in phase 2); None before step 1.
        plan_version: its version; None before step 1.
        plan_report: the latest step-2 report (step 3 revises from it).
        code_report: the latest step-5/7 report (step 6 refines from it).
        change_requests: human change requests or escalation guidance for this step.
        recovery_strategy: how this attempt retries a failed one, if it is a retry.
        last_error: the previous attempt's error message (used by ``corrected_input``).
        timeout_s: the step's time budget, before any recovery strategy.
        plan_thresholds: phase-1 convergence thresholds (the plan validator states them).
        code_thresholds: phase-2 thresholds (the review score that lets the tools run).
        sandbox: the limits the deterministic tools run under (the workflow's ``sandbox:``).
    """

    workflow_id: str
    step: Step
    workspace: Path
    requirements: str = ""
    attempt: int = 1
    plan_markdown: str | None = None
    plan_version: int | None = None
    plan_report: PlanValidationReport | None = None
    code_report: CodeValidationReport | None = None
    change_requests: tuple[str, ...] = ()
    recovery_strategy: RecoveryStrategy | None = None
    last_error: str | None = None
    timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    plan_thresholds: PlanThresholds = field(default_factory=PlanThresholds)
    code_thresholds: CodeThresholds = field(default_factory=CodeThresholds)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ValueError(
                f"timeout_s must be a positive number of seconds, got {self.timeout_s}"
            )
        if self.attempt < 1:
            raise ValueError(f"attempt is 1-based, got {self.attempt}")

    @property
    def effective_timeout_s(self) -> float:
        """The step's time budget: doubled when retried with ``extended_timeout``."""
        if self.recovery_strategy is RecoveryStrategy.EXTENDED_TIMEOUT:
            return self.timeout_s * 2
        return self.timeout_s

    @property
    def label(self) -> str:
        """``step 2 (plan validation) of workflow wf-1``, for messages."""
        return (
            f"step {int(self.step)} ({STEP_SPECS[self.step].name}) of workflow '{self.workflow_id}'"
        )


class StepAgent(Protocol):
    """An agent that runs the steps assigned to it."""

    async def run(self, ctx: StepContext) -> AgentResult:
        """Run ``ctx.step`` and return its result.

        Raises:
            AgentError: for failures the agent recognises (invalid output, a workspace
                violation); other errors are translated by ``StepAgents``.
        """
        ...


class StepAgents:
    """The planner, validator and programmer, behind one call that runs any step.

    Args:
        planner: runs steps 1 and 3.
        validator: runs steps 2, 5 and 7.
        programmer: runs steps 4 and 6.
    """

    def __init__(self, *, planner: StepAgent, validator: StepAgent, programmer: StepAgent) -> None:
        self._agents: dict[Agent, StepAgent] = {
            Agent.PLANNER: planner,
            Agent.VALIDATOR: validator,
            Agent.PROGRAMMER: programmer,
        }

    def agent_for(self, step: Step) -> StepAgent:
        """The agent WORKFLOW.md assigns to ``step``."""
        return self._agents[STEP_SPECS[step].agent]

    async def run(self, ctx: StepContext) -> AgentResult:
        """Run one attempt at ``ctx.step`` within its timeout.

        Returns:
            ``PlanDraft`` for steps 1 and 3, ``PlanValidationReport`` for step 2,
            ``CodeChange`` for steps 4 and 6, ``CodeValidationReport`` for steps 5 and 7.

        Raises:
            AgentError: every failure, with its ``error_type`` and ``retryable`` set.
        """
        agent = self.agent_for(ctx.step)
        bound = log.bind(workflow_id=ctx.workflow_id, step=int(ctx.step), attempt=ctx.attempt)
        timeout_s = ctx.effective_timeout_s
        bound.info(
            "agent.step.started",
            agent=STEP_SPECS[ctx.step].agent.value,
            timeout_s=timeout_s,
            recovery=ctx.recovery_strategy.value if ctx.recovery_strategy else None,
        )
        started = time.monotonic()
        scope = asyncio.timeout(timeout_s)
        try:
            async with scope:
                result = await agent.run(ctx)
        except Exception as exc:  # every failure, bugs included, becomes a typed AgentError
            error = to_agent_error(exc, ctx, timed_out=scope.expired())
            bound.warning(
                "agent.step.failed",
                error_type=error.error_type,
                retryable=error.retryable,
                error=str(error),
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                exc_info=error.error_type == "internal_error",
            )
            if error is exc:
                raise
            raise error from exc
        expected = EXPECTED_RESULT[ctx.step]
        if not isinstance(result, expected):
            error = AgentError(
                f"{ctx.label}: the agent returned a {type(result).__name__} instead of a "
                f"{expected.__name__}; this is a bug in the agent wiring",
                error_type="internal_error",
                retryable=False,
            )
            bound.error("agent.step.failed", error_type=error.error_type, error=str(error))
            raise error
        bound.info(
            "agent.step.completed",
            result=result.kind,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return result


def to_agent_error(exc: BaseException, ctx: StepContext, *, timed_out: bool) -> AgentError:
    """Translate any failure of an agent into an ``AgentError``.

    Args:
        exc: what the agent raised.
        ctx: the step it was running.
        timed_out: whether the step's own timeout expired.
    """
    if isinstance(exc, AgentError):
        return exc
    if timed_out:
        return AgentError(
            f"{ctx.label} did not finish within {ctx.effective_timeout_s:g}s; retry it with "
            "an extended timeout or a faster model",
            error_type="timeout",
        )
    if isinstance(exc, LLMUnavailableError | TimeoutError):
        return AgentError(
            f"{ctx.label}: the LLM could not answer ({exc}); retry later",
            error_type="llm_unavailable",
        )
    if isinstance(exc, LLMOutputError):
        return AgentError(
            f"{ctx.label}: the LLM's answer was unusable ({exc})", error_type="invalid_output"
        )
    if isinstance(exc, ConfigError):
        return AgentError(
            f"{ctx.label}: {exc}; fix the prompt template, then retry",
            error_type="template_error",
            retryable=False,
        )
    if isinstance(exc, SandboxError):
        return AgentError(
            f"{ctx.label}: the validation tools could not run ({exc})", error_type="sandbox_error"
        )
    if isinstance(exc, OSError):
        return AgentError(
            f"{ctx.label}: the workspace '{ctx.workspace}' could not be used "
            f"({exc}); check its permissions and free space",
            error_type="workspace_error",
        )
    return AgentError(
        f"{ctx.label}: the agent failed unexpectedly "
        f"({type(exc).__name__}: {exc}); this is a bug, report it",
        error_type="internal_error",
        retryable=False,
    )


def render_prompt(
    templates: TemplateLoader, name: str, ctx: StepContext, **variables: str
) -> tuple[Message, ...]:
    """Render template ``name`` and apply the step's recovery strategy to it.

    With ``corrected_input`` and a previous error, the user message ends with a section
    telling the model what was wrong with its last answer.

    Raises:
        AgentError: ``template_error`` when the template is missing or invalid.
    """
    try:
        messages = templates.load(name).render(**variables)
    except ConfigError as exc:
        raise AgentError(
            f"{ctx.label}: {exc}", error_type="template_error", retryable=False
        ) from exc
    if ctx.recovery_strategy is not RecoveryStrategy.CORRECTED_INPUT or not ctx.last_error:
        return messages
    correction = (
        "\n\n## Your previous answer was rejected\n\n"
        f"The previous attempt at this step failed with this error:\n\n{ctx.last_error}\n\n"
        "Answer again, avoid that problem, and follow the output format exactly."
    )
    *head, last = messages
    return (*head, Message(last.role, last.content + correction))


@dataclass(frozen=True, slots=True)
class LLMOptions:
    """Sampling settings of one agent's calls."""

    max_tokens: int
    temperature: float = 0.0


async def call_model(
    model: ChatModel,
    ctx: StepContext,
    messages: tuple[Message, ...],
    *,
    purpose: str,
    options: LLMOptions,
    json_schema: dict[str, Any] | None = None,
    schema_name: str = "answer",
) -> LLMResponse:
    """Make one LLM call bounded by the step's time budget, and log what it cost."""
    timeout_s = ctx.effective_timeout_s
    request = LLMRequest(
        messages=messages,
        json_schema=json_schema,
        schema_name=schema_name,
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        timeout_s=timeout_s,
        deadline_s=timeout_s,
        purpose=purpose,
    )
    response = await model.complete(request)
    log.info(
        "agent.llm.answered",
        workflow_id=ctx.workflow_id,
        step=int(ctx.step),
        purpose=purpose,
        model=response.model,
        prompt_tokens=response.prompt_tokens,
        completion_tokens=response.completion_tokens,
        latency_ms=response.latency_ms,
        response_format=response.response_format,
        finish_reason=response.finish_reason,
    )
    if response.finish_reason == "length":
        log.warning(
            "agent.llm.truncated",
            workflow_id=ctx.workflow_id,
            step=int(ctx.step),
            purpose=purpose,
            max_tokens=options.max_tokens,
        )
    return response


async def call_structured(
    model: ChatModel,
    ctx: StepContext,
    messages: tuple[Message, ...],
    *,
    purpose: str,
    options: LLMOptions,
    json_schema: dict[str, Any],
    schema_name: str,
) -> LLMResponse:
    """Ask for JSON; when the adapter rejects the answer as unusable, re-ask once as text.

    The templates describe a plain-text fallback format, so the text answer can still be
    parsed. ``response.data`` is None after the fallback.

    Raises:
        LLMOutputError: the text answer was unusable too.
        LLMUnavailableError: the LLM could not answer.
    """
    try:
        return await call_model(
            model,
            ctx,
            messages,
            purpose=purpose,
            options=options,
            json_schema=json_schema,
            schema_name=schema_name,
        )
    except LLMOutputError as exc:
        log.warning(
            "agent.llm.structured_unusable",
            workflow_id=ctx.workflow_id,
            step=int(ctx.step),
            purpose=purpose,
            error=str(exc),
        )
    return await call_model(model, ctx, messages, purpose=f"{purpose}:text", options=options)


def format_list(items: Sequence[str]) -> str:
    """A markdown bullet list, or ``(none)``."""
    cleaned = [item.strip() for item in items if item.strip()]
    return "\n".join(f"- {item}" for item in cleaned) if cleaned else NONE_GIVEN


def require_plan(ctx: StepContext) -> tuple[str, int]:
    """The context's plan and version.

    Raises:
        AgentError: ``missing_input`` when the step needs a plan and has none.
    """
    if not ctx.plan_markdown or not ctx.plan_markdown.strip() or ctx.plan_version is None:
        raise AgentError(
            f"{ctx.label} needs the current plan and its version, and the context "
            "has none; run step 1 first",
            error_type="missing_input",
            retryable=False,
        )
    return ctx.plan_markdown, ctx.plan_version


# --- the workspace -------------------------------------------------------------------------

RESERVED_DIRS = frozenset({"plans"})
"""Top-level workspace directories the programmer may not write (the planner owns them)."""

_SKIPPED_DIRS = frozenset(
    {"__pycache__", "node_modules", "venv", "env", "build", "dist", "htmlcov", "site-packages"}
)
_BACKTICKS = re.compile(r"`+")
_LANGUAGES = {
    ".py": "python",
    ".md": "markdown",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".json": "json",
    ".cfg": "ini",
    ".ini": "ini",
    ".sh": "bash",
    ".sql": "sql",
    ".txt": "text",
    ".csv": "csv",
}


def resolve_in_workspace(workspace: Path, relative: str) -> tuple[Path | None, str]:
    """Where ``relative`` points inside ``workspace``, or why it is refused.

    A path is refused when it is empty, absolute, contains ``..``, lies in a reserved
    directory, or resolves (through symlinks) outside the workspace.

    Returns:
        The resolved path and "" when allowed, else None and the reason.
    """
    text = relative.strip().replace("\\", "/")
    if not text or "\x00" in text:
        return None, "empty or invalid path"
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None, "absolute path"
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts:
        return None, "names no file"
    if ".." in parts:
        return None, "contains '..'"
    if parts[0] in RESERVED_DIRS:
        return None, f"'{parts[0]}/' is reserved for the planner's plans"
    root = workspace.resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root) or target == root:
        return None, "resolves outside the workspace (through a symlink)"
    return target, ""


def workspace_files(workspace: Path) -> list[str]:
    """The workspace's source files as sorted relative POSIX paths.

    Plans, hidden files and directories, caches and virtual environments are skipped;
    symlinked directories are not entered, and a symlinked file that leads outside the
    workspace is skipped, so nothing outside it reaches a prompt.
    """
    root = workspace.resolve()
    if not root.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [
            d
            for d in dirnames
            if not (
                d.startswith(".")
                or d in _SKIPPED_DIRS
                or d.endswith(".egg-info")
                or (here == root and d in RESERVED_DIRS)
            )
        ]
        for name in filenames:
            path = here / name
            if name.startswith(".") or path.suffix in (".pyc", ".pyo"):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                continue
            if path.is_file():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def code_context(
    workspace: Path, *, max_file_chars: int = 12_000, max_total_chars: int = 60_000
) -> str:
    """The workspace's files as markdown, for a prompt.

    Each file is shown in a fenced block under a ``### File: path`` heading. A file longer
    than ``max_file_chars`` is cut with a note; once ``max_total_chars`` is spent the rest
    are only named. Binary files are named, not shown.
    """
    root = workspace.resolve()
    sections: list[str] = []
    omitted: list[str] = []
    budget = max_total_chars
    for rel in workspace_files(root):
        if budget <= 0:
            omitted.append(rel)
            continue
        try:
            raw = (root / rel).read_bytes()
        except OSError:
            omitted.append(rel)
            continue
        if b"\x00" in raw[:8192]:
            sections.append(f"### File: {rel}\n\n(binary file, {len(raw)} bytes, not shown)")
            continue
        text = raw.decode("utf-8", errors="replace")
        limit = min(max_file_chars, budget)
        shown = text[:limit]
        note = ""
        if len(text) > limit:
            note = f"\n[... truncated: {len(text) - limit} of {len(text)} characters not shown]"
        budget -= len(shown)
        longest = max((len(run) for run in _BACKTICKS.findall(shown)), default=0)
        fence = "`" * max(3, longest + 1)
        lang = _LANGUAGES.get(Path(rel).suffix.lower(), "")
        sections.append(f"### File: {rel}\n\n{fence}{lang}\n{shown}\n{fence}{note}")
    if not sections and not omitted:
        return "(the workspace has no files yet)"
    if omitted:
        sections.append("Not shown, to keep the prompt short: " + ", ".join(omitted))
    return "\n\n".join(sections)
