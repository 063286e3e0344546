"""Terminal rendering: the progress displays and the interactive gate prompt.

``LiveDisplay`` is for an interactive terminal: a status area redrawn in place (the step
in flight with a spinner and its elapsed time, decisions by source, LLM calls and tokens,
the last validation's scores against their thresholds, the warnings count) under a
scrolling history of decisions and finished steps. ``ProgressDisplay`` prints one plain
line per event, for pipes, CI and logs.
"""

from __future__ import annotations

import asyncio
import getpass
from collections import Counter
from collections.abc import Callable
from types import TracebackType

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from agents.human import HumanInput
from orchestrator.cli.printable import printable
from orchestrator.logsetup import LogTally
from orchestrator.reporting import describe_decision, scores_line
from orchestrator.running.runner import ProgressEvent
from orchestrator.running.updates import allowed_answers
from state.config import WorkflowConfig
from state.steps import STEP_SPECS, Gate
from state.usage import Purpose
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState


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
                sha = getattr(rec.result, "commit", None)  # a --repo round's commit
                self.console.print(
                    f"{head} step {int(rec.step)} [green]done[/green]"
                    + (f": {_shown(line)}" if line else "")
                    + (f" (commit {sha[:12]})" if sha else "")
                )
        elif event.kind == "step_progress" and event.step is not None and event.detail:
            step = int(event.step.step)
            self.console.print(f"{head} step {step} [dim]{_shown(event.detail)}[/dim]")
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


def warnings_line(tally: LogTally) -> str | None:
    """``3 warnings, see <path>``, or None while there are none."""
    n = tally.warnings
    if n == 0:
        return None
    return f"{n} warning{'s' if n != 1 else ''}, see {printable(tally.path)}"


def last_scores(state: WorkflowState, config: WorkflowConfig) -> str | None:
    """The scores line of the workflow's latest completed validation, if any."""
    for rec in reversed(state.history):
        if rec.status is StepStatus.COMPLETED:
            line = scores_line(rec, config)
            if line:
                return f"step {int(rec.step)} attempt {rec.attempt}: {line}"
    return None


def decisions_line(state: WorkflowState) -> str:
    """How many decisions were taken, split by who took them."""
    by_source = Counter(r.source.value for r in state.decisions)
    split = ", ".join(f"{source} {n}" for source, n in by_source.most_common())
    return f"decisions {len(state.decisions)}" + (f" ({split})" if split else "")


def llm_line(state: WorkflowState) -> str:
    """LLM calls and tokens so far, with the split by purpose (purposes with calls only)."""
    c = state.counters
    line = f"LLM {c.llm_calls} calls, {c.prompt_tokens + c.completion_tokens:,} tokens"
    parts = []
    for purpose in Purpose:
        used = c.llm_usage.of(purpose)
        if used.calls:
            parts.append(f"{purpose.value} {used.calls}/{used.tokens:,}")
    cost = c.llm_cost_usd
    if cost is not None:
        line += f", ~${cost:.4f}"
    return line + (f" ({', '.join(parts)})" if parts else "")


