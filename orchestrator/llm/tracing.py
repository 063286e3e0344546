"""One LLM call as an OpenTelemetry span (``orchestrator.telemetry``), when traces are on.

``traced_complete`` is what the usage meter and the LLM decider call instead of
``model.complete``: with traces off it is that call and one check.
"""

from __future__ import annotations

from orchestrator import telemetry
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse


async def traced_complete(model: ChatModel, request: LLMRequest) -> LLMResponse:
    """``model.complete(request)``, inside a ``chat {model}`` span when traces are on."""
    if not telemetry.enabled():
        return await model.complete(request)
    with telemetry.llm_span(
        model.model_name,
        request.purpose,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
    ) as span:
        response = await model.complete(request)
        telemetry.describe_llm_response(
            span,
            model=response.model,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            latency_ms=response.latency_ms,
            finish_reason=response.finish_reason,
            attempts=response.attempts,
        )
        return response
