"""Traces: workflows, steps, decisions and LLM calls as OpenTelemetry spans (off by default)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_runner import make_service, start

from orchestrator import telemetry
from orchestrator.composition import open_store
from orchestrator.llm.scripted import ScriptedChatModel
from state.config import Coordinator, WorkflowConfig
from state.errors import ConfigError
from state.steps import MachineState
from state.store import Store

from support.world import World


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans made during the test, through the SDK's in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(provider)
    try:
        yield exporter
    finally:
        telemetry.uninstall()
        provider.shutdown()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "data") as s:
        yield s


def named(found: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    """The spans whose name starts with ``prefix``."""
    return [s for s in found if s.name.startswith(prefix)]


async def test_a_run_is_a_tree_of_spans(
    spans: InMemorySpanExporter, store: Store, tmp_path: Path
) -> None:
    """One workflow span; decisions and steps under it; agent LLM calls under their step."""
    service = make_service(store, ScriptedChatModel(responder=World()))
    wid = start(service, tmp_path, WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC))
    state = await service.run(wid)
    assert state.machine_state is MachineState.AWAITING_PLAN_APPROVAL
    found = spans.get_finished_spans()
    (workflow,) = named(found, "workflow")
    assert workflow.attributes is not None
    assert workflow.attributes["orchestrator.workflow_id"] == wid
    decisions = named(found, "decision")
    steps = named(found, "step")
    assert len(decisions) == len(state.decisions)
    assert len(steps) == len(state.history)
    root = workflow.context.span_id
    assert all(s.parent is not None and s.parent.span_id == root for s in decisions + steps)
    first = decisions[0].attributes
    assert first is not None
    record = state.decisions[0]
    assert first["orchestrator.workflow_id"] == wid
    assert first["orchestrator.machine_state"] == record.state_before.value
    assert first["orchestrator.route"] == record.route.value
    assert first["orchestrator.source"] == record.source.value
    assert first["orchestrator.action"] == record.decision.action.value
    assert first["orchestrator.routing"] == "programmatic"
    step_ids = {s.context.span_id for s in steps}
    chats = named(found, "chat ")
    assert chats and all(c.parent is not None and c.parent.span_id in step_ids for c in chats)
    chat = chats[0].attributes
    assert chat is not None
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == "scripted"
    assert chat["gen_ai.usage.input_tokens"] == 100
    assert chat["gen_ai.usage.output_tokens"] == 20
    assert chat["orchestrator.purpose"] == "step1_initial_planner"
    assert all(s.attributes and s.attributes["orchestrator.status"] == "completed" for s in steps)


async def test_an_llm_decision_carries_its_model_and_tokens(
    spans: InMemorySpanExporter, store: Store, tmp_path: Path
) -> None:
    """A decision the LLM took has its model, tokens and latency; its call is a child span."""
    world = World(decisions=[])

    def answer(request: Any) -> Any:
        if request.purpose == "decision":
            action = request.json_schema["properties"]["action"]["enum"][0]
            return {"action": action, "rationale": "r", "confidence": 0.9}
        return world(request)

    service = make_service(store, ScriptedChatModel(responder=answer))
    wid = start(service, tmp_path, WorkflowConfig(coordinator=Coordinator.LLM))
    await service.run(wid)
    found = spans.get_finished_spans()
    decision = named(found, "decision")[0]
    attrs = decision.attributes
    assert attrs is not None
    assert attrs["orchestrator.source"] == "llm"
    assert attrs["gen_ai.request.model"] == "scripted"
    assert attrs["gen_ai.usage.input_tokens"] == 100
    assert "orchestrator.llm.latency_ms" in attrs
    chats = [
        c
        for c in named(found, "chat ")
        if c.parent is not None and c.parent.span_id == decision.context.span_id
    ]
    assert len(chats) == 1
    assert chats[0].attributes is not None
    assert chats[0].attributes["orchestrator.purpose"] == "decision"


async def test_no_span_is_made_by_default(store: Store, tmp_path: Path) -> None:
    """Without an installed provider (the default) nothing is traced."""
    assert not telemetry.enabled()
    assert not telemetry.configure_from_environment({})
    assert not telemetry.configure_from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}
    )
    assert not telemetry.enabled()


def test_an_unknown_exporter_is_refused() -> None:
    """``OTEL_TRACES_EXPORTER`` naming an exporter we do not ship is a clear error."""
    with pytest.raises(ConfigError, match="otlp"):
        telemetry.configure_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not telemetry.enabled()


class _Collector(BaseHTTPRequestHandler):
    """Records OTLP export requests."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_otlp_over_http_exports_where_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans are posted there as OTLP/HTTP."""
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orchestrator-test")
    try:
        assert telemetry.configure_from_environment()
        assert telemetry.enabled()
        with telemetry.workflow_span("wf-otlp"):
            pass
        provider = telemetry.provider()
        assert provider is not None
        provider.force_flush()
        provider.shutdown()
    finally:
        telemetry.uninstall()
        server.shutdown()
        server.server_close()
    paths = [(p, t) for p, t, _ in _Collector.received]
    assert ("/v1/traces", "application/x-protobuf") in paths
    body = b"".join(b for _, _, b in _Collector.received)
    assert b"wf-otlp" in body and b"orchestrator-test" in body
