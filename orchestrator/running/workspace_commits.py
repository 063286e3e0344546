"""The runner's workspace hooks for ``--repo`` workflows: one commit per round, restored on resume.

Every plan (steps 1 and 3) and every implementation or refinement round (steps 4 and 6) is
one commit on the workflow's branch, made right after the agent finished and before the
step's result is recorded; the sha goes into the result (``PlanDraft.commit``,
``CodeChange.commit``), so the store is the record of which commits belong to the workflow.

Crash safety follows from that order. A process killed while an agent wrote files, or after
``git commit`` but before the result reached the store, leaves the worktree ahead of the
last recorded commit; the step itself is recorded as interrupted and retried. So on every
run, before the first decision, the worktree is put back at the last recorded commit (the
base, before any): a half-applied change is discarded and an unrecorded commit leaves the
branch, and the retried attempt makes the round's one commit. A recorded commit is never
reset away, nor is a commit someone else made on the branch (one without this workflow's
``Orchestrator-Workflow`` trailer): the worktree goes back to the newest such commit, so a
reviewer may commit on the branch at a gate and the next round builds on it. Uncommitted
changes in the worktree are discarded: they cannot be told apart from a half-applied round.
Within one attempt the commit is idempotent: a HEAD whose message already names this
workflow, step and attempt is reused, not committed again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from orchestrator.repository import git
from state.config import WorkflowConfig
from state.reports import CodeChange, PlanDraft
from state.steps import Step
from state.store import EventEntry
from state.workflow import StepRecord, StepStatus, WorkflowState

log = structlog.get_logger(__name__)

ROUND_STEPS = frozenset(
    {Step.INITIAL_PLANNING, Step.PLAN_REVISION, Step.IMPLEMENTATION, Step.CODE_REFINEMENT}
)
"""The steps whose every completed attempt is a commit (they write the workspace)."""

_KIND = {
    Step.INITIAL_PLANNING: "plan",
    Step.PLAN_REVISION: "plan revision",
    Step.IMPLEMENTATION: "implementation",
    Step.CODE_REFINEMENT: "code refinement",
}


def recorded_commit(state: WorkflowState, config: WorkflowConfig) -> str | None:
    """The last round commit the store records, else the base commit (None: no repository)."""
    repo = config.repository
    if not repo.enabled:
        return None
    for rec in reversed(state.history):
        res = rec.result
        if (
            rec.status is StepStatus.COMPLETED
            and isinstance(res, PlanDraft | CodeChange)
            and res.commit
        ):
            return res.commit
    return repo.base_commit


def round_of(state: WorkflowState, step: Step) -> int:
    """Which round the running attempt of ``step`` is: plans and code counted apart."""
    family = (
        {Step.INITIAL_PLANNING, Step.PLAN_REVISION}
        if step in (Step.INITIAL_PLANNING, Step.PLAN_REVISION)
        else {Step.IMPLEMENTATION, Step.CODE_REFINEMENT}
    )
    done = sum(1 for r in state.history if r.step in family and r.status is StepStatus.COMPLETED)
    return done + 1


def commit_message(workflow_id: str, rec: StepRecord, round_no: int, summary: str) -> str:
    """The round commit's message: a subject naming workflow, step and round, then trailers."""
    kind = _KIND.get(rec.step, rec.step.name.lower())
    subject = f"orchestrator {workflow_id}: step {int(rec.step)} {kind}, round {round_no}"
    body = summary.strip()
    trailers = (
        f"Orchestrator-Workflow: {workflow_id}\n"
        f"Orchestrator-Step: {int(rec.step)}\n"
        f"Orchestrator-Round: {round_no}\n"
        f"Orchestrator-Attempt: {rec.attempt}\n"
    )
    return f"{subject}\n\n{body[:4000]}\n\n{trailers}" if body else f"{subject}\n\n{trailers}"


