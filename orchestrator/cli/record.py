"""Learning from the decision record: ``decisions`` (query it) and ``replay`` (re-decide it).

``decisions`` reads every workflow's ledger through the store protocol and prints the
decisions that match all the filters given, one row each: workflow, when, the machine
state, route and signals, who decided, the action taken and the alternative it beat, the
confidence, and for LLM consultations the model, tokens and latency. Filters are checked
before the store is read, and a bad one is one line on stderr with exit code 2. With
``--shadow`` the shadow answers are listed too (source ``shadow_llm`` or ``shadow_rules``,
``seq`` the decision they shadow, ``alternative`` the applied action, ``llm_outcome`` the
shadow outcome); without it they are left out.

``replay`` rebuilds the state before each recorded decision and decides it again (see
``orchestrator.running.replay``), then prints what would flip.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.inputs import check_workflow_id
from orchestrator.cli.llm_access import UnreachableModel, enter_llm
from orchestrator.cli.options import data_dir_option, open_store
from orchestrator.cli.printable import printable
from orchestrator.composition import resolve_target
from orchestrator.deciding.actions import trigger_of
from orchestrator.deciding.classifier import SignalName
from orchestrator.deciding.llm_decider import TEMPLATE as DECISION_TEMPLATE
from orchestrator.deciding.llm_decider import LLMDecider
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.llm.cassette import Cassette
from orchestrator.llm.protocol import ChatModel
from orchestrator.running.replay import Replayer, ReplayReport
from prompt_templates.loader import TemplateLoader
from state.clock import SystemClock
from state.config import Coordinator, WorkflowConfig, load_config
from state.decision import DecisionRecord, DecisionSource, Route, ShadowRecord
from state.errors import ConfigError, LLMError
from state.steps import MachineState
from state.store import DecisionEntry, LedgerKind, ShadowEntry, Store
from state.validation import read_utf8

FORMATS = ("table", "json", "csv")
_REPLAYED = (LedgerKind.DECISION, LedgerKind.STEP_RESULT, LedgerKind.HUMAN_ANSWER)
COLUMNS = (
    "workflow_id",
    "seq",
    "decided_at",
    "machine_state",
    "route",
    "signals",
    "source",
    "action",
    "alternative",
    "confidence",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "llm_outcome",
)
_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """Which decisions a query keeps: every field given must match (None: any).

    Within one field, any of the values given matches (``--source llm --source
    llm_override``); ``signals`` matches a decision that has at least one of them.
    """

    sources: frozenset[DecisionSource] | None = None
    routes: frozenset[Route] | None = None
    signals: frozenset[str] | None = None
    states: frozenset[MachineState] | None = None
    models: frozenset[str] | None = None
    since: datetime | None = None

    def matches(self, record: DecisionRecord | ShadowRecord) -> bool:
        """Whether ``record`` passes every filter (``sources`` applies to decisions only)."""
        if isinstance(record, DecisionRecord):
            if self.sources is not None and record.source not in self.sources:
                return False
            state = record.state_before
        else:
            state = record.state
        if self.routes is not None and record.route not in self.routes:
            return False
        if self.states is not None and state not in self.states:
            return False
        if self.signals is not None and not any(s.name in self.signals for s in record.signals):
            return False
        if self.models is not None and (record.llm is None or record.llm.model not in self.models):
            return False
        return self.since is None or record.decided_at >= self.since


def _choices(values: Iterable[str], kind: type[Any], what: str) -> frozenset[Any] | None:
    """``values`` as members of the enum ``kind``, or a one-line ConfigError naming them."""
    given = tuple(values)
    if not given:
        return None
    known = {m.value: m for m in kind}
    bad = [v for v in given if v not in known]
    if bad:
        raise ConfigError(
            f"unknown {what} {', '.join(repr(b) for b in bad)}; nothing was read; choose "
            f"from {', '.join(known)}"
        )
    return frozenset(known[v] for v in given)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or date-time, or an age counted back from ``now``.

    A date-time that names no zone is UTC; an age is ``30m``, ``12h`` or ``7d``.

    Raises:
        ConfigError: neither form.
    """
    text = text.strip()
    ago = _AGO.match(text)
    if ago:
        delta = timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is neither a date (2026-12-01), a date-time "
            "(2026-12-01T08:00:00+00:00) nor an age (30m, 12h, 7d); nothing was read"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def build_filter(
    *,
    sources: Iterable[str] = (),
    routes: Iterable[str] = (),
    signals: Iterable[str] = (),
    states: Iterable[str] = (),
    models: Iterable[str] = (),
    since: str | None = None,
) -> DecisionFilter:
    """The filter the command-line values describe, each value checked.

    Raises:
        ConfigError: an unknown source, route, signal or state, or an unreadable ``since``.
    """
    model_set = frozenset(models)
    return DecisionFilter(
        sources=_choices(sources, DecisionSource, "source"),
        routes=_choices(routes, Route, "route"),
        signals=_choices(signals, SignalName, "signal"),
        states=_choices(states, MachineState, "machine state"),
        models=model_set or None,
        since=parse_since(since) if since is not None else None,
    )


