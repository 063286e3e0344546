"""Running, steering and inspecting stored workflows from the shell.

``run`` and ``resume`` drive a workflow until it finishes or waits for a human (in an
interactive terminal they ask at the gate instead). ``approve``, ``reject`` and
``request-changes`` record an answer; ``list``, ``status``, ``inspect`` and ``export``
read the store. Exit codes: 0 completed, rejected or waiting for a human; 1 failed.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from orchestrator import composition
from orchestrator.cli.core import describe_decision, describe_llm
from orchestrator.cli.display import ProgressDisplay, TerminalHuman
from orchestrator.cli.inputs import read_config
from orchestrator.composition import (
    build_agents,
    build_coordinator,
    open_chat_model,
    resolve_target,
)
from orchestrator.reporting import validation_rounds
from orchestrator.running.runner import Observer, WorkflowRunner, answer_workflow
from state.clock import SystemClock
from state.config import Coordinator, WorkflowConfig
from state.decision import DecisionRecord
from state.errors import ConfigError
from state.sqlite_store import default_data_dir
from state.steps import Gate, WorkflowStatus
from state.store import LedgerEntry, Store
from state.workflow import HumanAnswerKind, WorkflowState

F = TypeVar("F", bound=Callable[..., Any])


def data_dir_option(fn: F) -> F:
    """``--data-dir`` (or ORCHESTRATOR_DATA_DIR): where the workflow database lives."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="ORCHESTRATOR_DATA_DIR",
        help="directory of the workflow database [env: ORCHESTRATOR_DATA_DIR; default: "
        "~/.local/share/hybrid-orchestrator]",
    )(fn)


def llm_options(fn: F) -> F:
    """``--base-url`` / ``--model`` / ``--coordinator``."""
    fn = click.option("--model", help="model name (default: OPENAI_MODEL or the server's first)")(
        fn
    )
    fn = click.option(
        "--base-url",
        help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL; "
        "with neither it nor OPENAI_API_KEY, the embedded local model)",
    )(fn)
    return click.option(
        "--coordinator",
        type=click.Choice([c.value for c in Coordinator]),
        help="override the config's coordinator",
    )(fn)


def open_store(data_dir: Path | None) -> Store:
    """The store under ``data_dir`` (or the default data directory), from the composition root.

    A directory that cannot be written is opened read-only: list, status, inspect and
    export still work there, and writing commands fail with a message saying why.
    """
    return composition.open_store(data_dir or default_data_dir())


def _interactive(no_input: bool) -> bool:
    return not no_input and sys.stdin.isatty() and sys.stderr.isatty()


async def _drive(
    store: Store,
    config: WorkflowConfig,
    base_url: str | None,
    model: str | None,
    interactive: bool,
    quiet: bool,
    workflow_id: str | None,
    create: dict[str, Any] | None,
) -> WorkflowState:
    target = resolve_target(config.llm, base_url=base_url, model=model)
    if target.embedded and not quiet:
        click.echo(
            "starting the embedded SmolLM2-135M model on loopback "
            "(set OPENAI_BASE_URL / OPENAI_API_KEY to use another server) ...",
            err=True,
        )
    async with open_chat_model(target, config.llm) as chat:
        observers: list[Observer] = [] if quiet else [ProgressDisplay()]
        service = WorkflowRunner(
            store,
            build_coordinator(chat),
            build_agents(chat, compact=target.embedded),
            clock=SystemClock(),
            human=TerminalHuman() if interactive else None,
            observers=observers,
        )
        if create is not None:
            workflow_id = service.create(config=config, **create).workflow_id
            click.echo(f"workflow {workflow_id} created", err=True)
        assert workflow_id is not None
        return await service.run(workflow_id)


def _finish(state: WorkflowState) -> None:
    """Say where the workflow stands and how to go on; exit 1 if it failed."""
    wid = state.workflow_id
    gate = state.waiting_gate
    if gate is not None:
        click.echo(
            f"{wid} waits at the {gate.value} gate. Answer with:\n"
            f"  orchestrator approve {wid}\n"
            f"  orchestrator reject {wid} --comment TEXT\n"
            f"  orchestrator request-changes {wid} --change TEXT\n"
            f"then: orchestrator resume {wid}"
        )
    else:
        click.echo(
            f"{wid} {state.machine_state.value} ({len(state.decisions)} decisions); "
            f"workspace: {state.workspace}"
        )
    if state.status is WorkflowStatus.FAILED:
        sys.exit(1)


