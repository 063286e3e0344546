"""The console's facade: the one web module that touches the store, runner and deciding code.

Everything the HTTP API serves comes from a ``ConsoleService`` as JSON-ready values, and
every change it makes (an answer, a new workflow, a resume) goes through the same functions
the command line uses, so the browser and the shell cannot disagree about the rules.
Store calls run in worker threads, so a slow disk never stalls the event loop that serves
other browsers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from agents.workspace import line_comment
from orchestrator.composition import (
    build_agents,
    build_coordinator,
    open_chat_model,
    open_store,
    resolve_target,
)
from orchestrator.deciding.machine import TransitionSpec, WorkflowMachine
from orchestrator.reporting import (
    change_view,
    round_commits,
    round_diff,
    scores_line,
    validation_rounds,
)
from orchestrator.running.runner import WorkflowRunner, answer_workflow, default_workflow_id
from orchestrator.running.updates import allowed_answers, new_workflow
from orchestrator.web.shapes import (
    edge_uses,
    iso,
    json_safe,
    ledger_json,
    question,
    summary_row,
    timeline_entry,
)
from orchestrator.web.svg import render_chart, render_diagram
from state.clock import Clock, SystemClock
from state.config import WorkflowConfig, parse_config
from state.errors import (
    ConcurrencyError,
    ConfigError,
    HumanAnswerError,
    StoreError,
    UnknownWorkflowError,
)
from state.sqlite_store import default_data_dir
from state.steps import STEP_SPECS, Gate, MachineState, WorkflowStatus
from state.store import (
    Store,
    StoredWorkflow,
    WorkflowSummary,
    lease_is_stale,
)
from state.workflow import HumanAnswerKind

log = structlog.get_logger(__name__)

T = TypeVar("T")


class AnswerRefusedError(HumanAnswerError):
    """An answer was refused because the workflow no longer waits where the answerer thought.

    Attributes:
        workflow_id: the workflow.
        waiting_gate: the gate it waits at now (None when it waits nowhere).
        machine_state: its machine state now.
    """

    def __init__(
        self, message: str, *, workflow_id: str, waiting_gate: str | None, machine_state: str
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.waiting_gate = waiting_gate
        self.machine_state = machine_state


class AccessViolationError(StoreError):
    """A request named a file outside the workflow's workspace (or one it never produced)."""


class RunLauncher(Protocol):
    """Drives a stored workflow until it finishes or waits for a human."""

    async def run(self, workflow_id: str) -> None:
        """Run the workflow; errors are the caller's to log."""
        ...


class ModelRunLauncher:
    """Runs workflows with the LLM the composition root resolves (flags, config, environment).

    Each run opens its own chat model, as ``orchestrator resume`` does, so runs of
    differently configured workflows do not share a connection.
    """

    def __init__(
        self, store: Store, clock: Clock, *, base_url: str | None, model: str | None
    ) -> None:
        self._store = store
        self._clock = clock
        self._base_url = base_url
        self._model = model

    async def run(self, workflow_id: str) -> None:
        """Run ``workflow_id`` to its next gate or its end."""
        config = (await asyncio.to_thread(self._store.load, workflow_id)).config
        target = resolve_target(config.llm, base_url=self._base_url, model=self._model)
        async with open_chat_model(target, config.llm) as chat:
            runner = WorkflowRunner(
                self._store,
                build_coordinator(chat),
                build_agents(chat, compact=target.embedded),
                clock=self._clock,
            )
            await runner.run(workflow_id)


@dataclass(frozen=True, slots=True)
class _Question:
    """What a waiting workflow asks, as of one of its versions (the inbox's memory)."""

    version: int
    asked: dict[str, Any]
    since: datetime | None
    requirements: str


@dataclass(frozen=True, slots=True)
class Version:
    """What the live feed compares between polls."""

    version: int
    status: str
    waiting_gate: str | None
    updated_at: str
    activity: str | None = None
    """What the lease's holder last said it is doing (an environment build's line)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing: its items, and where they lie in the whole.

    Attributes:
        items: the rows of this page.
        total: how many rows the whole listing has.
        offset: how many rows come before this page.
        limit: the most rows a page holds (None: the whole listing is one page).
    """

    items: list[dict[str, Any]]
    total: int
    offset: int
    limit: int | None


