"""Options the workflow commands share, and the one place the CLI opens the store."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator import composition
from state.config import Coordinator
from state.errors import ConfigError
from state.postgres_store import STORE_ENV
from state.sqlite_store import default_data_dir
from state.store import Store

F = TypeVar("F", bound=Callable[..., Any])


_STORE_URL = "orchestrator.store_url"
"""Where ``--store`` leaves its URL in the click context, for ``open_store`` to find."""


def _remember_store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[_STORE_URL] = value


def data_dir_option(fn: F) -> F:
    """``--data-dir`` (or ORCHESTRATOR_DATA_DIR) and ``--store URL`` (or ORCHESTRATOR_STORE).

    ``--store`` is not passed to the command: ``open_store`` reads it from the click
    context, so every command that takes a data directory takes a store URL too, and their
    functions stay as they are.
    """
    fn = click.option(
        "--store",
        "store_url",
        metavar="URL",
        expose_value=False,
        callback=_remember_store,
        help="the store instead of --data-dir: postgresql://USER:PASSWORD@HOST:PORT/DB, "
        f"sqlite:///PATH or memory:// [env: {STORE_ENV}, used when no "
        "data directory is set]",
    )(fn)
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
    """The store ``--store`` names, else the one under ``data_dir``, else the default one.

    Every command opens its store here, through the composition root, so how the store is
    built changes in one place. Without ``--store`` or ``--data-dir`` (or
    ORCHESTRATOR_DATA_DIR), ORCHESTRATOR_STORE names the store when set, and otherwise the
    SQLite file in the default data directory is used. A directory that cannot be written
    is opened read-only: list, status, inspect and export still work there, and writing
    commands fail with a message saying why.

    Raises:
        ConfigError: ``--store`` and ``--data-dir`` both given, an unknown store URL, or a
            data directory that is a file; nothing is created.
        StoreError: the store cannot be opened.
    """
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(_STORE_URL) if ctx is not None else None
    if url is not None:
        given = ctx.get_parameter_source("data_dir") if ctx is not None else None
        if given is click.core.ParameterSource.COMMANDLINE:
            raise ConfigError(
                f"both --store and --data-dir ({data_dir}) name a store; give one of them"
            )
        return composition.open_store(str(url))
    if data_dir is None and os.environ.get(STORE_ENV):
        return composition.open_store()
    folder = resolve_data_dir(data_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"data directory {folder} is a file, not a directory; choose a directory with "
            "--data-dir or ORCHESTRATOR_DATA_DIR"
        )
    return composition.open_store(folder)


def repository_options(fn: F) -> F:
    """``--repo PATH`` / ``--base BRANCH``: work on a branch of a git repository.

    Shared by the commands that start a workflow, so each one takes them the same way.
    """
    fn = click.option(
        "--base",
        metavar="BRANCH",
        help="with --repo: the branch (or commit) to start from (default: the one checked out)",
    )(fn)
    return click.option(
        "--repo",
        type=click.Path(path_type=Path),
        help="a git repository: work on branch orchestrator/ID in a worktree of it under "
        "DATA_DIR/workspaces/ID (the checkout itself is never touched)",
    )(fn)


def new_workflow_options(fn: F) -> F:
    """What a new workflow is made from: requirement, config, workspace or ``--repo``, id.

    Shared by ``run`` and ``submit``, so both take a new workflow the same way (read by
    ``orchestrator.cli.running.read_new_workflow``).
    """
    fn = repository_options(fn)
    fn = click.option("--id", "workflow_id", help="workflow id (default: generated)")(fn)
    fn = click.option(
        "--workspace",
        type=click.Path(path_type=Path),
        help="where plans and code are written (default: DATA_DIR/workspaces/ID)",
    )(fn)
    fn = click.option(
        "--config", "config_file", metavar="CONFIG.yaml", help="workflow configuration"
    )(fn)
    fn = click.option(
        "--requirements-file",
        type=click.Path(path_type=Path),
        help="what to build, from a UTF-8 text file",
    )(fn)
    return click.option("--requirements", "-r", help="what to build, in words")(fn)
