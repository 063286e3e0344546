"""Terminal rendering: the live progress display and the interactive gate prompt."""

from __future__ import annotations

import asyncio
import getpass

import click
from rich.console import Console
from rich.markup import escape

from agents.human import HumanInput
from orchestrator.cli.core import describe_decision
from orchestrator.cli.printable import printable
from orchestrator.reporting import scores_line
from orchestrator.running.runner import ProgressEvent
from orchestrator.running.updates import allowed_answers
from state.steps import STEP_SPECS, Gate
from state.workflow import HumanAnswerKind, WorkflowState


def _shown(text: object) -> str:
    """Stored text for a rich line: control characters escaped, never read as markup."""
    return escape(printable(text))


class ProgressDisplay:
    """One line per event: phase, step, agent, scores beside thresholds, decision source."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    def on_event(self, event: ProgressEvent) -> None:
        """Print the event."""
        s = event.state
        head = f"[dim]{_shown(s.workflow_id)} phase {s.phase}[/dim]"
        if event.kind == "decision" and event.decision is not None:
            r = event.decision
            signals = ", ".join(sig.name for sig in r.signals)
            llm = ""
            if r.llm is not None:
                llm = (
                    f" llm={r.llm.model} {r.llm.latency_ms:.0f} ms"
                    if r.llm.attempts
                    else f" llm={r.llm.outcome}"
                )
            self.console.print(
                f"{head} decision #{r.seq} [bold]{_shown(describe_decision(r.decision))}[/bold] "
                f"source={r.source.value} route={r.route.value}"
                + _shown(f" signals=[{signals}]" if signals else "")
                + _shown(llm)
            )
        elif event.kind == "step_started" and event.step is not None:
            spec = STEP_SPECS[event.step.step]
            self.console.print(
                f"{head} step {int(spec.step)} {spec.name} ({spec.agent.value}) "
                f"attempt {event.step.attempt} ..."
            )
        elif event.kind == "step_finished" and event.step is not None:
            rec = event.step
            if rec.error is not None:
                self.console.print(
                    f"{head} step {int(rec.step)} [red]failed[/red]: {rec.error.type}: "
                    f"{_shown(rec.error.message[:160])}"
                )
            else:
                line = scores_line(rec, event.config)
                self.console.print(
                    f"{head} step {int(rec.step)} [green]done[/green]"
                    + (f": {_shown(line)}" if line else "")
                )
        elif event.kind == "interrupted" and event.step is not None:
            self.console.print(
                f"{head} step {int(event.step.step)} was interrupted by a crash; it will be retried"
            )
        elif event.kind == "waiting" and event.gate is not None:
            self.console.print(
                f"{head} [yellow]waiting for a human at the {event.gate.value} gate[/yellow]"
            )
        elif event.kind == "finished":
            self.console.print(f"{head} [bold]{s.machine_state.value}[/bold]")


class TerminalHuman:
    """Asks at gates in an interactive terminal."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or getpass.getuser()

    async def ask(self, state: WorkflowState, gate: Gate) -> HumanInput | None:
        """Prompt for approve / reject / request changes / accept (at an escalation) / later."""
        return await asyncio.to_thread(self._ask, state, gate)

    def _ask(self, state: WorkflowState, gate: Gate) -> HumanInput | None:
        click.echo(f"\n{printable(state.workflow_id)} waits at the {gate.value} gate.", err=True)
        if gate is Gate.ESCALATION and state.decisions:
            click.echo(f"  reason: {printable(state.decisions[-1].decision.rationale)}", err=True)
        can_accept = HumanAnswerKind.ACCEPT in allowed_answers(state)
        offered = "  [a]pprove, [r]eject, request [c]hanges, "
        offered += "acce[p]t as it stands, " if can_accept else ""
        choice = click.prompt(
            offered + "or [l]ater",
            type=click.Choice(["a", "r", "c", *(["p"] if can_accept else []), "l"]),
            default="l",
            err=True,
        )
        if choice == "l":
            return None
        comment = click.prompt("  comment (optional)", default="", show_default=False, err=True)
        simple = {
            "a": HumanAnswerKind.APPROVE,
            "r": HumanAnswerKind.REJECT,
            "p": HumanAnswerKind.ACCEPT,
        }
        if choice in simple:
            return HumanInput(simple[choice], self.name, comment=comment or None)
        changes: list[str] = []
        while True:
            text = click.prompt(
                "  change (empty to finish)", default="", show_default=False, err=True
            )
            if not text:
                break
            changes.append(text)
        if not changes:
            return None
        return HumanInput(
            HumanAnswerKind.REQUEST_CHANGES, self.name, tuple(changes), comment or None
        )