def matching_decisions(
    store: Store, flt: DecisionFilter, workflow_ids: Iterable[str] = ()
) -> Iterator[tuple[str, DecisionRecord]]:
    """Every decision ``flt`` keeps, as ``(workflow_id, record)``, in ledger order.

    Of the named workflows (all of them when none is named), workflow by workflow.

    Raises:
        UnknownWorkflowError: a named workflow is not in the store.
    """
    yield from _kept(store, flt, workflow_ids, LedgerKind.DECISION)


def matching_shadows(
    store: Store, flt: DecisionFilter, workflow_ids: Iterable[str] = ()
) -> Iterator[tuple[str, ShadowRecord]]:
    """Every shadow answer ``flt`` keeps, as ``(workflow_id, record)``, in ledger order.

    Raises:
        UnknownWorkflowError: a named workflow is not in the store.
    """
    yield from _kept(store, flt, workflow_ids, LedgerKind.SHADOW)


def _kept(
    store: Store, flt: DecisionFilter, workflow_ids: Iterable[str], kind: LedgerKind
) -> Iterator[tuple[str, Any]]:
    """The records of the ledger entries of ``kind`` that ``flt`` keeps."""
    ids = list(workflow_ids) or [w.workflow_id for w in store.list_workflows()]
    for wid in ids:
        for entry in store.ledger(wid, kinds=(kind,)):
            content = entry.content
            if isinstance(content, DecisionEntry | ShadowEntry) and flt.matches(content.record):
                yield wid, content.record


def decision_row(workflow_id: str, record: DecisionRecord | ShadowRecord) -> dict[str, Any]:
    """One decision (or shadow answer) as a flat row of ``COLUMNS``."""
    info = record.llm
    asked = info is not None and info.attempts > 0
    if isinstance(record, DecisionRecord):
        alt = record.programmatic_alternative
        head: dict[str, Any] = {
            "seq": record.seq,
            "machine_state": record.state_before.value,
            "source": record.source.value,
            "action": trigger_of(record.decision),
            "alternative": trigger_of(alt) if alt is not None else None,
            "confidence": record.decision.confidence,
        }
        outcome = info.outcome.value if info is not None else None
    else:
        answer = record.decision
        head = {
            "seq": record.decision_seq,
            "machine_state": record.state.value,
            "source": f"shadow_{record.decider.value}",
            "action": trigger_of(answer) if answer is not None else "-",
            "alternative": trigger_of(record.applied),
            "confidence": answer.confidence if answer is not None else None,
        }
        outcome = record.outcome.value
    return {
        "workflow_id": workflow_id,
        "seq": head["seq"],
        "decided_at": record.decided_at.isoformat(),
        "machine_state": head["machine_state"],
        "route": record.route.value,
        "signals": [s.name for s in record.signals],
        "source": head["source"],
        "action": head["action"],
        "alternative": head["alternative"],
        "confidence": head["confidence"],
        "model": info.model if asked and info is not None else None,
        "prompt_tokens": info.prompt_tokens if info is not None else 0,
        "completion_tokens": info.completion_tokens if info is not None else 0,
        "latency_ms": round(info.latency_ms, 1) if info is not None else 0.0,
        "llm_outcome": outcome,
    }


