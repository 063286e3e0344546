"""``orchestrator insights``: the decision record aggregated, and what it recommends.

Groups every recorded decision (and shadow answer) by machine state and signal set, with
its agreement, overrides and what followed them, fallbacks, tokens and latency, and a
recommendation with its evidence (see ``orchestrator.insights``). ``--write-config FILE``
writes the ``routing:`` block recommended, as YAML a workflow configuration accepts.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.options import data_dir_option, open_store
from orchestrator.cli.printable import printable
from orchestrator.cli.record import parse_since
from orchestrator.insights import Group, aggregate, gather, recommend, routing_block, routing_yaml
from state.errors import ConfigError

FORMATS = ("table", "json")


def render_table(groups: list[Group]) -> str:
    """The groups as a table for people, the evidence under it."""
    if not groups:
        return "no decision recorded\n"
    table = Table(
        "state", "signals", "n", "compared", "agree", "overrides", "after override",
        "after rules", "fallbacks", "tokens", "ms", "recommendation",
    )  # fmt: skip
    for g in groups:
        data = g.as_json()
        over, rules = data["after_override"], data["after_rules"]
        agreement = data["agreement"]
        cells = (
            g.state.value,
            ",".join(g.signals) or "-",
            str(g.samples),
            str(g.compared),
            f"{agreement:.0%}" if agreement is not None else "-",
            str(g.overrides),
            f"{over['completion_rate']:.0%} ok" if over["total"] else "-",
            f"{rules['completion_rate']:.0%} ok" if rules["total"] else "-",
            " ".join(f"{k}:{v}" for k, v in data["fallbacks"].items()) or "-",
            str(g.prompt_tokens + g.completion_tokens),
            f"{data['latency_ms_mean']:.0f}" if data["latency_ms_mean"] is not None else "-",
            g.recommendation.value if g.recommendation else "-",
        )
        table.add_row(*(Text(printable(c)) for c in cells))
    buffer = io.StringIO()
    Console(file=buffer, width=None if sys.stdout.isatty() else 220).print(table)
    for g in groups:
        if g.recommendation is not None:
            sig = ",".join(g.signals) or "no signals"
            buffer.write(f"{g.state.value} ({sig}): {g.recommendation.value}: {g.evidence}\n")
    return buffer.getvalue()


@click.command()
@click.option("--since", help="only decisions from: ISO date or date-time, or an age (7d)")
@click.option(
    "--min-samples",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="comparisons needed before promoting a state to the rules",
)
@click.option("--format", "fmt", default="table", show_default=True, help="table or json")
@click.option(
    "--write-config",
    "write_config",
    metavar="FILE",
    help="write the recommended routing: block to FILE (YAML a workflow config accepts)",
)
@click.option("--force", is_flag=True, help="overwrite FILE if it exists")
@data_dir_option
def insights(
    since: str | None,
    min_samples: int,
    fmt: str,
    write_config: str | None,
    force: bool,
    data_dir: Path | None,
) -> None:
    """What the decision record says per machine state and signal set, and what to route where."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    start = parse_since(since) if since is not None else None
    target = Path(write_config) if write_config is not None else None
    if target is not None and target.exists() and not force:
        raise ConfigError(
            f"{target} exists; nothing was written; pass --force to overwrite it or name "
            "another file"
        )
    with open_store(data_dir) as store:
        groups = recommend(aggregate(gather(store, start), start), min_samples=min_samples)
    if fmt == "json":
        routing = {s.value: c.value for s, c in routing_block(groups).items()}
        click.echo(json.dumps({"groups": [g.as_json() for g in groups], "routing": routing}))
    else:
        click.echo(render_table(groups), nl=False)
    if target is not None:
        text = routing_yaml(groups)
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot write {target} ({exc.strerror}); nothing was written"
            ) from exc
        click.echo(f"wrote the routing: block to {target}", err=True)