class LiveDisplay:
    """A status area redrawn in place on an interactive terminal, history scrolling above.

    Use it as a context manager (or call ``close``) so the terminal is restored even when
    the run raises. ``pause`` stops redrawing and leaves the area as it stands (before a
    prompt, so the prompt is not drawn over); the next event starts redrawing again.

    Args:
        console: the terminal (stderr by default).
        tally: the run's log file and warning count, shown as one line.
        get_time: the monotonic clock for elapsed times (tests pass their own).
        refresh_per_second: how often the spinner and elapsed time are redrawn.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        tally: LogTally | None = None,
        get_time: Callable[[], float] | None = None,
        refresh_per_second: float = 8,
    ) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.tally = tally
        self._lines = ProgressDisplay(self.console)
        self._steps = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            get_time=get_time,
        )
        self._task: TaskID | None = None
        self._note: str | None = None  # the running step's last progress line
        self._event: ProgressEvent | None = None
        self._live = Live(
            console=self.console,
            refresh_per_second=refresh_per_second,
            get_renderable=self.renderable,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def renderable(self) -> RenderableType:
        """What the status area shows now."""
        rows: list[RenderableType] = []
        if self._task is not None:
            rows.append(self._steps)  # the step or decision in flight
            if self._note is not None:
                rows.append(
                    Text("  " + printable(self._note), "dim", no_wrap=True, overflow="ellipsis")
                )
        event = self._event
        if event is not None:
            state = event.state
            rows.append(Text(decisions_line(state)))
            rows.append(Text(llm_line(state)))
            scores = last_scores(state, event.config)
            rows.append(Text("last validation: " + printable(scores or "none yet")))
        warned = warnings_line(self.tally) if self.tally is not None else None
        if warned is not None:
            rows.append(Text(warned, "yellow"))
        return Group(*rows)

    def on_event(self, event: ProgressEvent) -> None:
        """Record the event: history lines above, the status area redrawn."""
        self._event = event
        if event.kind == "step_progress":  # under the spinner, not a line of its own
            self._note = event.detail
        elif event.kind == "step_started" and event.step is not None:
            spec = STEP_SPECS[event.step.step]
            self._begin(
                f"step {int(spec.step)} {spec.name} ({spec.agent.value}) "
                f"attempt {event.step.attempt}"
            )
        elif event.kind in {"step_finished", "interrupted", "decision"}:
            self._begin(f"deciding decision #{len(event.state.decisions) + 1}")
        if event.kind not in ("step_started", "step_progress"):
            self._lines.on_event(event)  # the step in flight is the spinner, not a line
        if event.kind in ("waiting", "finished"):
            self._end_step()
            self.pause()
        elif not self._live.is_started:
            self._live.start()
        if self._live.is_started:
            self._live.refresh()

    def _begin(self, description: str) -> None:
        """Show ``description`` with a spinner and its own elapsed time, replacing the last."""
        self._end_step()
        self._task = self._steps.add_task(description, total=None)

    def _end_step(self) -> None:
        self._note = None
        if self._task is not None:
            self._steps.remove_task(self._task)
            self._task = None

    def pause(self) -> None:
        """Leave the status area as it stands on screen and stop redrawing it."""
        if self._live.is_started:
            self._live.stop()

    def close(self) -> None:
        """Stop redrawing; safe to call more than once."""
        self.pause()

    def __enter__(self) -> LiveDisplay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


CHANGE_GATES = frozenset({Gate.CODE_REVIEW, Gate.FINAL})
"""The gates where the terminal shows the change before asking."""


class TerminalHuman:
    """Asks at gates in an interactive terminal.

    Args:
        name: who answers (default: the login name).
        before_asking: called before each prompt (a live display takes itself off screen).
    """

    def __init__(
        self,
        name: str | None = None,
        before_asking: Callable[[], None] | None = None,
        show_change: Callable[[WorkflowState], str] | None = None,
    ) -> None:
        self.name = name or getpass.getuser()
        self.before_asking = before_asking
        self.show_change = show_change

    async def ask(self, state: WorkflowState, gate: Gate) -> HumanInput | None:
        """Prompt for approve / reject / request changes / accept (at an escalation) / later."""
        return await asyncio.to_thread(self._ask, state, gate)

    def _ask(self, state: WorkflowState, gate: Gate) -> HumanInput | None:
        if self.before_asking is not None:
            self.before_asking()
        click.echo(f"\n{printable(state.workflow_id)} waits at the {gate.value} gate.", err=True)
        if gate is Gate.ESCALATION and state.decisions:
            click.echo(f"  reason: {printable(state.decisions[-1].decision.rationale)}", err=True)
        if gate in CHANGE_GATES and self.show_change is not None:
            # what is approved is the change: show it (a terminal keeps tabs and newlines)
            text = self.show_change(state)
            click.echo(printable(text, keep_newlines=True), err=True)
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
