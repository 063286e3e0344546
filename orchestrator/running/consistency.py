"""Refusing states that validate field by field but break the workflow's rules.

A snapshot from a file, a store or another program may claim step 5 in phase 1, code steps
before an approved plan, or a history that skips steps. Deciding on such a state could move
a workflow illegally, so it is refused with the reason instead.
"""

from __future__ import annotations

from orchestrator.deciding.facts import plan_converged
from state.config import WorkflowConfig
from state.errors import InconsistentStateError
from state.reports import PlanValidationReport
from state.steps import (
    GATE_OF_STATE,
    STEP_OF_STATE,
    STEP_SPECS,
    TERMINAL_STATES,
    Gate,
    MachineState,
    Step,
    phase_of_state,
)
from state.workflow import HumanAnswerKind, StepRecord, StepStatus, WorkflowState

# Which step may follow which (a retry repeats the same step). A human's guidance at an
# escalation may send a fresh plan (step 1) or fresh code (step 4) straight to revision.
NEXT_STEPS: dict[Step, frozenset[Step]] = {
    Step.INITIAL_PLANNING: frozenset({Step.PLAN_VALIDATION, Step.PLAN_REVISION}),
    Step.PLAN_VALIDATION: frozenset({Step.PLAN_REVISION, Step.IMPLEMENTATION}),
    Step.PLAN_REVISION: frozenset({Step.PLAN_VALIDATION}),
    Step.IMPLEMENTATION: frozenset({Step.CODE_VALIDATION, Step.CODE_REFINEMENT}),
    Step.CODE_VALIDATION: frozenset({Step.CODE_REFINEMENT}),
    Step.CODE_REFINEMENT: frozenset({Step.CONVERGENCE_VALIDATION}),
    Step.CONVERGENCE_VALIDATION: frozenset({Step.CODE_REFINEMENT}),
}


def check_consistency(state: WorkflowState, config: WorkflowConfig) -> None:
    """Refuse a state that breaks the workflow's rules.

    Raises:
        InconsistentStateError: with the first problem found and the workflow's id.
    """
    problem = find_inconsistency(state, config)
    if problem is not None:
        raise InconsistentStateError(
            f"workflow {state.workflow_id}: inconsistent state: {problem}; refusing to decide "
            "on it (fix the snapshot or restore it from the store)"
        )


def find_inconsistency(state: WorkflowState, config: WorkflowConfig) -> str | None:
    """The first rule ``state`` breaks, or None."""
    return (
        _phase_problem(state)
        or _history_problem(state)
        or _plan_approval_problem(state, config)
        or _counter_problem(state)
        or _answer_problem(state)
    )


def _phase_problem(state: WorkflowState) -> str | None:
    ms = state.machine_state
    phase = phase_of_state(ms)
    if phase is not None and phase != state.phase:
        return f"machine state '{ms.value}' belongs to phase {phase}, but phase is {state.phase}"
    step = STEP_OF_STATE.get(ms)
    if step is not None and state.current_step is not step:
        current = int(state.current_step) if state.current_step else None
        return f"machine state '{ms.value}' runs step {int(step)}, but current_step is {current}"
    if state.current_step is not None and STEP_SPECS[state.current_step].phase > state.phase:
        return f"current step {int(state.current_step)} is a phase-2 step, but phase is 1"
    if ms is MachineState.NEW and (state.history or state.decisions):
        return "machine state 'new' with steps or decisions already recorded"
    if ms is not MachineState.NEW and not state.decisions and ms not in TERMINAL_STATES:
        return f"machine state '{ms.value}' with no decision recorded"
    if state.decisions and state.decisions[-1].state_after is not ms:
        last = state.decisions[-1]
        return (
            f"the last decision (#{last.seq}) moved the workflow to "
            f"'{last.state_after.value}', but the machine state is '{ms.value}'"
        )
    for i, rec in enumerate(state.decisions, start=1):
        if rec.seq != i:
            return f"decision #{i} is numbered {rec.seq}"
    return None