def render_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """The rows as JSON lines, CSV with a header, or a table for people."""
    if fmt == "json":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "signals": " ".join(r["signals"])})
        return out.getvalue()
    if not rows:
        return "no decision matches\n"
    table = Table(
        "workflow", "#", "state", "route", "signals", "source", "action", "alternative", "conf",
        "model", "tokens", "ms",
    )  # fmt: skip
    for r in rows:
        cells = (
            r["workflow_id"],
            str(r["seq"]),
            r["machine_state"],
            r["route"],
            ",".join(r["signals"]) or "-",
            r["source"],
            r["action"],
            r["alternative"] or "-",
            f"{r['confidence']:.2f}" if r["confidence"] is not None else "-",
            r["model"] or "-",
            str(r["prompt_tokens"] + r["completion_tokens"]),
            f"{r['latency_ms']:.0f}",
        )
        # Text, not str: stored ids and model names are shown as they are, never as markup.
        table.add_row(*(Text(printable(c)) for c in cells))
    buffer = io.StringIO()
    Console(file=buffer, width=None if sys.stdout.isatty() else 200).print(table)
    return buffer.getvalue()


@click.command()
@click.option("--source", "sources", multiple=True, help="who decided (repeatable)")
@click.option("--route", "routes", multiple=True, help="standard, complex or borderline")
@click.option("--signal", "signals", multiple=True, help="a classifier signal that fired")
@click.option("--state", "states", multiple=True, help="the machine state decided in")
@click.option("--model", "models", multiple=True, help="the LLM model consulted")
@click.option("--workflow", "workflows", multiple=True, help="only this workflow (repeatable)")
@click.option("--since", help="ISO date or date-time, or an age: 30m, 12h, 7d")
@click.option("--format", "fmt", default="table", show_default=True, help="table, json or csv")
@click.option("--shadow", is_flag=True, help="list the shadow answers too (never applied)")
@data_dir_option
def decisions(
    sources: tuple[str, ...],
    routes: tuple[str, ...],
    signals: tuple[str, ...],
    states: tuple[str, ...],
    models: tuple[str, ...],
    workflows: tuple[str, ...],
    since: str | None,
    fmt: str,
    shadow: bool,
    data_dir: Path | None,
) -> None:
    """Every recorded decision, across workflows, that matches all the filters given."""
    # Checked here rather than by click, whose usage screen is not one line.
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    flt = build_filter(
        sources=sources, routes=routes, signals=signals, states=states, models=models, since=since
    )
    for wid in workflows:
        check_workflow_id(wid)
    with open_store(data_dir) as store:
        rows = [decision_row(w, r) for w, r in matching_decisions(store, flt, workflows)]
        if shadow:
            rows += [decision_row(w, r) for w, r in matching_shadows(store, flt, workflows)]
    rows.sort(key=lambda r: (r["decided_at"], r["workflow_id"], r["seq"]))
    click.echo(render_rows(rows, fmt), nl=False)


def _prompt_loader(stack: ExitStack, prompt_file: str | None) -> TemplateLoader:
    """The templates with ``prompt_file`` as the decision prompt, checked now."""
    if prompt_file is None:
        return TemplateLoader()
    text = read_utf8(Path(prompt_file), "prompt template", ConfigError)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replay-prompt-")))
    (folder / f"{DECISION_TEMPLATE}.md").write_text(text, encoding="utf-8")
    loader = TemplateLoader(folder)
    loader.load(DECISION_TEMPLATE)  # a broken template is refused before anything runs
    return loader


async def _replay_all(
    store: Store,
    ids: list[str],
    config: WorkflowConfig | None,
    coordinator: str | None,
    live: bool,
    target_flags: tuple[str | None, str | None],
    templates: TemplateLoader,
) -> list[ReplayReport]:
    """Replay each workflow of ``ids``, with the cassette or with a live model."""
    machine = WorkflowMachine()
    rebuild = DecisionPipeline(machine, SystemClock())
    reports: list[ReplayReport] = []
    async with AsyncExitStack() as stack:
        chat: ChatModel | None = None
        for wid in ids:
            stored = store.load(wid)
            cfg = config or stored.config
            if coordinator is not None:
                cfg = cfg.model_copy(update={"coordinator": Coordinator(coordinator)})
            cassette: Cassette | None = None
            if live:
                if chat is None:
                    base_url, model = target_flags
                    target = resolve_target(cfg.llm, base_url=base_url, model=model)
                    try:
                        chat = await enter_llm(stack, target, cfg.llm)
                    except LLMError as exc:  # like a failing call: every LLM decision falls back
                        chat = UnreachableModel(str(exc), target.model)
                decider = LLMDecider(chat, machine, templates)
                pipeline = DecisionPipeline(machine, SystemClock(), decider, script_model=chat)
            else:
                cassette = Cassette()
                decider = LLMDecider(cassette, machine, templates)
                pipeline = DecisionPipeline(machine, SystemClock(), decider)
            replayer = Replayer(rebuild, pipeline, cassette)
            # Shadow answers and events were never applied: replay reads what the runner did.
            ledger = store.ledger(wid, kinds=_REPLAYED)
            reports.append(await replayer.replay(stored, ledger, cfg))
    return reports


