"""Traces: every workflow run, step, decision and LLM call as an OpenTelemetry span.

The one home of ``opentelemetry``. Off by default: until ``install`` (tests, with the SDK's
in-memory exporter) or ``configure_from_environment`` (the entry points) is called,
``enabled()`` is false and the callers create no span at all, so the decision hot path pays
one function call. ``configure_from_environment`` reads the standard variables: when
``OTEL_TRACES_EXPORTER`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its ``_TRACES_`` form) is
set it sets up the SDK with a batch processor and the exporter named (``otlp``, the default,
is OTLP over HTTP, sending where the ``OTEL_EXPORTER_OTLP_*`` variables say; ``console``
prints; ``none`` exports nothing). ``OTEL_SDK_DISABLED=true`` keeps it off;
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the service.

Spans and their attributes:

``workflow``
    ``orchestrator.workflow_id``; its children are the run's decisions and steps.
``decision``
    workflow id, ``orchestrator.machine_state``, ``.route``, ``.signals``, ``.source``,
    ``.action``, ``.routing``; the LLM's ``gen_ai.request.model`` and token counts when
    one was asked, ``orchestrator.llm.latency_ms``.
``step``
    workflow id, ``orchestrator.step``, ``.attempt``, ``.agent``, ``.status``.
``chat {model}``
    each LLM call, with the GenAI semantic conventions: ``gen_ai.operation.name``,
    ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
    ``gen_ai.request.temperature``, ``gen_ai.response.model``,
    ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` and
    ``gen_ai.usage.output_tokens``; ``orchestrator.purpose`` says what it was for.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from state.decision import DecisionRecord
from state.errors import ConfigError
from state.workflow import StepRecord

SCOPE = "hybrid-orchestrator"
PROVIDER = "openai"  # every model is reached through an OpenAI-compatible API


class _Installed:
    """The tracer spans are made with (None: traces are off) and its provider."""

    tracer: Tracer | None = None
    provider: trace.TracerProvider | None = None


def enabled() -> bool:
    """Whether spans are made (a tracer provider was installed)."""
    return _Installed.tracer is not None


def install(provider: trace.TracerProvider) -> None:
    """Make spans with ``provider`` from now on (tests pass one with an in-memory exporter)."""
    _Installed.tracer = provider.get_tracer(SCOPE)
    _Installed.provider = provider


def uninstall() -> None:
    """Stop making spans."""
    _Installed.tracer = None
    _Installed.provider = None


def provider() -> Any:
    """The installed tracer provider (to flush or shut it down), or None."""
    return _Installed.provider


def configure_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Set up the SDK when the ``OTEL_*`` variables ask for traces; whether it did.

    Raises:
        ConfigError: ``OTEL_TRACES_EXPORTER`` names an exporter we do not ship.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not names:
        if not endpoint:
            return False
        names = ["otlp"]
    # The SDK and the exporter load only when traces are asked for: startup stays light.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "otlp":
            exporters.append(OTLPSpanExporter())  # reads the OTEL_EXPORTER_OTLP_* variables
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={name!r} is not an exporter of ours; use otlp (over "
                "HTTP), console or none"
            )
    if not exporters:
        return False
    service = env.get("OTEL_SERVICE_NAME") or SCOPE
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    atexit.register(provider.shutdown)  # flush what the batch still holds
    install(provider)
    return True


def _tracer() -> Tracer:
    tracer = _Installed.tracer
    return tracer if tracer is not None else trace.get_tracer(SCOPE)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span named ``name`` (current within the block); an escaping error marks it failed."""
    with _tracer().start_as_current_span(
        name, attributes=_clean(attributes), record_exception=True, set_status_on_exception=True
    ) as current:
        yield current


def workflow_span(workflow_id: str) -> Any:
    """The span of one workflow run."""
    return span("workflow", **{"orchestrator.workflow_id": workflow_id})


def step_span(workflow_id: str, record: StepRecord) -> Any:
    """The span of one attempt at a step."""
    return span(
        "step",
        **{
            "orchestrator.workflow_id": workflow_id,
            "orchestrator.step": int(record.step),
            "orchestrator.attempt": record.attempt,
        },
    )


def describe_step(current: Span, record: StepRecord) -> None:
    """Put the finished attempt's outcome on its span."""
    current.set_attribute("orchestrator.status", record.status.value)
    if record.error is not None:
        current.set_attribute("orchestrator.error_type", record.error.type.value)
        current.set_status(Status(StatusCode.ERROR, record.error.type.value))


def decision_span(workflow_id: str) -> Any:
    """The span of one decision (described by ``describe_decision`` once taken)."""
    return span("decision", **{"orchestrator.workflow_id": workflow_id})


def describe_decision(current: Span, record: DecisionRecord) -> None:
    """Put a decision's envelope on its span."""
    attrs: dict[str, Any] = {
        "orchestrator.seq": record.seq,
        "orchestrator.machine_state": record.state_before.value,
        "orchestrator.state_after": record.state_after.value,
        "orchestrator.route": record.route.value,
        "orchestrator.signals": [s.name for s in record.signals],
        "orchestrator.source": record.source.value,
        "orchestrator.action": record.decision.action.value,
        "orchestrator.legal_actions": list(record.legal_actions),
    }
    if record.routing is not None:
        attrs["orchestrator.routing"] = record.routing.coordinator
        attrs["orchestrator.routing.per_state"] = record.routing.per_state
    info = record.llm
    if info is not None:
        attrs["orchestrator.llm.outcome"] = info.outcome.value
        if info.attempts:
            attrs.update(
                {
                    "gen_ai.request.model": info.model,
                    "gen_ai.usage.input_tokens": info.prompt_tokens,
                    "gen_ai.usage.output_tokens": info.completion_tokens,
                    "orchestrator.llm.latency_ms": info.latency_ms,
                    "orchestrator.llm.attempts": info.attempts,
                }
            )
    current.set_attributes(attrs)


def llm_span(
    model: str, purpose: str, *, max_tokens: int | None = None, temperature: float | None = None
) -> Any:
    """The span of one LLM call, named and described as the GenAI conventions say."""
    return span(
        f"chat {model}",
        **{
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.request.temperature": temperature,
            "orchestrator.purpose": purpose,
        },
    )


def describe_llm_response(
    current: Span,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: float,
    finish_reason: str | None,
    attempts: int,
) -> None:
    """Put what an LLM call answered and cost on its span."""
    current.set_attributes(
        _clean(
            {
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": prompt_tokens,
                "gen_ai.usage.output_tokens": completion_tokens,
                "gen_ai.response.finish_reasons": [finish_reason] if finish_reason else None,
                "orchestrator.llm.latency_ms": latency_ms,
                "orchestrator.llm.attempts": attempts,
            }
        )
    )


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes without None values (OpenTelemetry refuses them)."""
    return {k: v for k, v in attributes.items() if v is not None}
