"""The ``orchestrator`` command group and how errors become exit codes.

Exit codes: 0 success; 1 a runtime failure (LLM, store, sandbox); 2 bad input (an invalid
or inconsistent state or config, an unknown workflow id, an answer that does not fit);
3 the workflow waits for a human.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from orchestrator import telemetry
from orchestrator.cli.printable import printable
from orchestrator.logsetup import configure_logging
from state.errors import (
    AwaitingHumanError,
    ConfigError,
    DecisionError,
    HumanAnswerError,
    OrchestratorError,
    StateError,
    StoreCorruptError,
    StoreVersionError,
    UnknownWorkflowError,
)

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_AWAITING_HUMAN = 3

_BAD_INPUT = (
    ConfigError,
    StateError,
    HumanAnswerError,
    UnknownWorkflowError,
    StoreCorruptError,
    StoreVersionError,
    DecisionError,
)


class _Group(click.Group):
    """Turns the library's errors into one line on stderr and an exit code.

    The line goes through ``printable``: a message quoting a file name, an id or an LLM's
    words stays one line and sends no control sequence to the terminal.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AwaitingHumanError as exc:
            click.echo(f"waiting: {printable(exc)}", err=True)
            sys.exit(EXIT_AWAITING_HUMAN)
        except _BAD_INPUT as exc:
            click.echo(f"error: {printable(exc)}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except OrchestratorError as exc:
            click.echo(f"error: {printable(exc)}", err=True)
            sys.exit(EXIT_FAILURE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hybrid-orchestrator")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="decision log rendering on stderr",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="WARNING",
    show_default=True,
    help="INFO shows every decision.made event",
)
def cli(log_format: str, log_level: str) -> None:
    """Hybrid LLM/code orchestrator for planner/validator/programmer workflows.

    Traces go where the standard OTEL_* environment variables say (off unless they are set).
    """
    configure_logging("json" if log_format == "json" else "console", log_level)
    # The ConfigError of an unknown exporter is reported by _Group, like any bad input.
    telemetry.configure_from_environment()
