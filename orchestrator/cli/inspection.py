"""Reading the store from the shell: ``list``, ``status``, ``inspect``, ``export``, ``state``.

Stored text (requirements, rationales, comments, signals) is shown through ``printable``,
so nothing stored can send control sequences to the terminal. ``state`` prints a snapshot
in the form ``decide`` reads, to ask what another coordinator or model would do there.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.core import describe_llm
from orchestrator.cli.inputs import check_workflow_id
from orchestrator.cli.options import data_dir_option, open_store
from orchestrator.cli.printable import printable
from orchestrator.reporting import (
    MAX_DIFF_CHARS,
    change_text,
    change_view,
    describe_decision,
    repository_line,
    repository_summary,
    validation_rounds,
)
from state.clock import SystemClock
from state.config import dump_config
from state.decision import DecisionRecord
from state.errors import ConfigError
from state.steps import WorkflowStatus
from state.store import Lease, LedgerEntry, StoredWorkflow, lease_is_stale
from state.usage import usage_summary
from state.workflow import WorkflowState


def _cost(cost: float | None) -> float | None:
    """An estimated cost for display, None (not shown) for unpriced models."""
    return round(cost, 6) if cost is not None else None


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
        "llm_cost_usd": _cost(state.counters.llm_cost_usd),
        "llm_usage": usage_summary(state.counters.llm_usage),
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
        cells = (
            r.workflow_id,
            str(r.status),
            str(r.phase),
            str(r.machine_state),
            str(r.current_step or "-"),
            r.waiting_gate or "-",
            r.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        # Text, not str: a stored id is shown as it is, never read as rich markup.
        table.add_row(*(Text(printable(c)) for c in cells))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _load(data_dir: Path | None, workflow_id: str) -> tuple[StoredWorkflow, list[str]]:
    """The stored workflow and its artifacts' paths, the id checked first."""
    stored, artifacts, _lease = _load_with_lease(data_dir, workflow_id)
    return stored, artifacts


def _load_with_lease(
    data_dir: Path | None, workflow_id: str
) -> tuple[StoredWorkflow, list[str], Lease | None]:
    """``_load``, and the workflow's lease when a live process holds it."""
    check_workflow_id(workflow_id)
    with open_store(data_dir) as store:
        stored = store.load(workflow_id)
        artifacts = [a.path for a in store.artifacts(workflow_id)]
        lease = store.lease(workflow_id)
    now = SystemClock().now()
    if lease is not None and lease_is_stale(lease, now=now, host=socket.gethostname()):
        lease = None
    return stored, artifacts, lease


def _run_by(lease: Lease | None) -> dict[str, Any]:
    """Who drives the workflow now and what it last said it is doing (``Lease.activity``)."""
    if lease is None:
        return {}
    return {"run_by": lease.describe(), "activity": lease.activity}


@click.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def status(workflow_id: str, as_json: bool, data_dir: Path | None) -> None:
    """Where a workflow stands."""
    stored, artifacts, lease = _load_with_lease(data_dir, workflow_id)
    info = (
        _summary(stored.state)
        | _run_by(lease)
        | repository_summary(stored.config)
        | {"artifacts": artifacts}
    )
    if as_json:
        click.echo(json.dumps(info))
        return
    for key, value in info.items():
        if value not in (None, [], ""):
            click.echo(f"{key:20s} {printable(value)}")


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
    stored, _ = _load(data_dir, workflow_id)
    state, config = stored.state, stored.config
    timeline = [_timeline_entry(r) for r in state.decisions]
    rounds = validation_rounds(state, config)
    answers = [a.model_dump(mode="json") for a in state.human_answers]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "workflow": _summary(state) | repository_summary(config),
                    "decisions": timeline,
                    "validation_rounds": rounds,
                    "human_answers": answers,
                    "change": change_view(state, config),
                }
            )
        )
        return
    p = printable
    s = _summary(state)
    click.echo(
        f"{workflow_id}: {s['machine_state']} (phase {s['phase']}), "
        f"{s['decisions']} decisions, {s['llm_calls']} LLM calls"
        + (f" (~${s['llm_cost_usd']:.4f})" if s["llm_cost_usd"] is not None else "")
    )
    branch = repository_line(config)
    if branch:
        click.echo(p(branch))
    click.echo("\ndecisions:")
    for rec, e in zip(state.decisions, timeline, strict=True):
        click.echo(f"  #{e['seq']:<3} {e['from']} -> {e['to']}  [{e['source']}, {e['route']}]")
        click.echo(f"       chose: {p(e['chosen'])}")
        if "alternative" in e:
            click.echo(f"       beat:  {p(e['alternative'])}  ({p(e.get('conflict_reason', ''))})")
        for sig in e["signals"]:
            click.echo(f"       signal {p(sig)}")
        if rec.llm is not None:
            click.echo(f"       llm {p(describe_llm(rec.llm))}")
        click.echo(f"       why: {p(e['rationale'])}")
    click.echo("\nvalidation rounds:")
    for r in rounds or []:
        click.echo(f"  step {r['step']}: {p(r['summary'])}")
    if not rounds:
        click.echo("  none yet")
    if any(r.step.value in (4, 6) for r in state.history):
        click.echo("\nchange:")
        text = change_text(state, config, max_diff_chars=MAX_DIFF_CHARS)
        click.echo(textwrap.indent(p(text, keep_newlines=True), "  "))
    if answers:
        click.echo("\nhuman answers:")
        for a in state.human_answers:
            extra = "; ".join(a.changes) + (f" ({a.comment})" if a.comment else "")
            click.echo(
                f"  {a.at:%Y-%m-%d %H:%M} {p(a.by)} {a.answer.value} at {a.gate.value} "
                f"{p(extra)}".rstrip()
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
    check_workflow_id(workflow_id)
    with open_store(data_dir) as store:
        entries = store.ledger(workflow_id)
    for entry in entries:
        click.echo(_entry_json(entry))


@click.command(name="state")
@click.argument("workflow_id")
@click.option(
    "--config-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also write the workflow's config to this file (YAML, as decide --config reads it)",
)
@data_dir_option
def state_(workflow_id: str, config_out: Path | None, data_dir: Path | None) -> None:
    """Print a workflow's state snapshot as JSON, the form ``decide STATE.json`` reads.

    ``orchestrator state ID > s.json`` then ``orchestrator decide s.json --config c.yaml``
    asks what another coordinator or model would decide where the workflow stands.
    """
    stored, _ = _load(data_dir, workflow_id)
    if config_out is not None:
        try:
            config_out.write_text(dump_config(stored.config), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{config_out}: cannot write the configuration ({exc.strerror or exc}); "
                "choose another --config-out"
            ) from exc
    # Through json.dumps: every non-ASCII character is escaped, so even a snapshot holding a
    # bidi override can be printed to a terminal as it is.
    click.echo(json.dumps(json.loads(stored.state.model_dump_json()), indent=2))
