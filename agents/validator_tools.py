"""How the validator reaches the deterministic tools without importing them up front.

The tool runner is a seam: tests hand the validator a fake one, production uses
:func:`default_tool_runner`, which imports ``orchestrator.execution`` on first use so that
plan validation never loads the sandbox.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from state.check_settings import ValidationSetup
from state.reports import LineHits, ToolResult
from state.sandbox_settings import SandboxSettings


class ToolRunLike(Protocol):
    """What the tool runner returns (``orchestrator.execution.tools.ToolRun``)."""

    @property
    def tools(self) -> tuple[ToolResult, ...]:
        """One result per deterministic tool."""
        ...

    @property
    def line_coverage(self) -> float | None:
        """Percent of lines covered by the tests, None when not measured."""
        ...

    @property
    def line_hits(self) -> dict[str, LineHits] | None:
        """Per file, the lines the tests ran and missed, None when not measured."""
        ...


# The sandbox is typed loosely: the validator only hands it through, a fake runner in tests
# needs none, and importing this module must not import orchestrator.execution.sandbox.
ToolRunner = Callable[[Path, str, Any, ValidationSetup], Awaitable[ToolRunLike]]
"""``async (workspace, plan_markdown, sandbox, setup) -> ToolRun``, like
``run_validation_tools``.

``sandbox`` is the sandbox the validator was built with or, without one, the workflow's
:class:`SandboxSettings`; ``setup`` the workflow's ``environment:`` and ``checks:``."""


async def default_tool_runner(
    workspace: Path, plan_markdown: str, sandbox: Any, setup: ValidationSetup
) -> ToolRunLike:
    """Run the configured checks (``orchestrator.execution.checks.run_validation_tools``).

    The sandbox module is imported on first use, so the validator can be built and tested
    without it. A ``sandbox`` of None means a ``Sandbox()`` with default limits; a
    :class:`SandboxSettings` means a sandbox with those limits (one per distinct settings).
    """
    # imported here, not at the top: plan validation and tests never load the sandbox
    from orchestrator.execution.checks import run_validation_tools  # noqa: PLC0415 -- deferred on purpose

    if sandbox is None or isinstance(sandbox, SandboxSettings):
        sandbox = sandbox_for(sandbox or SandboxSettings())
    return await run_validation_tools(workspace, plan_markdown, sandbox, setup)


@functools.cache
def sandbox_for(settings: SandboxSettings) -> Any:
    """The sandbox (``orchestrator.execution.sandbox.Sandbox``) for a workflow's settings.

    Cached, so the machine's namespaces are probed once per distinct settings.
    """
    from orchestrator.execution.sandbox import Sandbox, SandboxLimits  # noqa: PLC0415 -- deferred on purpose, see above

    return Sandbox(SandboxLimits.from_settings(settings))
