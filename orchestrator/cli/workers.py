"""``orchestrator submit``, ``worker`` and ``workers``: a pool of workers on many hosts.

``submit`` stores and queues a workflow without running it (the same inputs as ``run``) and
prints its id. ``worker`` claims queued workflows and drives up to ``--concurrency`` of them
at once until SIGTERM or Ctrl-C, when it hands back what it holds (their leases released,
so another worker takes them over at once). ``workers`` lists the workers the store knows,
with what each holds and whether its heartbeat is stale, and the queue's counts.

A worker prints one line per event on stderr (claimed, waits at a gate, finished, handed
back), prefixed with the time; ``--quiet`` prints only errors.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import AsyncExitStack, suppress
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from orchestrator.cli.options import (
    data_dir_option,
    new_workflow_options,
    open_store,
    resolve_data_dir,
)
from orchestrator.cli.printable import printable
from orchestrator.cli.running import (
    made_workspace,
    read_new_workflow,
    refuse_taken,
    workspace_path,
)
from orchestrator.composition import WorkerRunners, import_chat_stack
from orchestrator.running.worker import (
    Worker,
    WorkerEvent,
    WorkerEventKind,
    WorkerSettings,
    queue_of,
    submit,
)
from state.clock import SystemClock
from state.config import Coordinator
from state.queue import QueueStatus, WorkQueue
from state.store import Store


@click.command("submit")
@new_workflow_options
@click.option(
    "--coordinator",
    type=click.Choice([c.value for c in Coordinator]),
    help="override the config's coordinator",
)
@data_dir_option
def submit_command(
    requirements: str | None,
    requirements_file: Path | None,
    config_file: str | None,
    workspace: Path | None,
    workflow_id: str | None,
    repo: Path | None,
    base: str | None,
    coordinator: str | None,
    data_dir: Path | None,
) -> None:
    """Queue a new workflow for the workers without running it; print its id."""
    new = read_new_workflow(
        requirements=requirements,
        requirements_file=requirements_file,
        config_file=config_file,
        workspace=workspace,
        workflow_id=workflow_id,
        coordinator=coordinator,
        repo=repo,
        base=base,
    )
    wid = new.workflow_id
    with open_store(data_dir) as store:
        queue_of(store)  # refused before a workspace is made
        refuse_taken(store, wid)
        path = workspace_path(resolve_data_dir(data_dir), wid, workspace)
        with made_workspace(new, path) as (config, _settings):
            submit(
                store,
                new.requirements,
                config,
                workflow_id=wid,
                workspace=path,
                clock=SystemClock(),
            )
    click.echo(wid)


def _reporter(quiet: bool) -> object:
    def report(event: WorkerEvent) -> None:
        if quiet and event.kind not in (WorkerEventKind.PARKED, WorkerEventKind.STORE_DOWN):
            return
        when = datetime.now().astimezone().strftime("%H:%M:%S")
        subject = f" {event.workflow_id}" if event.workflow_id else ""
        detail = f": {printable(event.detail)}" if event.detail else ""
        click.echo(f"{when} {event.kind.value}{subject}{detail}", err=True)

    return report


async def _serve(
    store: Store,
    queue: WorkQueue,
    settings: WorkerSettings,
    base_url: str | None,
    model: str | None,
    quiet: bool,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    clock = SystemClock()
    import_chat_stack()  # before the first claim, not while holding its lease
    async with AsyncExitStack() as stack:
        runners = WorkerRunners(
            store,
            clock,
            stack,
            base_url=base_url,
            model=model,
            lease_ttl_s=settings.lease_ttl_s,
        )
        worker = Worker(
            store,
            queue,
            runners,
            clock=clock,
            settings=settings,
            report=_reporter(quiet),  # type: ignore[arg-type]
        )
        click.echo(f"worker {worker.worker_id} serving (SIGTERM or Ctrl-C to stop)", err=True)
        await worker.serve(stop)


@click.command("worker")
@click.option(
    "--concurrency", "-c", type=click.IntRange(1, 10_000), default=4, show_default=True,
    help="workflows driven at once",
)  # fmt: skip
@click.option(
    "--lease-ttl", type=click.FloatRange(1.0, 3600.0), default=60.0, show_default=True,
    help="seconds a workflow's lease lasts unless renewed (a dead worker's are taken after it)",
)  # fmt: skip
@click.option(
    "--poll", type=click.FloatRange(0.05, 600.0), default=2.0, show_default=True,
    help="seconds an idle worker waits before looking at the queue again",
)  # fmt: skip
@click.option(
    "--heartbeat", type=click.FloatRange(0.1, 600.0), default=10.0, show_default=True,
    help="seconds between heartbeats (stale after 3 missed)",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="print only problems")
@click.option(
    "--base-url",
    help="OpenAI-compatible endpoint for every workflow (default: each workflow's config, "
    "then OPENAI_BASE_URL; with none and no OPENAI_API_KEY, the embedded local model)",
)
@click.option("--model", help="model name (default: the config's, OPENAI_MODEL, the server's)")
@data_dir_option
def worker_command(
    concurrency: int,
    lease_ttl: float,
    poll: float,
    heartbeat: float,
    quiet: bool,
    base_url: str | None,
    model: str | None,
    data_dir: Path | None,
) -> None:
    """Claim queued workflows and drive them until SIGTERM (run one per host, or several)."""
    settings = WorkerSettings(
        concurrency=concurrency, lease_ttl_s=lease_ttl, poll_s=poll, heartbeat_s=heartbeat
    )
    with open_store(data_dir) as store:
        queue = queue_of(store)
        with suppress(KeyboardInterrupt):
            asyncio.run(_serve(store, queue, settings, base_url, model, quiet))


def _age(now: datetime, then: datetime) -> str:
    seconds = max(0.0, (now - then).total_seconds())
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


@click.command("workers")
@click.option(
    "--forget-stale", is_flag=True, help="remove the stale workers from the list (after listing)"
)
@data_dir_option
def workers_command(forget_stale: bool, data_dir: Path | None) -> None:
    """List the workers: id, host, pid, start, workflows held, last heartbeat, stale or not.

    Exits 1 when a worker is stale (it missed 3 heartbeats: killed, cut off or stopped
    without saying so); the workflows it held are taken over when their leases expire.
    """
    now = datetime.now().astimezone()
    with open_store(data_dir) as store:
        queue = queue_of(store)
        found = queue.workers()
        entries = queue.queued()
        ours = {info.beat.worker_id for info in found}
        doing = [le for le in store.leases() if le.owner in ours and le.activity is not None]
        if forget_stale:
            for info in found:
                if info.is_stale(now):
                    queue.remove_worker(info.beat.worker_id)
    table = Table(show_edge=False, box=None, pad_edge=False)
    for column in ("worker", "host", "pid", "started", "holds", "heartbeat", "health"):
        table.add_column(column)
    for info in found:
        beat = info.beat
        table.add_row(
            printable(beat.worker_id),
            printable(beat.host),
            str(beat.pid),
            beat.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            ", ".join(info.holding) or "-",
            _age(now, info.heartbeat_at),
            "STALE" if info.is_stale(now) else "ok",
        )
    console = Console(highlight=False, soft_wrap=True)
    if found:
        console.print(table)
        for lease in sorted(doing, key=lambda le: le.workflow_id):
            said = _age(now, lease.activity_at) if lease.activity_at is not None else "?"
            click.echo(
                f"  {printable(lease.workflow_id)} ({printable(lease.owner)}): "
                f"{printable(lease.activity or '')} ({said})"
            )
    else:
        click.echo("no workers registered")
    ready = sum(1 for e in entries if e.status is QueueStatus.READY)
    click.echo(f"queue: {ready} ready, {len(entries) - ready} parked (waiting for a human)")
    if any(info.is_stale(now) for info in found) and not forget_stale:
        sys.exit(1)