R = TypeVar("R")


def _window(rows: Sequence[R], limit: int | None, offset: int) -> Sequence[R]:
    """The rows of one page."""
    return rows[offset:] if limit is None else rows[offset : offset + limit]


_CHANGE_GATES = frozenset({Gate.CODE_REVIEW, Gate.FINAL})
"""The gates at which a human approves a change: the page shows it against the base."""


def _repository(config: WorkflowConfig) -> dict[str, Any] | None:
    """The git branch a ``--repo`` workflow commits to, its base and worktree; None otherwise."""
    repo = config.repository
    if not repo.enabled:
        return None
    return {
        "path": repo.path,
        "base": repo.base,
        "base_commit": repo.base_commit,
        "branch": repo.branch,
        "worktree": repo.worktree,
    }


def drawn_edges(table: Iterable[TransitionSpec]) -> set[tuple[MachineState, MachineState]]:
    """The machine's edges worth drawing even when not taken.

    Every step may fail or escalate, and an answered escalation may resume almost
    anywhere, so those edges show only when a workflow took them.
    """
    out: set[tuple[MachineState, MachineState]] = set()
    for spec in table:
        if spec.continuation or spec.trigger in ("escalate", "fail"):
            continue
        out.add((spec.source, spec.dest))
    return out


def _read_inside(workflow_id: str, workspace: Path, path: str) -> str:
    """The text of ``path`` under ``workspace``, refused when it resolves outside it."""
    root = workspace.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise AccessViolationError(
            f"workflow {workflow_id}: {path!r} lies outside its workspace; not served"
        )
    try:
        return target.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AccessViolationError(
            f"workflow {workflow_id}: cannot read {path!r} ({exc.strerror})"
        ) from exc