@click.command()
@click.option("--requirements", "-r", help="what to build, in words")
@click.option("--requirements-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_file", metavar="CONFIG.yaml", help="workflow configuration")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    help="where plans and code are written (default: DATA_DIR/workspaces/ID)",
)
@click.option("--id", "workflow_id", help="workflow id (default: generated)")
@click.option("--no-input", is_flag=True, help="never ask at gates, even in a terminal")
@click.option("--quiet", "-q", is_flag=True, help="no progress display")
@llm_options
@data_dir_option
def run(
    requirements: str | None,
    requirements_file: Path | None,
    config_file: str | None,
    workspace: Path | None,
    workflow_id: str | None,
    no_input: bool,
    quiet: bool,
    coordinator: str | None,
    base_url: str | None,
    model: str | None,
    data_dir: Path | None,
) -> None:
    """Run a new workflow from a requirement to validated code (or to a human gate)."""
    if bool(requirements) == bool(requirements_file):
        raise click.UsageError("give the requirement with --requirements or --requirements-file")
    text = requirements or requirements_file.read_text(encoding="utf-8")  # type: ignore[union-attr]
    if not text.strip():
        raise ConfigError("the requirement is empty")
    config = read_config(config_file)
    if coordinator:
        config = config.model_copy(update={"coordinator": Coordinator(coordinator)})
    with open_store(data_dir) as store:
        create = {
            "requirements": text.strip(),
            "workspace_root": (data_dir or default_data_dir()) / "workspaces",
            "workspace": workspace,
            "workflow_id": workflow_id,
        }
        state = asyncio.run(
            _drive(store, config, base_url, model, _interactive(no_input), quiet, None, create)
        )
    _finish(state)


@click.command()
@click.argument("workflow_id")
@click.option("--no-input", is_flag=True, help="never ask at gates, even in a terminal")
@click.option("--quiet", "-q", is_flag=True, help="no progress display")
@llm_options
@data_dir_option
def resume(
    workflow_id: str,
    no_input: bool,
    quiet: bool,
    coordinator: str | None,
    base_url: str | None,
    model: str | None,
    data_dir: Path | None,
) -> None:
    """Continue a workflow: after a crash, a restart, or a human answer."""
    with open_store(data_dir) as store:
        config = store.load(workflow_id).config
        if coordinator:
            config = config.model_copy(update={"coordinator": Coordinator(coordinator)})
        state = asyncio.run(
            _drive(store, config, base_url, model, _interactive(no_input), quiet, workflow_id, None)
        )
    _finish(state)


def _answer_command(kind: HumanAnswerKind) -> Callable[..., None]:
    def command(
        workflow_id: str,
        gate: str | None,
        comment: str | None,
        as_name: str | None,
        change: tuple[str, ...],
        resume_after: bool,
        data_dir: Path | None,
    ) -> None:
        with open_store(data_dir) as store:
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
            f"{workflow_id}: {kind.value} recorded at the {answer.gate.value} gate by {answer.by}"
        )
        if resume_after:
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
            "--change", multiple=True, required=True, help="a change to make (repeat for several)"
        )(cmd)
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
request_changes = _make_answer_command(
    "request-changes",
    HumanAnswerKind.REQUEST_CHANGES,
    "Send the work back with change requests for the planner or programmer.",
)


def _summary(state: WorkflowState) -> dict[str, Any]:
    last = state.decisions[-1] if state.decisions else None
    return {
        "workflow_id": state.workflow_id,
        "status": state.status.value,
        "phase": state.phase,
        "machine_state": state.machine_state.value,
        "current_step": int(state.current_step) if state.current_step else None,
        "last_completed_step": int(state.last_completed_step)
        if state.last_completed_step
        else None,
        "waiting_gate": state.waiting_gate.value if state.waiting_gate else None,
        "decisions": len(state.decisions),
        "plan_revisions": state.counters.plan_revisions,
        "code_refinements": state.counters.code_refinements,
        "llm_calls": state.counters.llm_calls,
        "tokens": state.counters.prompt_tokens + state.counters.completion_tokens,
        "last_decision": describe_decision(last.decision) if last else None,
        "workspace": state.workspace,
        "requirements": state.requirements,
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
    }


