"""``orchestrator schema``, ``decide`` and ``graph``: the decision core from the shell."""

from __future__ import annotations

import json
from typing import Any

import click

from orchestrator.cli.printable import printable
from orchestrator.deciding.analysis import Analysis
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.graph import to_dot, to_mermaid
from orchestrator.reporting import describe_decision
from orchestrator.running.consistency import check_consistency
from state.config import WorkflowConfig
from state.decision import DecisionRecord, LLMCallInfo
from state.workflow import WorkflowState

SCHEMAS: dict[str, type[Any]] = {
    "config": WorkflowConfig,
    "state": WorkflowState,
    "decision": DecisionRecord,
}


@click.command()
@click.argument("kind", type=click.Choice(sorted(SCHEMAS)))
def schema(kind: str) -> None:
    """Print the JSON Schema of a config, a state snapshot or a decision record."""
    click.echo(json.dumps(SCHEMAS[kind].model_json_schema(), indent=2))


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(fmt: str) -> None:
    """Print the workflow state machine with its gates and both loops."""
    table = WorkflowMachine().table
    click.echo(to_mermaid(table) if fmt == "mermaid" else to_dot(table), nl=False)


def describe_llm(info: LLMCallInfo) -> str:
    """One line on a decision's LLM consultation (or why none was made)."""
    if info.attempts == 0:
        why = "; ".join(info.validation_errors)
        return f"not asked ({info.outcome})" + (f": {why}" if why else "")
    return (
        f"{info.model}, {info.prompt_tokens}+{info.completion_tokens} tokens, "
        f"{info.latency_ms:.0f} ms, {info.attempts} attempt(s), {info.outcome}"
    )


def analysis_json(analysis: Analysis, record: DecisionRecord | None = None) -> dict[str, Any]:
    """The analysis (and the decision taken, if any) as one JSON-ready object."""
    f = analysis.facts
    out: dict[str, Any] = {
        "workflow_id": f.state.workflow_id,
        "machine_state": f.machine_state.value,
        "phase": f.state.phase,
        "route": analysis.route.value,
        "signals": [s.model_dump(mode="json") for s in analysis.classification.signals],
        "legal_actions": list(analysis.legal_actions),
        "programmatic_decision": analysis.programmatic.model_dump(mode="json"),
    }
    if record is not None:
        out["decision"] = record.model_dump(mode="json")
    return out


def print_analysis(analysis: Analysis, record: DecisionRecord | None = None) -> None:
    """The analysis for people; text from the snapshot or a model goes through ``printable``."""
    p = printable
    f = analysis.facts
    s = f.state
    done = f"step {int(s.last_completed_step)} done" if s.last_completed_step else "no step done"
    click.echo(f"workflow {p(s.workflow_id)}: {f.machine_state.value} (phase {s.phase}, {done})")
    click.echo(f"route: {analysis.route.value}")
    if analysis.classification.signals:
        click.echo("signals:")
        for sig in analysis.classification.signals:
            click.echo(f"  - {sig.name} ({sig.route.value}): {p(sig.detail)}")
    else:
        click.echo("signals: none")
    click.echo("legal actions: " + (", ".join(analysis.legal_actions) or "none"))
    click.echo(f"programmatic decision: {p(describe_decision(analysis.programmatic))}")
    click.echo(f"  why: {p(analysis.programmatic.rationale)}")
    if record is not None:
        d = record.decision
        click.echo(f"decision ({record.source.value}): {p(describe_decision(d))}")
        if d.rationale and d is not analysis.programmatic:
            click.echo(f"  why: {p(d.rationale)}")
        if record.conflict_reason:
            click.echo(f"  conflict: {p(record.conflict_reason)}")
        if record.llm is not None:
            click.echo(f"  llm: {p(describe_llm(record.llm))}")
            if record.llm.attempts:
                for err in record.llm.validation_errors:
                    click.echo(f"    rejected: {p(err)}")


def check(state: WorkflowState, config: WorkflowConfig) -> None:
    """Refuse an inconsistent state before anything decides on it."""
    check_consistency(state, config)
