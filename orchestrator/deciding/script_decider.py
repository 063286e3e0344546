"""The ``script`` coordinator: a user's Python file decides, checked like the LLM.

The file defines a documented function::

    def decide(ctx: ScriptContext) -> str | dict | None: ...
    # or: async def decide(ctx: ScriptContext) -> ...

``ctx`` carries the state, the legal actions, the programmatic decision (to defer to), the
same tools and files the LLM sees, and ``await ctx.subagent(prompt)`` to ask the LLM when the
script wants judgement. Return a legal action name (``"invoke_step3"``), a mapping
``{"action": ..., "rationale": ..., "confidence": ...}``, or None to take the programmatic
decision. The result is checked against the machine like an LLM's; an exception, an unknown
or illegal action falls back like an LLM error (see ``reconcile``).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.deciding.actions import build_decision
from orchestrator.deciding.analysis import Analysis
from orchestrator.deciding.prompting import scores_block, state_summary
from orchestrator.llm.metering import UsageMeter
from orchestrator.llm.protocol import ChatModel, LLMRequest, Message
from state.config import WorkflowConfig
from state.decision import Decision
from state.errors import ConfigError, LLMError
from state.usage import Purpose
from state.workflow import WorkflowState


@dataclass(frozen=True)
class ScriptTools:
    """Read-only access to the workflow's files, as the LLM has."""

    workspace: Path

    def list_files(self) -> list[str]:
        """Files in the workspace, relative paths."""
        if not self.workspace.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.workspace))
            for p in self.workspace.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.parts)
        )

    def read_file(self, path: str, limit: int = 100_000) -> str:
        """A workspace file's text (refuses paths outside the workspace)."""
        target = (self.workspace / path).resolve()
        if not target.is_relative_to(self.workspace.resolve()):
            raise ValueError(f"{path} is outside the workspace")
        return target.read_text(encoding="utf-8", errors="replace")[:limit]


@dataclass(frozen=True)
class ScriptContext:
    """What a coordinator script receives."""

    state: WorkflowState
    config: WorkflowConfig
    legal_actions: tuple[str, ...]
    programmatic: Decision
    route: str
    signals: tuple[str, ...]
    summary: str
    scores: str
    tools: ScriptTools
    subagent: Callable[[str], Awaitable[str]]


ScriptFn = Callable[[ScriptContext], Any]


def load_script(path: str | Path) -> ScriptFn:
    """Import the script's ``decide`` function.

    Raises:
        ConfigError: the file is missing, does not import, or has no ``decide`` function.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"coordinator_script {p}: no such file")
    spec = importlib.util.spec_from_file_location(f"coordinator_script_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise ConfigError(f"coordinator_script {p}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any error is a config problem
        raise ConfigError(f"coordinator_script {p}: importing it failed: {exc!r}") from exc
    fn = getattr(module, "decide", None)
    if not callable(fn):
        raise ConfigError(f"coordinator_script {p}: define a function decide(ctx)")
    return fn  # type: ignore[no-any-return]


def make_subagent(
    model: ChatModel | None, meter: UsageMeter | None = None
) -> Callable[[str], Awaitable[str]]:
    """An LLM helper for scripts: ``await ctx.subagent("question")`` returns the answer text.

    Args:
        model: the LLM; None makes every question fail with ``LLMError``.
        meter: counts each question as a ``script_subagent`` call and refuses it once the
            workflow's LLM budget is spent (``LLMBudgetError``); None leaves calls uncounted.
    """

    async def subagent(prompt: str) -> str:
        if model is None:
            raise LLMError("no LLM is configured for this workflow's coordinator script")
        request = LLMRequest(messages=(Message(role="user", content=prompt),), purpose="script")
        if meter is None:
            response = await model.complete(request)
        else:
            response = await meter.complete(model, request, Purpose.SCRIPT_SUBAGENT)
        return response.text

    return subagent


async def run_script(
    fn: ScriptFn,
    analysis: Analysis,
    config: WorkflowConfig,
    model: ChatModel | None,
    meter: UsageMeter | None = None,
) -> Any:
    """Call the script; its exceptions propagate for the pipeline to fall back on.

    Args:
        meter: where the script's subagent calls are counted (see ``make_subagent``).
    """
    f = analysis.facts
    ctx = ScriptContext(
        state=f.state,
        config=config,
        legal_actions=analysis.legal_actions,
        programmatic=analysis.programmatic,
        route=analysis.route.value,
        signals=tuple(s.name for s in analysis.classification.signals),
        summary=state_summary(f),
        scores=scores_block(f, config),
        tools=ScriptTools(Path(f.state.workspace or ".")),
        subagent=make_subagent(model, meter),
    )
    result = fn(ctx)
    if inspect.isawaitable(result):
        result = await result
    return result


def script_decision(result: Any, analysis: Analysis) -> Decision | None:
    """The decision a script's ``result`` names (None: take the machine's).

    Raises:
        ValueError: the result is not an action name or mapping, names an illegal action,
            or carries a confidence outside [0, 1].
    """
    if result is None:
        return None
    if isinstance(result, str):
        result = {"action": result}
    if not isinstance(result, dict) or not isinstance(result.get("action"), str):
        raise ValueError(f"decide() returned {result!r}; return an action name or a dict")
    action = result["action"]
    if action not in analysis.legal_actions:
        raise ValueError(
            f"action '{action}' is not legal here; legal: {', '.join(analysis.legal_actions)}"
        )
    confidence = result.get("confidence")
    if confidence is not None and not (
        isinstance(confidence, int | float) and 0 <= confidence <= 1
    ):
        raise ValueError(f"confidence {confidence!r} is not a number in [0, 1]")
    return build_decision(
        action,
        analysis.facts,
        rationale=str(result.get("rationale") or "decided by the coordinator script"),
        confidence=float(confidence) if confidence is not None else None,
    )


class ScriptDecider:
    """Decides with the workflow's coordinator script (each file imported once)."""

    def __init__(self, model: ChatModel | None = None) -> None:
        self.model = model
        self._scripts: dict[str, ScriptFn] = {}

    async def decide(
        self, analysis: Analysis, config: WorkflowConfig, meter: UsageMeter | None = None
    ) -> Decision | None:
        """The script's checked decision, or None to take the machine's.

        Args:
            analysis: the state to decide.
            config: the workflow's configuration (its ``coordinator_script``).
            meter: where the script's subagent calls are counted and budgeted.

        Raises:
            ConfigError: the script cannot be loaded.
            Exception: whatever the script raised, or ValueError for an unusable result.
        """
        path = config.coordinator_script or ""
        fn = self._scripts.get(path)
        if fn is None:
            fn = self._scripts[path] = load_script(path)
        result = await run_script(fn, analysis, config, self.model, meter)
        return script_decision(result, analysis)