class ConsoleService:
    """What the console can see and do, over one store.

    Args:
        store: the workflows.
        clock: time for answers, new workflows and waiting times.
        launcher: runs workflows after an answer, a start or a resume; None: the console
            records answers and new workflows but leaves running them to the CLI.
        workspace_root: where new workflows get their workspace directory.
        new_id: makes workflow ids for workflows started in the browser.
        on_close: called last by ``close`` (closing a store the service was built with).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        launcher: RunLauncher | None,
        workspace_root: Path,
        new_id: Callable[[], str],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._on_close = on_close
        self._store = store
        self._clock = clock
        self._launcher = launcher
        self._workspace_root = workspace_root
        self._new_id = new_id
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._loading: dict[str, asyncio.Future[StoredWorkflow]] = {}
        self._questions: dict[str, _Question] = {}
        # Commits never change, so neither does the diff between two of them.
        self._diffs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._edges = drawn_edges(WorkflowMachine().table)
        self._host = socket.gethostname()

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    @property
    def can_run(self) -> bool:
        """Whether the console runs workflows itself (after answers, starts and resumes)."""
        return self._launcher is not None

    # --- reading -------------------------------------------------------------------------

    async def list_workflows(
        self,
        status: WorkflowStatus | None = None,
        gate: str | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> Page:
        """Workflows, the most recently updated first, optionally filtered, one page of them."""
        rows = await self._io(self._store.list_workflows, status)
        if gate is not None:
            rows = [r for r in rows if r.waiting_gate is not None and r.waiting_gate.value == gate]
        notes = await self._activities()
        items = [
            summary_row(r) | {"activity": notes.get(r.workflow_id)}
            for r in _window(rows, limit, offset)
        ]
        return Page(items=items, total=len(rows), offset=offset, limit=limit)

    async def _activities(self) -> dict[str, str]:
        """What each live lease's holder says it is doing, by workflow (``Lease.activity``)."""
        leases = await self._io(self._store.leases)
        now = self._clock.now()
        return {
            le.workflow_id: le.activity
            for le in leases
            if le.activity is not None and not lease_is_stale(le, now=now, host=self._host)
        }

    async def inbox(self, *, limit: int | None = None, offset: int = 0) -> Page:
        """The workflows waiting at a gate, the longest waiting first, with their questions.

        The listing comes from the store's summaries; what each workflow asks needs its
        state, which is loaded only for workflows whose version changed since the last
        inbox (kept per workflow and version, so an answer or a new decision is seen at
        once), all misses in one trip to the worker thread. Every waiting workflow is
        ordered, but only the page asked for (``offset``, at most ``limit`` items; None for
        all) is shaped into rows, so a page of an inbox of thousands stays cheap.
        """
        rows = await self._io(self._store.list_workflows, WorkflowStatus.AWAITING_HUMAN)
        waiting = [r for r in rows if r.waiting_gate is not None]  # else answered, not resumed
        known = self._questions
        missing = [
            r.workflow_id
            for r in waiting
            if (hit := known.get(r.workflow_id)) is None or hit.version != r.version
        ]
        if missing:
            loaded = await self._io(self._load_questions, missing)
            known = {**known, **loaded}
        fresh: dict[str, _Question] = {}
        asked: list[tuple[WorkflowSummary, _Question]] = []
        for row in waiting:
            q = known.get(row.workflow_id)
            if q is None:
                continue  # gone between the listing and the load
            fresh[row.workflow_id] = q
            asked.append((row, q))
        self._questions = fresh  # workflows that stopped waiting are forgotten
        asked.sort(key=lambda rq: (rq[1].asked.get("waiting_since") or "", rq[0].workflow_id))
        now = self._clock.now()
        items: list[dict[str, Any]] = []
        for row, q in _window(asked, limit, offset):
            item = summary_row(row) | q.asked
            item["waited_s"] = (now - q.since).total_seconds() if q.since is not None else None
            item["requirements"] = q.requirements
            items.append(item)
        return Page(items=items, total=len(asked), offset=offset, limit=limit)

    async def warm(self) -> None:
        """Read what every waiting workflow asks, so the first inbox is as fast as the next."""
        try:
            await self.inbox()
        except Exception as exc:  # the inbox will say what is wrong when someone asks
            log.warning("web.warm.failed", error=str(exc))

    def _load_questions(self, workflow_ids: Sequence[str]) -> dict[str, _Question]:
        out: dict[str, _Question] = {}
        for wid in workflow_ids:
            try:
                stored = self._store.load(wid)
            except UnknownWorkflowError:
                continue
            state = stored.state
            out[wid] = _Question(
                version=stored.version,
                asked=question(state),
                since=state.decisions[-1].decided_at if state.decisions else None,
                requirements=state.requirements,
            )
        return out

    async def _load(self, workflow_id: str) -> StoredWorkflow:
        """The stored workflow, read afresh (for answers and resumes)."""
        return await self._io(self._store.load, workflow_id)

    async def _view(self, workflow_id: str) -> StoredWorkflow:
        """The stored workflow to show; requests arriving while it is being read share that read.

        A page asks for a workflow's timeline, chart, diagram and rounds at once; one read
        serves them all. A request that joins a read in flight gets what the store held
        when that read began, no older than a read that had started just before it.
        """
        pending = self._loading.get(workflow_id)
        if pending is None:
            pending = asyncio.ensure_future(self._io(self._store.load, workflow_id))
            self._loading[workflow_id] = pending
            pending.add_done_callback(lambda _f: self._loading.pop(workflow_id, None))
        return await asyncio.shield(pending)

    def _running(self, workflow_id: str) -> bool:
        return self._drive_state(workflow_id)[0]

    def _drive_state(self, workflow_id: str) -> tuple[bool, str | None]:
        """Whether a live process drives the workflow, and what it says it is doing."""
        lease = self._store.lease(workflow_id)
        live = lease is not None and not lease_is_stale(
            lease, now=self._clock.now(), host=self._host
        )
        activity = lease.activity if lease is not None and live else None
        task = self._runs.get(workflow_id)
        return live or (task is not None and not task.done()), activity

    async def workflow(self, workflow_id: str) -> dict[str, Any]:
        """A workflow's summary, decision timeline, validation rounds, answers and artifacts."""
        stored = await self._view(workflow_id)
        state, config = stored.state, stored.config
        artifacts = await self._io(self._store.artifacts, workflow_id)
        running, activity = await self._io(self._drive_state, workflow_id)
        c = state.counters
        info = {
            "workflow": {
                "workflow_id": state.workflow_id,
                "status": state.status.value,
                "phase": state.phase,
                "machine_state": state.machine_state.value,
                "current_step": int(state.current_step) if state.current_step else None,
                "waiting_gate": state.waiting_gate.value if state.waiting_gate else None,
                "pending_answer": state.pending_answer.model_dump(mode="json")
                if state.pending_answer is not None
                else None,
                "running": running,
                "activity": activity,
                "version": stored.version,
                "decisions": len(state.decisions),
                "llm_calls": c.llm_calls,
                "tokens": c.prompt_tokens + c.completion_tokens,
                "requirements": state.requirements,
                "workspace": state.workspace,
                "created_at": iso(state.created_at),
                "updated_at": iso(state.updated_at),
            }
            | (question(state) if state.waiting_gate is not None else {}),
            "answers_allowed": [k.value for k in allowed_answers(state)]
            if state.waiting_gate is not None
            else [],
            "repository": _repository(config),
            "change": await self._io(change_view, state, config)
            if state.waiting_gate in _CHANGE_GATES
            else None,
            "decisions": [timeline_entry(r) for r in state.decisions],
            "validation_rounds": validation_rounds(state, config),
            "human_answers": [a.model_dump(mode="json") for a in state.human_answers],
            "artifacts": [
                {"kind": a.kind, "path": a.path, "recorded_at": a.recorded_at.isoformat()}
                for a in artifacts
            ],
            "config": config.model_dump(mode="json"),
        }
        return dict(json_safe(info))

    async def rounds(self, workflow_id: str) -> list[dict[str, Any]]:
        """Every attempt at every step with what it produced.

        Plans (their markdown), validation reports (scores against thresholds, tool results),
        code changes, errors.
        """
        stored = await self._view(workflow_id)
        commits = round_commits(stored.state, stored.config)
        diffs = await self._io(self._round_diffs, stored.config, commits) if commits else {}
        out: list[dict[str, Any]] = []
        for index, rec in enumerate(stored.state.history):
            out.append(
                {
                    "step": int(rec.step),
                    "name": STEP_SPECS[rec.step].name,
                    "attempt": rec.attempt,
                    "status": rec.status.value,
                    "started_at": iso(rec.started_at),
                    "finished_at": iso(rec.finished_at),
                    "change_requests": list(rec.change_requests),
                    "summary": scores_line(rec, stored.config),
                    "result": rec.result.model_dump(mode="json")
                    if rec.result is not None
                    else None,
                    "error": rec.error.model_dump(mode="json") if rec.error is not None else None,
                    "diff": diffs.get(index),
                }
            )
        return list(json_safe(out))

    def _round_diffs(
        self, config: WorkflowConfig, commits: Mapping[int, tuple[str, str]]
    ) -> dict[int, dict[str, Any]]:
        """Each code round's diff from the round before it, read from git once per pair."""
        worktree = config.repository.worktree
        if worktree is None:
            return {}
        out: dict[int, dict[str, Any]] = {}
        for index, (older, newer) in commits.items():
            key = (worktree, older, newer)
            hit = self._diffs.get(key)
            if hit is None:
                hit = round_diff(Path(worktree), older, newer)
                if "error" not in hit:
                    self._diffs[key] = hit
            out[index] = hit
        return out

    async def export(self, workflow_id: str) -> list[dict[str, Any]]:
        """The workflow's whole ledger."""
        entries = await self._io(self._store.ledger, workflow_id)
        return list(json_safe([ledger_json(e) for e in entries]))

    async def chart_svg(self, workflow_id: str) -> str:
        """The convergence chart: each score per round against its threshold, per phase."""
        stored = await self._view(workflow_id)
        return render_chart(validation_rounds(stored.state, stored.config))

    async def diagram_svg(self, workflow_id: str) -> str:
        """The state machine with this workflow's path and per-source edge counts."""
        stored = await self._view(workflow_id)
        return render_diagram(
            self._edges, edge_uses(stored.state), current=stored.state.machine_state
        )

    async def read_file(self, workflow_id: str, path: str) -> str:
        """A text file the workflow recorded as an artifact, read from its workspace.

        Raises:
            AccessViolationError: the path is not a recorded artifact, or it resolves
                outside the workspace (``..``, an absolute path, a symbolic link).
        """
        stored = await self._load(workflow_id)
        artifacts = await self._io(self._store.artifacts, workflow_id)
        if path not in {a.path for a in artifacts}:
            raise AccessViolationError(
                f"workflow {workflow_id} recorded no artifact {path!r}; list them at "
                f"/api/workflows/{workflow_id}/artifacts"
            )
        return await self._io(_read_inside, workflow_id, Path(stored.state.workspace), path)

    async def versions(self, known: Mapping[str, Version] | None = None) -> dict[str, Version]:
        """Each workflow's version and where it stands, for the live feed.

        Args:
            known: what the previous call returned. Only the workflows whose version
                moved since (or that are new) are then listed in full; the others are
                taken from it, so a poll over thousands of workflows that rarely change
                reads their versions and not their summaries.
        """
        known = known or {}
        if not known:
            rows = await self._io(self._store.list_workflows, None)
            current = {r.workflow_id: r.version for r in rows}
        else:
            current = await self._io(self._store.versions)
            moved = [w for w, v in current.items() if (k := known.get(w)) is None or k.version != v]
            rows = await self._io(self._store.list_workflows, ids=moved) if moved else []
        fresh = {
            r.workflow_id: Version(
                r.version,
                r.status.value,
                r.waiting_gate.value if r.waiting_gate is not None else None,
                r.updated_at.isoformat(),
            )
            for r in rows
        }
        notes = await self._activities()
        found: dict[str, Version] = {}
        for wid in current:
            # Listed after the versions: a workflow that moved in between is the newer one.
            v = fresh.get(wid) or known.get(wid)
            if v is None:
                continue
            note = notes.get(wid)
            found[wid] = v if v.activity == note else replace(v, activity=note)
        return found

    # --- changing ------------------------------------------------------------------------

    async def answer(
        self,
        workflow_id: str,
        gate: str,
        kind: HumanAnswerKind,
        *,
        by: str,
        changes: Sequence[str] = (),
        at: Sequence[tuple[str, str]] = (),
        comment: str | None = None,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Record an answer at ``gate`` through the CLI's path, then run on when asked.

        ``at`` holds change requests at a ``FILE:LINE`` of the workspace, checked as
        ``request-changes --at`` checks them.

        Raises:
            UnknownWorkflowError: no such workflow.
            AnswerRefusedError: it does not wait at ``gate`` (any more), or another answer
                got there first; nothing was recorded.
            HumanAnswerError: the answer itself does not fit (no change named, a line that
                is not in the workspace).
        """
        if at:
            fresh = await self._load(workflow_id)
            if fresh.state.waiting_gate is not None and fresh.state.waiting_gate.value == gate:
                workspace = fresh.state.workspace
                changes = (
                    *changes,
                    *(line_comment(workspace, w, t, label="at") for w, t in at),
                )
        try:
            state = await self._io(
                answer_workflow,
                self._store,
                self._clock,
                workflow_id,
                Gate(gate),
                kind,
                by=by,
                changes=tuple(changes),
                comment=comment,
            )
        except (HumanAnswerError, ConcurrencyError) as exc:
            if isinstance(exc, HumanAnswerError) and kind is HumanAnswerKind.REQUEST_CHANGES:
                fresh = await self._load(workflow_id)
                if fresh.state.waiting_gate is not None and fresh.state.waiting_gate.value == gate:
                    raise  # the gate is right: the answer itself is what does not fit
            raise await self._refusal(workflow_id, gate, exc) from exc
        answer = state.human_answers[-1]
        started = self._launch(workflow_id) if resume else False
        return {
            "workflow_id": workflow_id,
            "recorded": answer.model_dump(mode="json"),
            "resumed": started,
        }

    async def _refusal(self, workflow_id: str, gate: str, exc: Exception) -> AnswerRefusedError:
        fresh = (await self._load(workflow_id)).state
        now_at = fresh.waiting_gate.value if fresh.waiting_gate is not None else None
        pending = fresh.pending_answer
        if pending is not None:
            why = (
                f"workflow {workflow_id} was already answered at the '{pending.gate.value}' gate "
                f"({pending.answer.value} by {pending.by}); nothing was recorded"
            )
        elif now_at is None:
            why = (
                f"workflow {workflow_id} no longer waits at the '{gate}' gate (state "
                f"'{fresh.machine_state.value}'); nothing was recorded"
            )
        elif now_at != gate:
            why = (
                f"workflow {workflow_id} waits at the '{now_at}' gate, not '{gate}'; "
                "nothing was recorded; reload and answer there"
            )
        else:
            why = f"{exc}; reload the page and answer again"
        return AnswerRefusedError(
            why,
            workflow_id=workflow_id,
            waiting_gate=now_at,
            machine_state=fresh.machine_state.value,
        )

    async def start(
        self, requirements: str, config: Mapping[str, Any] | None, *, by: str
    ) -> dict[str, Any]:
        """Record a new workflow from a requirement (and a config), then run it when able.

        Raises:
            ConfigError: the requirement is empty or the config is invalid.
        """
        text = requirements.strip()
        if not text:
            raise ConfigError("the requirement is empty; say what to build")
        cfg: WorkflowConfig = parse_config(dict(config) if config else None, "the config")
        wid = self._new_id()
        workspace = (self._workspace_root / wid).resolve()
        await self._io(workspace.mkdir, parents=True, exist_ok=True)
        state = new_workflow(wid, text, str(workspace), self._clock.now())
        await self._io(self._store.create, state, cfg)
        log.info("workflow.created", workflow_id=wid, by=by, via="web")
        return {"workflow_id": wid, "started": self._launch(wid)}

    async def resume(self, workflow_id: str) -> dict[str, Any]:
        """Run a stored workflow on (after an answer, a crash or a restart).

        Raises:
            UnknownWorkflowError: no such workflow.
            ConcurrencyError: it is running already; nothing was started.
            ConfigError: this console does not run workflows.
        """
        stored = await self._load(workflow_id)
        if self._launcher is None:
            raise ConfigError(
                f"this console does not run workflows; run: orchestrator resume {workflow_id}"
            )
        if await self._io(self._running, workflow_id):
            raise ConcurrencyError(f"workflow {workflow_id} is running already; wait for it")
        self._launch(workflow_id)
        return {"workflow_id": workflow_id, "started": True, "from": stored.state.machine_state}

    def _launch(self, workflow_id: str) -> bool:
        if self._launcher is None:
            return False
        task = self._runs.get(workflow_id)
        if task is not None and not task.done():
            return True
        task = asyncio.create_task(self._run(workflow_id))
        self._runs[workflow_id] = task
        return True

    async def _run(self, workflow_id: str) -> None:
        assert self._launcher is not None
        try:
            await self._launcher.run(workflow_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed run is the workflow's business, not the server's
            log.warning("web.run.failed", workflow_id=workflow_id, error=str(exc))

    async def close(self) -> None:
        """Stop the runs this console started (their workflows resume where they stopped)."""
        tasks = [t for t in self._runs.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._on_close is not None:
            self._on_close()


def build_service(
    data_dir: Path | None,
    *,
    store: Store | None = None,
    run_workflows: bool = True,
    base_url: str | None = None,
    model: str | None = None,
) -> ConsoleService:
    """The console's service over the store in ``data_dir`` (the default data directory).

    Args:
        data_dir: where the workflow database lives (and, with ``store``, where new
            workflows' workspaces go).
        store: an already opened store to serve (``orchestrator serve --store URL``); the
            service closes it when it closes.
        run_workflows: run workflows after answers, starts and resumes (with the LLM the
            flags, the workflow's config or the environment name); False leaves that to
            ``orchestrator resume``.
        base_url: the LLM endpoint for those runs (overrides config and environment).
        model: the model for those runs.

    Raises:
        StoreError: the database cannot be opened.
    """
    folder = data_dir or default_data_dir()
    if store is None:
        store = open_store(folder)
    clock = SystemClock()
    launcher = (
        ModelRunLauncher(store, clock, base_url=base_url, model=model) if run_workflows else None
    )
    return ConsoleService(
        store,
        clock,
        launcher=launcher,
        workspace_root=folder / "workspaces",
        new_id=lambda: default_workflow_id(clock),
        on_close=store.close,
    )