def _history_problem(state: WorkflowState) -> str | None:
    history = state.history
    if not history:
        if state.current_step is not None or state.last_completed_step is not None:
            return "current or last completed step set, but no step has run"
        return None
    if history[0].step is not Step.INITIAL_PLANNING:
        return f"the history starts with step {int(history[0].step)}, not step 1"
    prev = history[0]
    for rec in history[1:]:
        if prev.status is StepStatus.RUNNING:
            return f"step {int(prev.step)} is still running, but step {int(rec.step)} followed"
        if rec.step is prev.step:
            if prev.status is StepStatus.COMPLETED and rec.step not in (
                Step.PLAN_REVISION,
                Step.CODE_REFINEMENT,
            ):
                return f"step {int(rec.step)} ran again after it completed"
        elif prev.status is not StepStatus.COMPLETED and not _guided(state, prev, rec):
            return (
                f"step {int(rec.step)} followed step {int(prev.step)}, which "
                f"{prev.status.value} and was never completed"
            )
        elif (
            prev.status is StepStatus.COMPLETED
            and rec.step not in NEXT_STEPS[prev.step]
            and not _accepted(state, prev, rec)
        ):
            return f"the history skips steps: step {int(prev.step)} is followed by {int(rec.step)}"
        prev = rec
    if STEP_SPECS[history[-1].step].phase > state.phase:
        return f"step {int(history[-1].step)} ran, but the workflow is in phase 1"
    for rec in history:
        if rec.status is StepStatus.COMPLETED and rec.result is None:
            return f"step {int(rec.step)} completed without a result"
        if rec.status is StepStatus.FAILED and rec.error is None:
            return f"step {int(rec.step)} failed without an error"
    completed = [r.step for r in history if r.status is StepStatus.COMPLETED]
    last_done = completed[-1] if completed else None
    if state.last_completed_step is not last_done:
        return (
            f"last_completed_step is {state.last_completed_step}, but the history's last "
            f"completed step is {last_done}"
        )
    running = history[-1].status is StepStatus.RUNNING
    if running and STEP_OF_STATE.get(state.machine_state) is not history[-1].step:
        return (
            f"step {int(history[-1].step)} is running, but the machine state is "
            f"'{state.machine_state.value}'"
        )
    return None


def _guided(state: WorkflowState, failed: StepRecord, after: StepRecord) -> bool:
    """A human answered an escalation between a failed step and the different step after it."""
    return any(
        a.gate is Gate.ESCALATION
        and a.answer is not HumanAnswerKind.REJECT
        and failed.decision_seq <= a.after_decision < after.decision_seq
        for a in state.human_answers
    )


def _accepted(state: WorkflowState, before: StepRecord, after: StepRecord) -> bool:
    """Whether a human accepted the plan as it stands at an escalation between two steps.

    Then the implementation may follow any plan step.
    """
    return after.step is Step.IMPLEMENTATION and any(
        a.gate is Gate.ESCALATION
        and a.answer is HumanAnswerKind.ACCEPT
        and before.decision_seq <= a.after_decision < after.decision_seq
        for a in state.human_answers
    )


def _plan_approval_problem(state: WorkflowState, config: WorkflowConfig) -> str | None:
    """Code steps need a converged (and, with the plan gate on, approved) or accepted plan.

    Accepted: a human took the plan as it stands at an escalation.
    """
    first_code = next(
        (i for i, r in enumerate(state.history) if STEP_SPECS[r.step].phase == 2), None
    )
    if first_code is None:
        return None
    report = next(
        (
            r.result
            for r in reversed(state.history[:first_code])
            if isinstance(r.result, PlanValidationReport)
        ),
        None,
    )
    accepted = any(
        a.gate is Gate.ESCALATION and a.answer is HumanAnswerKind.ACCEPT
        for a in state.human_answers
    )
    approved = accepted or any(
        a.gate in (Gate.PLAN, Gate.ESCALATION) and a.answer is HumanAnswerKind.APPROVE
        for a in state.human_answers
    )
    if report is None and not accepted:
        return "code steps ran before any plan was validated"
    if report is not None and not plan_converged(report, config.plan_thresholds) and not approved:
        return "code steps ran before the plan converged or was approved"
    if config.gates.plan and not approved:
        return "code steps ran before the plan was approved at the plan gate"
    return None


def _counter_problem(state: WorkflowState) -> str | None:
    done = [r.step for r in state.history if r.status is StepStatus.COMPLETED]
    revisions = done.count(Step.PLAN_REVISION)
    refinements = done.count(Step.CODE_REFINEMENT)
    c = state.counters
    if c.plan_revisions != revisions:
        return f"counters say {c.plan_revisions} plan revisions, the history shows {revisions}"
    if c.code_refinements != refinements:
        return (
            f"counters say {c.code_refinements} code refinements, the history shows {refinements}"
        )
    base = state.budget_base
    if (
        base.plan_revisions > c.plan_revisions
        or base.code_refinements > c.code_refinements
        or base.decisions > len(state.decisions)
    ):
        return "budget_base is ahead of the counts it was taken from"
    return None


def _answer_problem(state: WorkflowState) -> str | None:
    pending = state.pending_answer
    if pending is None:
        return None
    gate = GATE_OF_STATE.get(state.machine_state)
    if gate is None:
        return (
            f"an unanswered human answer ({pending.answer.value} at {pending.gate.value}) "
            f"is pending, but the workflow is not at a gate"
        )
    if pending.gate is not gate:
        return f"the pending answer is for the '{pending.gate.value}' gate, not '{gate.value}'"
    return None