def _same_attempt(message: str, workflow_id: str, rec: StepRecord) -> bool:
    lines = set(message.splitlines())
    return {
        f"Orchestrator-Workflow: {workflow_id}",
        f"Orchestrator-Step: {int(rec.step)}",
        f"Orchestrator-Attempt: {rec.attempt}",
    } <= lines


def commit_round_sync(
    state: WorkflowState, config: WorkflowConfig, result: PlanDraft | CodeChange
) -> PlanDraft | CodeChange:
    """Commit the running step's change in the worktree; the result with its commit sha."""
    repo = config.repository
    rec = state.history[-1]
    if not repo.enabled or repo.worktree is None:
        return result
    worktree = Path(repo.worktree)
    current = git.head(worktree)
    recorded = recorded_commit(state, config)
    if (
        current != recorded
        and git.is_clean(worktree)
        and _same_attempt(git.message_of(worktree, current), state.workflow_id, rec)
    ):
        sha = current  # this attempt's commit is made already: do not make it twice
    else:
        summary = result.summary if isinstance(result, CodeChange) else ""
        message = commit_message(state.workflow_id, rec, round_of(state, rec.step), summary)
        sha = git.commit_all(worktree, message)
    log.info(
        "workspace.committed",
        workflow_id=state.workflow_id,
        step=int(rec.step),
        attempt=rec.attempt,
        commit=sha,
        branch=repo.branch,
    )
    return result.model_copy(update={"commit": sha})


async def commit_round(
    state: WorkflowState, config: WorkflowConfig, result: PlanDraft | CodeChange
) -> PlanDraft | CodeChange:
    """``commit_round_sync`` off the event loop (no thread hop without a repository)."""
    if not config.repository.enabled:
        return result
    return await asyncio.to_thread(commit_round_sync, state, config, result)


def restore_sync(state: WorkflowState, config: WorkflowConfig) -> EventEntry | None:
    """Put the worktree back at the last recorded commit if it moved past it or is dirty.

    Returns:
        The ``workspace_restored`` ledger event when something was discarded, else None.

    Raises:
        GitError: the worktree is gone or git failed (the message says which).
    """
    repo = config.repository
    recorded = recorded_commit(state, config)
    if recorded is None or repo.worktree is None:
        return None
    worktree = Path(repo.worktree)
    if not worktree.is_dir():
        raise git.GitError(
            f"workflow {state.workflow_id}: its worktree {worktree} is gone; recreate it with: "
            f"git -C {repo.path} worktree prune && git -C {repo.path} worktree add "
            f"{worktree} {repo.branch}"
        )
    # git killed mid-commit leaves its lock; the lease says no one else works here
    unlocked = git.remove_stale_index_lock(worktree)
    current = git.head(worktree)
    clean = git.is_clean(worktree)
    if current == recorded and clean and not unlocked:
        return None
    if not git.is_ancestor(worktree, recorded, current):
        raise git.GitError(
            f"workflow {state.workflow_id}: branch {repo.branch} no longer contains its last "
            f"recorded commit {recorded[:12]} (HEAD is {current[:12]}); restore the branch "
            f"with: git -C {worktree} reset --hard {recorded}"
        )
    target = recorded
    for sha, message in git.commits_between(worktree, recorded, current):
        if f"Orchestrator-Workflow: {state.workflow_id}" not in message.splitlines():
            target = sha  # a person's commit on the branch is kept, and what it is built on
            break
    if target == current and clean and not unlocked:
        return None
    git.reset_to(worktree, target)
    log.warning(
        "workspace.restored",
        workflow_id=state.workflow_id,
        discarded_from=current,
        restored_to=target,
        was_dirty=not clean,
        stale_lock=unlocked,
    )
    data = {"from": current, "to": target, "dirty": not clean, "branch": repo.branch}
    return EventEntry("workspace_restored", data | ({"stale_lock": True} if unlocked else {}))


async def restore(state: WorkflowState, config: WorkflowConfig) -> EventEntry | None:
    """``restore_sync`` off the event loop (no thread hop without a repository)."""
    if not config.repository.enabled:
        return None
    return await asyncio.to_thread(restore_sync, state, config)
