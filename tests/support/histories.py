"""Workflows driven by the real engine, commit by commit, for the store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.running.updates import complete_step, fail_step, new_workflow, record_answer
from state.clock import FixedClock
from state.config import WorkflowConfig
from state.reports import PlanDraft, PlanValidationReport
from state.steps import Step, WorkflowStatus
from state.store import DecisionEntry, HumanAnswerEntry, LedgerEntryIn, StepResultEntry
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def long_history(wid: str, commits: int) -> list[tuple[WorkflowState, list[LedgerEntryIn]]]:
    """A plan that never converges: revisions, escalations let go on, every 5th attempt failed.

    Each item is a state to commit and its ledger entries; a decision that starts a step
    commits the step's record while it runs, and the next commit replaces it with the
    completed or failed one, as the runner does.
    """
    engine = DecisionPipeline(WorkflowMachine(), FixedClock(T0))
    tick, config = FixedClock(T0, timedelta(seconds=1)), WorkflowConfig()
    state = new_workflow(wid, "create a data preprocessing step", "/ws", T0)
    weak = PlanValidationReport(
        alignment_score=4.0,
        standardization_score=4.0,
        compatibility_score=4.0,
        critical_issues=2,
        minor_issues=3,
        markdown="weak",
    )
    out: list[tuple[WorkflowState, list[LedgerEntryIn]]] = []
    attempts = 0
    while len(out) < commits:
        if state.status is WorkflowStatus.AWAITING_HUMAN and state.pending_answer is None:
            state = record_answer(state, None, HumanAnswerKind.APPROVE, by="al", now=tick.now())
            out.append((state, [HumanAnswerEntry(state.human_answers[-1])]))
            continue
        state, record = engine.decide_by_rule(state, config)
        out.append((state, [DecisionEntry(record)]))
        running = state.history[-1] if state.history else None
        if running is None or running.status is not StepStatus.RUNNING:
            continue
        attempts += 1
        if attempts % 5 == 0:
            state = fail_step(state, "timeout", "the agent took too long", tick.now())
        elif running.step is Step.PLAN_VALIDATION:
            state = complete_step(state, weak, tick.now())
        else:
            state = complete_step(state, PlanDraft(version=attempts, markdown="# v"), tick.now())
        out.append((state, [StepResultEntry(state.history[-1])]))
    return out
