"""The composition root: the one place that wires real components together.

Which store: ``open_store`` takes a data directory or a URL (``sqlite:///PATH``,
``memory://``, ``postgresql://...``); with neither, ``ORCHESTRATOR_DATA_DIR`` and then
``ORCHESTRATOR_STORE`` (a URL) decide, and the SQLite file in the default data directory is
the zero-setup default. Nothing else names a backend class.

Which LLM: flags first, then the workflow config, then ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY`` / ``OPENAI_MODEL``. With none of them set, the embedded default starts:
the bundled SmolLM2-135M model served by llama-cpp-python on a free loopback port, stopped
when the context exits (also on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agents.base import LLMOptions, StepAgents
from agents.planner import PlannerAgent
from agents.programmer import ProgrammerAgent
from agents.validator import ValidatorAgent
from orchestrator.deciding.llm_decider import LLMDecider
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.execution.sandbox import Sandbox, SandboxLimits, sweep_stale_sandboxes
from orchestrator.llm.protocol import ChatModel
from orchestrator.repository import git
from orchestrator.running.runner import Observer, WorkflowRunner
from prompt_templates.loader import TemplateLoader
from state.async_store import SharedAsyncStore
from state.clock import Clock, SystemClock
from state.config import LLMSettings, WorkflowConfig
from state.errors import ConfigError
from state.memory_store import MemoryStore
from state.postgres_store import STORE_ENV
from state.repository import RepositorySettings
from state.sqlite_store import (
    DATA_DIR_ENV,
    DB_FILENAME,
    Durability,
    SQLiteStore,
    default_data_dir,
)
from state.store import Store

log = structlog.get_logger(__name__)

LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct (embedded)"
EMBEDDED_CONTEXT_TOKENS = 8192
# The embedded model has a small context window: ask for short answers, show less code.
_COMPACT = {"tokens": 1024, "context_chars": 8_000}


STORE_SCHEMES = ("sqlite", "memory", "postgresql", "postgres")
"""The URL schemes ``open_store`` knows, besides a plain directory."""

# STORE_ENV (ORCHESTRATOR_STORE): the store URL ``open_store`` uses when it is given nothing
# and no data directory is set; defined in the package of the store whose messages name it.


def open_store(
    url_or_dir: str | Path | None = None,
    *,
    clock: Clock | None = None,
    durability: Durability = "normal",
    busy_timeout_s: float = 10.0,
    read_only: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Store:
    """The store at ``url_or_dir``, opened.

    Args:
        url_or_dir: a data directory (the SQLite store's ``orchestrator.db`` is in it);
            ``sqlite:///PATH`` for the same with PATH absolute (a PATH ending in
            ``orchestrator.db`` names the file, so its directory is used); ``memory://``
            for a new, empty in-memory store; ``memory://NAME`` for this process's
            in-memory store called NAME (made on first use, shared by every handle);
            ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (or ``postgres://``) for a
            PostgreSQL database. None means ``$ORCHESTRATOR_DATA_DIR`` when set, else the URL
            in ``$ORCHESTRATOR_STORE`` when set, else ``default_data_dir()``.
        clock: the store's clock (default: the system clock).
        durability: the SQLite store's ``"normal"`` or ``"full"``.
        busy_timeout_s: how long the SQLite store waits for another process's write.
        read_only: the SQLite store's read-only switch (None: when it cannot be written).
        environ: the environment to read (default: ``os.environ``).

    Raises:
        ConfigError: an unknown URL scheme (the message names the supported ones).
        StoreError: the store cannot be opened (see ``SQLiteStore``, ``PostgresStore``).
    """
    env = os.environ if environ is None else environ
    if url_or_dir is None and not env.get(DATA_DIR_ENV) and env.get(STORE_ENV):
        url_or_dir = env[STORE_ENV]
    if url_or_dir is None:
        return SQLiteStore(
            default_data_dir(env), durability=durability, clock=clock, read_only=read_only
        )
    if isinstance(url_or_dir, Path) or "://" not in url_or_dir:
        return SQLiteStore(
            url_or_dir,
            durability=durability,
            clock=clock,
            read_only=read_only,
            busy_timeout_s=busy_timeout_s,
        )
    scheme, _, rest = url_or_dir.partition("://")
    match scheme.lower():
        case "memory":
            return MemoryStore.named(rest, clock=clock) if rest else MemoryStore(clock=clock)
        case "sqlite":
            if not rest.startswith("/"):
                raise ConfigError(
                    f"the store URL {url_or_dir!r} needs an absolute path after "
                    "'sqlite://' (sqlite:///home/me/data); or give the directory itself"
                )
            path = Path(rest)
            data_dir = path.parent if path.name == DB_FILENAME else path
            return SQLiteStore(
                data_dir,
                durability=durability,
                clock=clock,
                read_only=read_only,
                busy_timeout_s=busy_timeout_s,
            )
        case "postgresql" | "postgres":
            # Imported here: psycopg takes a third of a second that SQLite workers skip.
            from state.postgres_store.store import PostgresStore  # noqa: PLC0415

            return PostgresStore(url_or_dir, clock=clock)
        case _:
            raise ConfigError(
                f"unknown store URL scheme {scheme!r} in {url_or_dir!r}; use a data "
                "directory, sqlite:///ABSOLUTE/PATH, memory:// or postgresql://... "
                "(supported schemes: "
                f"{', '.join(STORE_SCHEMES)})"
            )


@dataclass(frozen=True, slots=True)
class LLMTarget:
    """Where the LLM is: a server (base_url/key/model) or the embedded local model."""

    base_url: str | None
    api_key: str | None
    model: str | None

    @property
    def embedded(self) -> bool:
        """No server was named: use the bundled local model."""
        return self.base_url is None and self.api_key is None


def resolve_target(
    settings: LLMSettings,
    *,
    base_url: str | None = None,
    model: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LLMTarget:
    """Flags, then config, then environment."""
    env = os.environ if environ is None else environ
    return LLMTarget(
        base_url=base_url or settings.base_url or env.get("OPENAI_BASE_URL") or None,
        api_key=env.get("OPENAI_API_KEY") or None,
        model=model or settings.model or env.get("OPENAI_MODEL") or None,
    )


def import_chat_stack() -> None:
    """Import the openai client stack ``open_chat_model`` needs, ahead of its first use.

    A worker calls it before it claims anything, so that its first claimed workflow does
    not wait on (and hold its lease through) a second or more of imports on a busy machine.
    """
    from orchestrator.llm import local_server, openai_adapter  # noqa: F401, PLC0415


@asynccontextmanager
async def open_chat_model(target: LLMTarget, settings: LLMSettings) -> AsyncIterator[ChatModel]:
    """A ready chat model for ``target``; the embedded server is stopped on exit.

    Raises:
        ConfigError: the embedded model is needed but not installed.
        LLMUnavailableError: the server cannot be reached or started.
    """
    # Imported here, not at the top: the openai client and its HTTP stack take about 0.6 s
    # to import, which every command that never asks an LLM (list, show, answer) paid.
    from orchestrator.llm.local_server import LocalModelServer  # noqa: PLC0415
    from orchestrator.llm.openai_adapter import connect  # noqa: PLC0415

    server: LocalModelServer | None = None
    base_url = target.base_url
    model = target.model
    try:
        if target.embedded:
            server = LocalModelServer(n_ctx=EMBEDDED_CONTEXT_TOKENS)
            log.info("llm.local.starting", model=LOCAL_MODEL_NAME)
            await asyncio.to_thread(server.start)
            base_url = server.base_url
            model = model or server.model_name
        chat = await connect(
            base_url,
            target.api_key or "unused-by-local-servers",
            model,
            timeout_s=settings.call_timeout_s,
            deadline_s=settings.decision_deadline_s,
            max_attempts=settings.max_attempts,
            max_retry_after_s=settings.max_retry_after_s,
        )
        try:
            yield chat
        finally:
            await chat.aclose()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


def build_coordinator(
    llm: ChatModel | None, clock: Clock | None = None, machine: WorkflowMachine | None = None
) -> DecisionPipeline:
    """The coordinator with the shared machine and, when given, the LLM."""
    machine = machine or WorkflowMachine()
    decider = LLMDecider(llm, machine) if llm is not None else None
    return DecisionPipeline(machine, clock or SystemClock(), decider, script_model=llm)


def build_agents(
    model: ChatModel, *, compact: bool, sandbox_limits: SandboxLimits | None = None
) -> StepAgents:
    """The planner, validator and programmer on ``model``.

    Also removes the sandbox copies a killed earlier run left behind.

    Args:
        compact: size prompts and answers for a small local model's context window.
        sandbox_limits: limits for running generated code; None: each workflow's own
            ``sandbox:`` settings.
    """
    removed = sweep_stale_sandboxes()
    if removed:
        log.info("sandbox.swept", directories=len(removed))
    templates = TemplateLoader()
    extra: dict[str, Any] = {}
    if compact:
        extra = {
            "options": LLMOptions(max_tokens=_COMPACT["tokens"]),
            "max_context_chars": _COMPACT["context_chars"],
        }
    return StepAgents(
        planner=PlannerAgent(model, templates, **extra),
        validator=ValidatorAgent(
            model,
            templates,
            sandbox=Sandbox(sandbox_limits) if sandbox_limits is not None else None,
            **extra,
        ),
        programmer=ProgrammerAgent(model, templates, **extra),
    )


@contextmanager
def repository_workspace(
    repo: Path, base: str | None, workflow_id: str, worktree: Path
) -> Iterator[RepositorySettings]:
    """The workflow's branch and worktree made from ``repo``; undone if the body fails.

    The body stores the workflow; if it raises before the workflow is stored the branch and
    the worktree are removed again, so a refused or failed start leaves nothing behind.

    Raises:
        ConfigError: not a git repository, an unknown base, the branch taken, git missing.
        GitError: git could not make the worktree.
    """
    made = git.create_worktree(repo.expanduser(), workflow_id, worktree, base)
    log.info("repository.worktree.created", branch=made.branch, worktree=str(made.path))
    try:
        yield RepositorySettings(
            path=str(made.repo),
            base=made.base,
            base_commit=made.base_commit,
            branch=made.branch,
            worktree=str(made.path),
        )
    except BaseException:
        git.remove_worktree(made.repo, made.path, made.branch)
        raise


class WorkerRunners:
    """The runners of a worker: one per LLM target and settings, opened on first use.

    Workflows configured alike share one chat model and one set of agents; each chat model
    stays open (the embedded server running) until ``stack`` closes.

    Args:
        store: the store the runners drive workflows in.
        clock: their clock.
        stack: where the chat models are entered (closed with it).
        base_url: ``--base-url``, overriding each workflow's configuration.
        model: ``--model``, likewise.
        lease_ttl_s: the lease of each workflow a runner drives.
        observers: progress observers given to every runner.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        stack: AsyncExitStack,
        *,
        base_url: str | None = None,
        model: str | None = None,
        lease_ttl_s: float = 60.0,
        observers: Iterable[Observer] = (),
    ) -> None:
        self._store = store
        self._clock = clock
        self._stack = stack
        self._base_url = base_url
        self._model = model
        self._lease_ttl_s = lease_ttl_s
        self._observers = list(observers)
        self._runners: dict[tuple[LLMTarget, str, str], WorkflowRunner] = {}
        self._views = SharedAsyncStore(store)  # all runners' commits are grouped together
        self._lock = asyncio.Lock()

    async def runner_for(self, config: WorkflowConfig, owner: str) -> WorkflowRunner:
        """The runner for workflows configured like ``config``, leasing as ``owner``.

        Raises:
            LLMUnavailableError: the server cannot be reached; ConfigError: the embedded
                model is needed but not installed.
        """
        target = resolve_target(config.llm, base_url=self._base_url, model=self._model)
        key = (target, config.llm.model_dump_json(), owner)
        async with self._lock:
            runner = self._runners.get(key)
            if runner is None:
                chat = await self._stack.enter_async_context(open_chat_model(target, config.llm))
                runner = WorkflowRunner(
                    self._store,
                    build_coordinator(chat, self._clock),
                    build_agents(chat, compact=target.embedded),
                    clock=self._clock,
                    owner=owner,
                    observers=self._observers,
                    lease_ttl_s=self._lease_ttl_s,
                    views=self._views,
                )
                self._runners[key] = runner
            return runner
