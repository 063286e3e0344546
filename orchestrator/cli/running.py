"""``orchestrator run`` and ``resume``: drive a workflow until it finishes or waits.

In an interactive terminal they ask at the gate instead of stopping. ``run`` checks
everything it can before the workflow is stored (the id, the config and its coordinator
script, the requirement), and a workflow whose workspace cannot be made is not stored and
leaves no directory behind. Exit codes: 0 completed, rejected or waiting; 1 failed.

Progress goes to stderr: a live display when both stdout and stderr are terminals, one
plain line per event otherwise (pipes, CI), nothing with ``--quiet``. The run's log events
go to ``DATA_DIR/logs/ID.log``, summarised on screen in one line at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console

from orchestrator.cli.display import LiveDisplay, ProgressDisplay, TerminalHuman, warnings_line
from orchestrator.cli.inputs import (
    check_runnable,
    check_workflow_id,
    read_config,
    read_requirements,
)
from orchestrator.cli.llm_access import enter_llm
from orchestrator.cli.options import (
    data_dir_option,
    llm_options,
    new_workflow_options,
    open_store,
    resolve_data_dir,
)
from orchestrator.cli.printable import printable
from orchestrator.composition import (
    build_agents,
    build_coordinator,
    repository_workspace,
    resolve_target,
)
from orchestrator.logsetup import LogFormat, LogTally, logging_to_file
from orchestrator.reporting import change_text, repository_line
from orchestrator.repository import git
from orchestrator.running.runner import Observer, WorkflowRunner, default_workflow_id
from state.clock import SystemClock
from state.config import Coordinator, WorkflowConfig
from state.errors import ConfigError, UnknownWorkflowError
from state.repository import RepositorySettings
from state.steps import Gate, WorkflowStatus
from state.store import Store
from state.workflow import WorkflowState

T = TypeVar("T")

TERMINAL_DIFF_CHARS = 8_000
"""How much of the diff a gate prompt shows (``inspect`` shows more)."""


def _interactive(no_input: bool) -> bool:
    return not no_input and sys.stdin.isatty() and sys.stderr.isatty()


def _stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _live_terminal(console: Console) -> bool:
    """A live display only where a person watches: stdout and stderr both terminals."""
    return sys.stdout.isatty() and console.is_terminal and not console.is_dumb_terminal


def _log_settings() -> tuple[LogFormat, str]:
    """The ``--log-format`` and ``--log-level`` given to the command group."""
    ctx = click.get_current_context(silent=True)
    params = ctx.find_root().params if ctx is not None else {}
    fmt: LogFormat = "json" if params.get("log_format") == "json" else "console"
    return fmt, str(params.get("log_level") or "WARNING")


def _logged(
    data_dir: Path | None, workflow_id: str, quiet: bool, body: Callable[[LogTally], T]
) -> T:
    """Run ``body`` with the log in ``DATA_DIR/logs/ID.log``; then say how many warnings."""
    path = resolve_data_dir(data_dir) / "logs" / f"{workflow_id}.log"
    fmt, level = _log_settings()
    with logging_to_file(path, fmt, level) as tally:
        try:
            return body(tally)
        finally:
            line = warnings_line(tally)
            if line is not None and not quiet:
                click.echo(line, err=True)


def with_coordinator(config: WorkflowConfig, coordinator: str | None) -> WorkflowConfig:
    """``config`` with its coordinator replaced by ``--coordinator`` when given."""
    if not coordinator:
        return config
    return config.model_copy(update={"coordinator": Coordinator(coordinator)})


@contextlib.contextmanager
def new_workspace(path: Path) -> Iterator[Path]:
    """Make ``path`` (and missing parents); remove what was made if the body fails.

    Raises:
        ConfigError: the directory cannot be made (a file in the way, no permission, the
            disk full); nothing is left behind.
    """
    made: list[Path] = []
    for p in (*reversed(path.parents), path):
        if p.is_dir():
            continue
        try:
            p.mkdir()
        except OSError as exc:
            _remove(made)
            raise ConfigError(
                f"cannot create the workspace {printable(path)}: {printable(p)}: "
                f"{exc.strerror or exc}; free space or choose another --workspace "
                "(nothing was stored)"
            ) from exc
        made.append(p)
    try:
        yield path
    except BaseException:
        _remove(made)
        raise


def _remove(made: list[Path]) -> None:
    """Remove the directories ``new_workspace`` made, deepest first, if still empty."""
    for p in reversed(made):
        with contextlib.suppress(OSError):
            p.rmdir()


async def _drive(
    store: Store,
    config: WorkflowConfig,
    base_url: str | None,
    model: str | None,
    interactive: bool,
    quiet: bool,
    workflow_id: str,
    create: tuple[NewWorkflow, Path] | None,
    tally: LogTally,
) -> WorkflowState:
    """Open the LLM, create the workflow if ``create`` (the new workflow, its workspace), run it.

    With ``--repo`` the workspace is a new worktree of that repository on the workflow's own
    branch, removed again if the workflow is not stored (``made_workspace``).
    """
    target = resolve_target(config.llm, base_url=base_url, model=model)
    if target.embedded and not quiet:
        click.echo(
            "starting the embedded SmolLM2-135M model on loopback "
            "(set OPENAI_BASE_URL / OPENAI_API_KEY to use another server) ...",
            err=True,
        )
    async with AsyncExitStack() as stack:
        chat = await enter_llm(stack, target, config.llm)
        observers: list[Observer] = []
        live: LiveDisplay | None = None
        console = _stderr_console()
        if not quiet and _live_terminal(console):
            live = stack.enter_context(LiveDisplay(console, tally=tally))
            observers.append(live)
        elif not quiet:
            observers.append(ProgressDisplay(console))
        human = (
            TerminalHuman(
                before_asking=live.pause if live else None,
                # config is read when asked: by then it names the worktree made below
                show_change=lambda state: change_text(
                    state, config, max_diff_chars=TERMINAL_DIFF_CHARS
                ),
            )
            if interactive
            else None
        )
        service = WorkflowRunner(
            store,
            build_coordinator(chat),
            build_agents(chat, compact=target.embedded),
            clock=SystemClock(),
            human=human,
            observers=observers,
        )
        if create is not None:
            new, workspace = create
            with made_workspace(new, workspace) as (stored, settings):
                config = stored  # the human's change view reads it: it names the worktree
                if settings is not None:
                    click.echo(
                        f"working on branch {settings.branch} in {settings.worktree}", err=True
                    )
                service.create(
                    new.requirements,
                    config,
                    workspace_root=workspace.parent,
                    workspace=workspace,
                    workflow_id=workflow_id,
                )
            click.echo(f"workflow {workflow_id} created", err=True)
        return await service.run(workflow_id)


def _finish(state: WorkflowState, config: WorkflowConfig) -> None:
    """Say where the workflow stands and how to go on; exit 1 if it failed."""
    wid = state.workflow_id
    branch = repository_line(config)
    if branch:
        click.echo(branch)
    gate = state.waiting_gate
    if gate is not None:
        click.echo(
            f"{wid} waits at the {gate.value} gate. Answer with:\n"
            f"  orchestrator approve {wid}\n"
            f"  orchestrator reject {wid} --comment TEXT\n"
            f"  orchestrator request-changes {wid} --change TEXT\n"
            + (f"  orchestrator accept {wid}\n" if gate is Gate.ESCALATION else "")
            + f"then: orchestrator resume {wid}"
        )
    else:
        click.echo(
            f"{wid} {state.machine_state.value} ({len(state.decisions)} decisions); "
            f"workspace: {printable(state.workspace)}"
        )
    if state.status is WorkflowStatus.FAILED:
        sys.exit(1)


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """A new workflow as ``run`` and ``submit`` read it from their options, all checked.

    Attributes:
        workflow_id: its id (given, or generated).
        config: its configuration, with ``--coordinator`` applied.
        requirements: what to build.
        repository: ``(--repo, --base)``, or None for a plain directory.
    """

    workflow_id: str
    config: WorkflowConfig
    requirements: str
    repository: tuple[Path, str | None] | None


def read_new_workflow(
    *,
    requirements: str | None,
    requirements_file: Path | None,
    config_file: str | None,
    workspace: Path | None,
    workflow_id: str | None,
    coordinator: str | None,
    repo: Path | None,
    base: str | None,
) -> NewWorkflow:
    """Everything about a new workflow that can be refused, refused before the store opens.

    Raises:
        click.UsageError: the options contradict each other.
        ConfigError: a bad id, config, requirement, or repository (``git.check_start``).
    """
    if (requirements is None) == (requirements_file is None):
        raise click.UsageError("give the requirement with --requirements or --requirements-file")
    if repo is not None and workspace is not None:
        raise click.UsageError("give --repo or --workspace, not both (--repo makes a worktree)")
    if base is not None and repo is None:
        raise click.UsageError("--base needs --repo: the branch of which repository?")
    if workflow_id is not None:
        check_workflow_id(workflow_id)
    config = with_coordinator(read_config(config_file), coordinator)
    check_runnable(config)
    if config.repository.path is not None:
        raise ConfigError(
            "the config's 'repository:' is set by run --repo; remove it from the file"
        )
    text = read_requirements(requirements, requirements_file, config)
    wid = workflow_id or default_workflow_id(SystemClock())
    repository = None
    if repo is not None:
        git.check_start(repo.expanduser(), wid, base)  # refused before the LLM starts
        repository = (repo, base)
    return NewWorkflow(wid, config, text, repository)


@contextlib.contextmanager
def made_workspace(
    new: NewWorkflow, workspace: Path
) -> Iterator[tuple[WorkflowConfig, RepositorySettings | None]]:
    """The new workflow's workspace (a worktree with ``--repo``), undone if the body raises.

    Yields the configuration to store (naming the worktree with ``--repo``) and the
    repository settings, if any.
    """
    if new.repository is None:
        with new_workspace(workspace):
            yield new.config, None
        return
    with repository_workspace(*new.repository, new.workflow_id, workspace) as settings:
        yield new.config.model_copy(update={"repository": settings}), settings


def refuse_taken(store: Store, workflow_id: str) -> None:
    """Refuse an id the store already holds (``run --id``, ``submit --id``)."""
    try:
        store.load(workflow_id)
    except UnknownWorkflowError:
        return
    raise ConfigError(
        f"workflow {workflow_id} already exists; choose another --id, or continue it with: "
        f"orchestrator resume {workflow_id}"
    )


def workspace_path(data_dir: Path, workflow_id: str, workspace: Path | None) -> Path:
    """Where the workflow's files go; a default workspace never leaves the data directory."""
    if workspace is not None:
        return workspace.expanduser().resolve()
    root = (data_dir / "workspaces").resolve()
    path = (root / workflow_id).resolve()
    if path.parent != root:  # the id charset makes this impossible; keep it so
        raise ConfigError(
            f"workflow id {workflow_id!r} would put its workspace outside {root}; choose another"
        )
    return path