@click.command(name="list")
@click.option("--status", type=click.Choice([s.value for s in WorkflowStatus]))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@data_dir_option
def list_(status: str | None, as_json: bool, data_dir: Path | None) -> None:
    """List workflows: id, status, phase, step, waiting gate, last update."""
    with open_store(data_dir) as store:
        rows = store.list_workflows(WorkflowStatus(status) if status else None)
    if as_json:
        for r in rows:
            click.echo(
                json.dumps(
                    {
                        "workflow_id": r.workflow_id,
                        "status": str(r.status),
                        "phase": r.phase,
                        "machine_state": str(r.machine_state),
                        "current_step": r.current_step,
                        "waiting_gate": r.waiting_gate,
                        "updated_at": r.updated_at.isoformat(),
                    }
                )
            )
        return
    if not rows:
        click.echo("no workflows yet: start one with orchestrator run --requirements TEXT")
        return
    table = Table("id", "status", "phase", "state", "step", "waiting at", "updated")
    for r in rows:
        table.add_row(
            r.workflow_id,
            str(r.status),
            str(r.phase),
            str(r.machine_state),
            str(r.current_step or "-"),
            r.waiting_gate or "-",
            r.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@click.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def status(workflow_id: str, as_json: bool, data_dir: Path | None) -> None:
    """Where a workflow stands."""
    with open_store(data_dir) as store:
        stored = store.load(workflow_id)
        artifacts = [a.path for a in store.artifacts(workflow_id)]
    info = _summary(stored.state) | {"artifacts": artifacts}
    if as_json:
        click.echo(json.dumps(info))
        return
    for key, value in info.items():
        if value not in (None, [], ""):
            click.echo(f"{key:20s} {value}")


def _timeline_entry(rec: DecisionRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": rec.seq,
        "at": rec.decided_at.isoformat(),
        "source": rec.source.value,
        "route": rec.route.value,
        "signals": [f"{s.name}: {s.detail}" for s in rec.signals],
        "from": rec.state_before.value,
        "to": rec.state_after.value,
        "chosen": describe_decision(rec.decision),
        "rationale": rec.decision.rationale,
        "legal_actions": list(rec.legal_actions),
    }
    if rec.programmatic_alternative is not None:
        out["alternative"] = describe_decision(rec.programmatic_alternative)
    if rec.conflict_reason:
        out["conflict_reason"] = rec.conflict_reason
    if rec.llm is not None:
        out["llm"] = rec.llm.model_dump(mode="json")
    return out


@click.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def inspect(workflow_id: str, as_json: bool, data_dir: Path | None) -> None:
    """The decision timeline and every validation round's scores and verdict."""
    with open_store(data_dir) as store:
        stored = store.load(workflow_id)
    state, config = stored.state, stored.config
    timeline = [_timeline_entry(r) for r in state.decisions]
    rounds = validation_rounds(state, config)
    answers = [a.model_dump(mode="json") for a in state.human_answers]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "workflow": _summary(state),
                    "decisions": timeline,
                    "validation_rounds": rounds,
                    "human_answers": answers,
                }
            )
        )
        return
    s = _summary(state)
    click.echo(
        f"{workflow_id}: {s['machine_state']} (phase {s['phase']}), "
        f"{s['decisions']} decisions, {s['llm_calls']} LLM calls"
    )
    click.echo("\ndecisions:")
    for rec, e in zip(state.decisions, timeline, strict=True):
        click.echo(f"  #{e['seq']:<3} {e['from']} -> {e['to']}  [{e['source']}, {e['route']}]")
        click.echo(f"       chose: {e['chosen']}")
        if "alternative" in e:
            click.echo(f"       beat:  {e['alternative']}  ({e.get('conflict_reason', '')})")
        for sig in e["signals"]:
            click.echo(f"       signal {sig}")
        if rec.llm is not None:
            click.echo(f"       llm {describe_llm(rec.llm)}")
        click.echo(f"       why: {e['rationale']}")
    click.echo("\nvalidation rounds:")
    for r in rounds or []:
        click.echo(f"  step {r['step']}: {r['summary']}")
    if not rounds:
        click.echo("  none yet")
    if answers:
        click.echo("\nhuman answers:")
        for a in state.human_answers:
            extra = "; ".join(a.changes) + (f" ({a.comment})" if a.comment else "")
            click.echo(
                f"  {a.at:%Y-%m-%d %H:%M} {a.by} {a.answer.value} at {a.gate.value} "
                f"{extra}".rstrip()
            )


def _entry_json(entry: LedgerEntry) -> str:
    content: Any = entry.content
    if hasattr(content, "record"):
        payload = content.record.model_dump(mode="json")
    elif hasattr(content, "answer"):
        payload = content.answer.model_dump(mode="json")
    else:
        payload = {"event": content.event, **dict(content.data)}
    return json.dumps(
        {
            "workflow_id": entry.workflow_id,
            "seq": entry.seq,
            "kind": entry.kind.value,
            "recorded_at": entry.recorded_at.isoformat(),
            "payload": payload,
        }
    )


@click.command()
@click.argument("workflow_id")
@data_dir_option
def export(workflow_id: str, data_dir: Path | None) -> None:
    """The workflow's whole ledger as JSON lines (decisions, step results, answers, events)."""
    with open_store(data_dir) as store:
        entries = store.ledger(workflow_id)
    for entry in entries:
        click.echo(_entry_json(entry))


COMMANDS: tuple[click.Command, ...] = (
    run,
    resume,
    approve,
    reject,
    request_changes,
    list_,
    status,
    inspect,
    export,
)
