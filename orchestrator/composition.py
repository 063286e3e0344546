"""The composition root: the one place that wires real components together.

Which LLM: flags first, then the workflow config, then ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY`` / ``OPENAI_MODEL``. With none of them set, the embedded default starts:
the bundled SmolLM2-135M model served by llama-cpp-python on a free loopback port, stopped
when the context exits (also on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from agents.base import LLMOptions, StepAgents
from agents.planner import PlannerAgent
from agents.programmer import ProgrammerAgent
from agents.validator import ValidatorAgent
from orchestrator.deciding.engine import DecisionEngine
from orchestrator.deciding.llm_decider import LLMDecider
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.llm.local_server import LocalModelServer
from orchestrator.llm.openai_adapter import connect
from orchestrator.llm.protocol import ChatModel
from prompt_templates.loader import TemplateLoader
from state.clock import Clock, SystemClock
from state.config import LLMSettings

log = structlog.get_logger(__name__)

LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct (embedded)"
EMBEDDED_CONTEXT_TOKENS = 8192
# The embedded model has a small context window: ask for short answers, show less code.
_COMPACT = {"tokens": 1024, "context_chars": 8_000}


@dataclass(frozen=True, slots=True)
class LLMTarget:
    """Where the LLM is: a server (base_url/key/model) or the embedded local model."""

    base_url: str | None
    api_key: str | None
    model: str | None

    @property
    def embedded(self) -> bool:
        """No server was named: use the bundled local model."""
        return self.base_url is None and self.api_key is None


def resolve_target(
    settings: LLMSettings,
    *,
    base_url: str | None = None,
    model: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LLMTarget:
    """Flags, then config, then environment."""
    env = os.environ if environ is None else environ
    return LLMTarget(
        base_url=base_url or settings.base_url or env.get("OPENAI_BASE_URL") or None,
        api_key=env.get("OPENAI_API_KEY") or None,
        model=model or settings.model or env.get("OPENAI_MODEL") or None,
    )


@asynccontextmanager
async def open_chat_model(target: LLMTarget, settings: LLMSettings) -> AsyncIterator[ChatModel]:
    """A ready chat model for ``target``; the embedded server is stopped on exit.

    Raises:
        ConfigError: the embedded model is needed but not installed.
        LLMUnavailableError: the server cannot be reached or started.
    """
    server: LocalModelServer | None = None
    base_url = target.base_url
    model = target.model
    try:
        if target.embedded:
            server = LocalModelServer(n_ctx=EMBEDDED_CONTEXT_TOKENS)
            log.info("llm.local.starting", model=LOCAL_MODEL_NAME)
            await asyncio.to_thread(server.start)
            base_url = server.base_url
            model = model or server.model_name
        chat = await connect(
            base_url,
            target.api_key or "unused-by-local-servers",
            model,
            timeout_s=settings.call_timeout_s,
            deadline_s=settings.decision_deadline_s,
            max_attempts=settings.max_attempts + 1,
            max_retry_after_s=settings.max_retry_after_s,
        )
        try:
            yield chat
        finally:
            await chat.aclose()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


def build_coordinator(
    llm: ChatModel | None, clock: Clock | None = None, machine: WorkflowMachine | None = None
) -> DecisionPipeline:
    """The coordinator with the shared machine and, when given, the LLM."""
    machine = machine or WorkflowMachine()
    engine = DecisionEngine(machine, clock or SystemClock())
    orchestrator = LLMDecider(llm, machine) if llm is not None else None
    return DecisionPipeline(engine, orchestrator, script_model=llm)


def build_agents(
    model: ChatModel, *, compact: bool, sandbox_limits: SandboxLimits | None = None
) -> StepAgents:
    """The planner, validator and programmer on ``model``.

    Args:
        compact: size prompts and answers for a small local model's context window.
        sandbox_limits: limits for running generated code (defaults: ``SandboxLimits()``).
    """
    templates = TemplateLoader()
    extra: dict[str, Any] = {}
    if compact:
        extra = {
            "options": LLMOptions(max_tokens=_COMPACT["tokens"]),
            "max_context_chars": _COMPACT["context_chars"],
        }
    return StepAgents(
        planner=PlannerAgent(model, templates, **extra),
        validator=ValidatorAgent(model, templates, sandbox=Sandbox(sandbox_limits), **extra),
        programmer=ProgrammerAgent(model, templates, **extra),
    )
