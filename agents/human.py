"""The human agent: the interface the runner waits on at gates.

Implementations live with their front end (the CLI asks in an interactive terminal); with
none, a workflow that reaches a gate stops as ``awaiting_human`` and the process may exit,
to be answered later with ``orchestrator approve|reject|request-changes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from state.steps import Gate
from state.workflow import HumanAnswerKind, WorkflowState


@dataclass(frozen=True, slots=True)
class HumanInput:
    """What a human answered."""

    answer: HumanAnswerKind
    by: str
    changes: tuple[str, ...] = ()
    comment: str | None = None


class Human(Protocol):
    """Someone who can answer at a gate now, or decline (None) so the workflow waits."""

    async def ask(self, state: WorkflowState, gate: Gate) -> HumanInput | None:
        """Ask for an answer at ``gate``; None leaves the workflow waiting."""
        ...