def _report_json(report: ReplayReport, cassette: bool) -> dict[str, Any]:
    first = report.diverged_at
    return {
        "workflow_id": report.workflow_id,
        "mode": "cassette" if cassette else "live",
        "decisions": report.decisions,
        "identical": report.identical,
        "llm_requests": report.llm_requests,
        "flips": [
            {
                "seq": f.seq,
                "machine_state": f.machine_state,
                "signals": list(f.signals),
                "old_action": f.old_action,
                "new_action": f.new_action,
                "old_source": f.old_source,
                "new_source": f.new_source,
            }
            for f in report.flips
        ],
        "diverged_at": first.seq if first is not None else None,
    }


def _report_text(report: ReplayReport, cassette: bool) -> str:
    how = (
        f"cassette: recorded LLM answers, {report.llm_requests} answered from the recording, "
        "none sent"
        if cassette
        else f"live: {report.llm_requests} LLM request(s)"
    )
    lines = [
        f"workflow {printable(report.workflow_id)}: {report.decisions} decisions replayed "
        f"({how}); {report.identical} identical, {len(report.flips)} would flip"
    ]
    for f in report.flips:
        signals = ",".join(f.signals) or "no signals"
        lines.append(
            f"  #{f.seq} {f.machine_state} [{printable(signals)}]: {f.old_action} "
            f"({f.old_source}) -> {f.new_action} ({f.new_source})"
        )
    first = report.diverged_at
    if first is not None:
        lines.append(
            f"  the path would first diverge at decision #{first.seq} ({first.machine_state}); "
            "later decisions were replayed on the recorded path"
        )
    return "\n".join(lines)


@click.command()
@click.argument("workflow_id", required=False)
@click.option("--all", "everything", is_flag=True, help="replay every workflow in the store")
@click.option(
    "--coordinator",
    type=click.Choice([c.value for c in Coordinator]),
    help="decide again under this coordinator mode",
)
@click.option("--model", help="decide again with this model (a live replay)")
@click.option("--base-url", help="decide again with the model at this endpoint (a live replay)")
@click.option(
    "--prompt", "prompt_file", metavar="FILE", help="a new orchestrator_decision template"
)
@click.option("--config", "config_file", metavar="FILE", help="decide again under this config")
@click.option(
    "--live", is_flag=True, help="ask the configured model even with nothing else changed"
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per workflow")
@data_dir_option
def replay(
    workflow_id: str | None,
    everything: bool,
    coordinator: str | None,
    model: str | None,
    base_url: str | None,
    prompt_file: str | None,
    config_file: str | None,
    live: bool,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """Re-decide a workflow's recorded decisions and say which would flip.

    The state before each decision is rebuilt from the ledger and decided again. Without
    --model, --base-url, --prompt or --live, the LLM's recorded answers are replayed (the
    cassette): no model is asked, and with nothing changed every decision comes out as it
    was recorded. --config and --coordinator change the rules or the mode; a state the
    recording never put to the LLM then falls back as if the LLM were unreachable.
    """
    if everything == (workflow_id is not None):
        raise ConfigError("replay needs one workflow id or --all (not both); nothing was replayed")
    if workflow_id is not None:
        check_workflow_id(workflow_id)
    config = load_config(config_file) if config_file else None
    is_live = live or model is not None or base_url is not None or prompt_file is not None
    with ExitStack() as stack:
        templates = _prompt_loader(stack, prompt_file)
        store = stack.enter_context(open_store(data_dir))
        ids = [workflow_id] if workflow_id else [w.workflow_id for w in store.list_workflows()]
        reports = asyncio.run(
            _replay_all(store, ids, config, coordinator, is_live, (base_url, model), templates)
        )
    for report in reports:
        if as_json:
            click.echo(json.dumps(_report_json(report, not is_live)))
        else:
            click.echo(_report_text(report, not is_live))
