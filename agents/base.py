"""The dispatcher every step goes through, and the translation of failures into step errors.

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
    budget_exhausted     the workflow's LLM call or token budget is spent no
    template_error       a prompt template is missing or invalid          no
    missing_input        the context lacks what the step needs            no
    internal_error       a bug in an agent                                no
    ==================== ================================================ =========

The step's context lives in ``agents.context``, model calls in ``agents.calls`` and the
workspace helpers in ``agents.workspace``; their names are re-exported here for the agents
and callers that import them from this module.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from agents.calls import LLMOptions, call_model, call_structured, format_list, render_prompt
from agents.context import (
    DEFAULT_STEP_TIMEOUT_S,
    EXPECTED_RESULT,
    NONE_GIVEN,
    AgentResult,
    StepAgent,
    StepContext,
    require_plan,
)
from agents.workspace import (
    RESERVED_DIRS,
    code_context,
    resolve_in_workspace,
    workspace_files,
)
from state.errors import (
    AgentError,
    ConfigError,
    LLMBudgetError,
    LLMOutputError,
    LLMUnavailableError,
    SandboxError,
)
from state.steps import STEP_SPECS, Agent, Step
from state.usage import BUDGET_EXHAUSTED

__all__ = [
    "DEFAULT_STEP_TIMEOUT_S",
    "EXPECTED_RESULT",
    "NONE_GIVEN",
    "RESERVED_DIRS",
    "AgentResult",
    "LLMOptions",
    "StepAgent",
    "StepAgents",
    "StepContext",
    "call_model",
    "call_structured",
    "code_context",
    "format_list",
    "render_prompt",
    "require_plan",
    "resolve_in_workspace",
    "to_agent_error",
    "workspace_files",
]

log = structlog.get_logger(__name__)


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
        """The agent the workflow rules assign to ``step`` (see ``STEP_SPECS``)."""
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
    if isinstance(exc, LLMBudgetError):
        return AgentError(
            f"{ctx.label}: {exc}; a human must decide whether to go on",
            error_type=BUDGET_EXHAUSTED,
            retryable=False,
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
