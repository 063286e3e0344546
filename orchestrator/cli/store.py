"""``orchestrator store``: maintaining stores, e.g. moving every workflow to PostgreSQL."""

from __future__ import annotations

import click

from orchestrator import composition
from state.store_copy import copy_store


@click.group("store")
def store_group() -> None:
    """Maintain workflow stores (copy them between backends)."""


@store_group.command("migrate")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="URL",
    help="the store to copy: sqlite:///PATH, a data directory, postgresql://... (only read)",
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL",
    help="the empty store to copy into: postgresql://USER:PASSWORD@HOST:PORT/DB, sqlite:///PATH",
)
def migrate(source: str, target: str) -> None:
    """Copy every workflow with its ledger and artifacts, then check the copy.

    The copy keeps versions, ledger entries (numbers, times, contents), snapshots,
    artifacts and the work queue (ready and parked entries, with their notes); it is read
    back and compared before the command succeeds. Stop the
    workflows first: one that runs (a live lease) is refused, and nothing is copied into a
    store that already holds one of the workflows.
    """
    with composition.open_store(source) as src:
        copied = copy_store(src, lambda clock: composition.open_store(target, clock=clock))
    for item in copied:
        click.echo(
            f"{item.workflow_id}: version {item.version}, {item.entries} ledger entries, "
            f"{item.artifacts} artifacts"
            + (f", queued {item.queued.value}" if item.queued is not None else "")
        )
    click.echo(f"copied and checked {len(copied)} workflow(s)")
