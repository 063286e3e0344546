"""The ``orchestrator`` command line (``orchestrator --help``)."""

from __future__ import annotations

from orchestrator.cli.app import cli
from orchestrator.cli.core import graph, schema
from orchestrator.cli.decide import decide
from orchestrator.cli.serve import serve
from orchestrator.cli.workflows import COMMANDS

for _command in (schema, graph, decide, serve, *COMMANDS):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``orchestrator`` command."""
    cli()
