"""Options the workflow commands share, and the one place the CLI opens the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator import composition
from state.config import Coordinator
from state.errors import ConfigError
from state.sqlite_store import default_data_dir
from state.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def data_dir_option(fn: F) -> F:
    """``--data-dir`` (or ORCHESTRATOR_DATA_DIR): where the workflow database lives."""
    return click.option(
        "--data-dir",
        # Checked by open_store, which says so in one line (click would print a usage screen).
        type=click.Path(path_type=Path),
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


def resolve_data_dir(data_dir: Path | None) -> Path:
    """The data directory ``--data-dir`` names, or the default one."""
    return data_dir or default_data_dir()


def open_store(data_dir: Path | None) -> Store:
    """The store under ``data_dir`` (or the default data directory).

    Every command opens its store here, through the composition root, so how the store is
    built changes in one place. A directory that cannot be written is opened read-only:
    list, status, inspect and export still work there, and writing commands fail with a
    message saying why.

    Raises:
        ConfigError: the data directory is a file; nothing is created.
    """
    folder = resolve_data_dir(data_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"data directory {folder} is a file, not a directory; choose a directory with "
            "--data-dir or ORCHESTRATOR_DATA_DIR"
        )
    return composition.open_store(folder)
