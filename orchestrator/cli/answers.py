"""``orchestrator approve``, ``reject`` and ``request-changes``: a human's answer at a gate.

An answer is recorded and nothing else changes; the workflow goes on at ``resume`` (or at
once with ``--resume``). A refused answer records nothing.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path

import click

from agents.workspace import line_comment
from orchestrator.cli.inputs import check_answer_text, check_workflow_id
from orchestrator.cli.options import data_dir_option, open_store
from orchestrator.cli.printable import printable
from orchestrator.cli.running import resume
from orchestrator.running.runner import answer_workflow
from state.clock import SystemClock
from state.steps import Gate, WorkflowStatus
from state.workflow import HumanAnswerKind


def _answer_command(kind: HumanAnswerKind) -> Callable[..., None]:
    def command(
        workflow_id: str,
        gate: str | None,
        comment: str | None,
        as_name: str | None,
        change: tuple[str, ...],
        resume_after: bool,
        data_dir: Path | None,
        at: tuple[tuple[str, str], ...] = (),
    ) -> None:
        check_workflow_id(workflow_id)
        check_answer_text("--comment", comment)
        check_answer_text("--as", as_name)
        for text in change:
            check_answer_text("--change", text)
        if kind is HumanAnswerKind.REQUEST_CHANGES and not change and not at:
            raise click.UsageError("say what to change: --change TEXT or --at FILE:LINE TEXT")
        with open_store(data_dir) as store:
            if at:
                stored = store.load(workflow_id)
                change = (*change, *(line_comment(stored.state.workspace, *a) for a in at))
            state = answer_workflow(
                store,
                SystemClock(),
                workflow_id,
                Gate(gate) if gate else None,
                kind,
                by=as_name or getpass.getuser(),
                changes=change,
                comment=comment,
            )
        answer = state.human_answers[-1]
        click.echo(
            f"{workflow_id}: {kind.value} recorded at the {answer.gate.value} gate by "
            f"{printable(answer.by)}"
        )
        if state.status is not WorkflowStatus.AWAITING_HUMAN:
            click.echo(f"{workflow_id} {state.machine_state.value}")  # a rejection ends it
        elif resume_after:
            ctx = click.get_current_context()
            ctx.invoke(
                resume,
                workflow_id=workflow_id,
                no_input=True,
                quiet=False,
                coordinator=None,
                base_url=None,
                model=None,
                data_dir=data_dir,
            )
        else:
            click.echo(f"continue with: orchestrator resume {workflow_id}")

    return command


def _make_answer_command(name: str, kind: HumanAnswerKind, help_text: str) -> click.Command:
    cmd = _answer_command(kind)
    cmd = data_dir_option(cmd)
    cmd = click.option(
        "--resume", "resume_after", is_flag=True, help="continue the workflow right away"
    )(cmd)
    if kind is HumanAnswerKind.REQUEST_CHANGES:
        cmd = click.option(
            "--at",
            nargs=2,
            multiple=True,
            metavar="FILE:LINE TEXT",
            help="a change at a line of a file, e.g. --at src/x.py:42 'handle None' (repeat)",
        )(cmd)
        cmd = click.option("--change", multiple=True, help="a change to make (repeat for several)")(
            cmd
        )
    else:
        cmd = click.option("--change", multiple=True, hidden=True)(cmd)
    cmd = click.option("--as", "as_name", help="who answers (default: your user name)")(cmd)
    cmd = click.option("--comment", help="why")(cmd)
    cmd = click.option(
        "--gate",
        type=click.Choice([g.value for g in Gate]),
        help="the gate you mean to answer (refused if it waits elsewhere)",
    )(cmd)
    cmd = click.argument("workflow_id")(cmd)
    return click.command(name=name, help=help_text)(cmd)


approve = _make_answer_command(
    "approve", HumanAnswerKind.APPROVE, "Approve the work at the gate the workflow waits at."
)
reject = _make_answer_command(
    "reject", HumanAnswerKind.REJECT, "Reject the work: the workflow ends as rejected."
)
accept = _make_answer_command(
    "accept",
    HumanAnswerKind.ACCEPT,
    "At an escalation, accept the work as it stands: an unconverged plan goes on to "
    "implementation, unconverged code to the final gate (or completes when that gate is off).",
)
request_changes = _make_answer_command(
    "request-changes",
    HumanAnswerKind.REQUEST_CHANGES,
    "Send the work back with change requests for the planner or programmer.",
)