@click.command()
@new_workflow_options
@click.option("--no-input", is_flag=True, help="never ask at gates, even in a terminal")
@click.option("--quiet", "-q", is_flag=True, help="no progress display")
@llm_options
@data_dir_option
def run(
    requirements: str | None,
    requirements_file: Path | None,
    config_file: str | None,
    workspace: Path | None,
    workflow_id: str | None,
    no_input: bool,
    quiet: bool,
    repo: Path | None,
    base: str | None,
    coordinator: str | None,
    base_url: str | None,
    model: str | None,
    data_dir: Path | None,
) -> None:
    """Run a new workflow from a requirement to validated code (or to a human gate)."""
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
        refuse_taken(store, wid)
        create = (new, workspace_path(resolve_data_dir(data_dir), wid, workspace))
        state = _logged(
            data_dir,
            wid,
            quiet,
            lambda tally: asyncio.run(
                _drive(
                    store,
                    new.config,
                    base_url,
                    model,
                    _interactive(no_input),
                    quiet,
                    wid,
                    create,
                    tally,
                )
            ),
        )
        final = store.load(wid).config
    _finish(state, final)


@click.command()
@click.argument("workflow_id")
@click.option("--no-input", is_flag=True, help="never ask at gates, even in a terminal")
@click.option("--quiet", "-q", is_flag=True, help="no progress display")
@llm_options
@data_dir_option
def resume(
    workflow_id: str,
    no_input: bool,
    quiet: bool,
    coordinator: str | None,
    base_url: str | None,
    model: str | None,
    data_dir: Path | None,
) -> None:
    """Continue a workflow: after a crash, a restart, or a human answer."""
    check_workflow_id(workflow_id)
    with open_store(data_dir) as store:
        config = with_coordinator(store.load(workflow_id).config, coordinator)
        check_runnable(config)
        interactive = _interactive(no_input)
        state = _logged(
            data_dir,
            workflow_id,
            quiet,
            lambda tally: asyncio.run(
                _drive(store, config, base_url, model, interactive, quiet, workflow_id, None, tally)
            ),
        )
    _finish(state, config)
