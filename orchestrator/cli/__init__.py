"""The ``orchestrator`` command line (``orchestrator --help``)."""

from __future__ import annotations

from orchestrator.cli.answers import accept, approve, reject, request_changes
from orchestrator.cli.app import cli
from orchestrator.cli.core import graph, schema
from orchestrator.cli.decide import decide
from orchestrator.cli.insights import insights
from orchestrator.cli.inspection import export, inspect, list_, state_, status
from orchestrator.cli.record import decisions, replay
from orchestrator.cli.running import resume, run
from orchestrator.cli.serve import serve
from orchestrator.cli.store import store_group
from orchestrator.cli.workers import submit_command, worker_command, workers_command

__all__ = [
    "COMMANDS",
    "answers",
    "app",
    "cli",
    "core",
    "decide",
    "display",
    "inputs",
    "insights",
    "inspection",
    "llm_access",
    "main",
    "options",
    "printable",
    "record",
    "running",
    "serve",
    "store",
    "workers",
]

COMMANDS = (
    schema,
    graph,
    decide,
    run,
    resume,
    approve,
    reject,
    accept,
    request_changes,
    list_,
    status,
    inspect,
    export,
    state_,
    serve,
    store_group,
    decisions,
    replay,
    insights,
    submit_command,
    worker_command,
    workers_command,
)

for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``orchestrator`` command."""
    cli()
