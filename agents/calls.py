"""How agents talk to the model: prompts with the recovery strategy applied, bounded calls.

Every call goes through the step's meter when it has one, so it is counted in the workflow's
LLM usage (as the step's agent) and refused once the workflow's budget is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from agents.context import NONE_GIVEN, StepContext
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse, Message
from prompt_templates.loader import TemplateLoader
from state.decision import RecoveryStrategy
from state.errors import AgentError, ConfigError, LLMOutputError

log = structlog.get_logger(__name__)


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
    if ctx.meter is not None:
        response = await ctx.meter.complete(model, request, ctx.purpose)
    else:
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
