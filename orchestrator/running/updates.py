"""Recording what happens between decisions: step results, step errors, human answers.

Each function returns a new state; none of them decides anything. They refuse, with an
error that names the workflow and what to do, anything that does not fit the state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orchestrator.deciding.facts import work_to_accept
from state.build import new_human_answer, replace
from state.errors import DecisionError, HumanAnswerError
from state.fast import (
    ANSWER_ACCEPT,
    ANSWER_REJECT,
    ANSWER_REQUEST_CHANGES,
    STATE_ESCALATED,
    STEP_CODE_REFINEMENT,
    STEP_PLAN_REVISION,
    STEP_STATUS_COMPLETED,
    STEP_STATUS_FAILED,
    STEP_STATUS_RUNNING,
)
from state.reports import (
    CodeChange,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
)
from state.steps import GATE_OF_STATE, Gate, Step
from state.workflow import (
    BudgetBase,
    HumanAnswerKind,
    StepError,
    StepErrorType,
    StepRecord,
    WorkflowState,
    answer_kinds_at,
)

StepResultT = PlanDraft | PlanValidationReport | CodeValidationReport | CodeChange

_EXPECTED_RESULT: dict[Step, type[StepResultT]] = {
    Step.INITIAL_PLANNING: PlanDraft,
    Step.PLAN_VALIDATION: PlanValidationReport,
    STEP_PLAN_REVISION: PlanDraft,
    Step.IMPLEMENTATION: CodeChange,
    Step.CODE_VALIDATION: CodeValidationReport,
    STEP_CODE_REFINEMENT: CodeChange,
    Step.CONVERGENCE_VALIDATION: CodeValidationReport,
}


def new_workflow(
    workflow_id: str, requirements: str, workspace: str, now: datetime
) -> WorkflowState:
    """A fresh workflow that has not decided anything yet."""
    return WorkflowState(
        workflow_id=workflow_id,
        requirements=requirements,
        workspace=workspace,
        created_at=now,
        updated_at=now,
    )


def running_record(state: WorkflowState) -> StepRecord:
    """The attempt in flight.

    Raises:
        DecisionError: no step is running.
    """
    rec = state.last_record
    if rec is None or rec.status is not STEP_STATUS_RUNNING:
        raise DecisionError(
            f"workflow {state.workflow_id}: no step is running (state "
            f"'{state.machine_state.value}'); decide first"
        )
    return rec


def complete_step(state: WorkflowState, result: StepResultT, now: datetime) -> WorkflowState:
    """Record the running step's result.

    Raises:
        DecisionError: no step is running, or the result is not what the step produces.
    """
    rec = running_record(state)
    step = rec.step
    expected = _EXPECTED_RESULT[step]
    if not isinstance(result, expected):
        raise DecisionError(
            f"workflow {state.workflow_id}: step {int(step)} produces a "
            f"{expected.__name__}, not a {type(result).__name__}"
        )
    done = replace(rec, status=STEP_STATUS_COMPLETED, finished_at=now, result=result)
    history = (*state.history[:-1], done)
    if step is STEP_PLAN_REVISION or step is STEP_CODE_REFINEMENT:
        c = state.counters
        counters = (
            replace(c, plan_revisions=c.plan_revisions + 1)
            if step is STEP_PLAN_REVISION
            else replace(c, code_refinements=c.code_refinements + 1)
        )
        return replace(
            state, history=history, last_completed_step=step, counters=counters, updated_at=now
        )
    return replace(state, history=history, last_completed_step=step, updated_at=now)


def fail_step(
    state: WorkflowState,
    error_type: StepErrorType | str,
    message: str,
    now: datetime,
    *,
    retryable: bool = True,
) -> WorkflowState:
    """Record that the running step failed.

    Raises:
        DecisionError: no step is running.
    """
    rec = running_record(state)
    try:
        kind = StepErrorType(error_type)
    except ValueError:  # an agent's new kind of failure: kept, in the message
        kind, message = StepErrorType.INTERNAL_ERROR, f"({error_type}) {message}"
    error = StepError(type=kind, message=message, attempts=rec.attempt, retryable=retryable)
    failed = replace(rec, status=STEP_STATUS_FAILED, finished_at=now, error=error)
    return replace(state, history=(*state.history[:-1], failed), updated_at=now)


def mark_interrupted(state: WorkflowState, now: datetime) -> WorkflowState:
    """Record that the running step was interrupted (its process died), so it is retried."""
    return fail_step(
        state,
        StepErrorType.INTERRUPTED,
        "the process running this step stopped before it finished",
        now,
    )


def allowed_answers(state: WorkflowState) -> tuple[HumanAnswerKind, ...]:
    """The answers a human may give where ``state`` waits (none when it does not wait).

    Accepting work as it stands answers an escalation only, and only once there is work to
    accept: a plan when the escalation interrupted phase 1, code in phase 2.
    """
    gate = GATE_OF_STATE.get(state.machine_state)
    if gate is None:
        return ()
    kinds = answer_kinds_at(gate)
    if ANSWER_ACCEPT in kinds and work_to_accept(state) is None:
        return tuple(k for k in kinds if k is not ANSWER_ACCEPT)
    return kinds


def record_answer(
    state: WorkflowState,
    gate: Gate | None,
    answer: HumanAnswerKind,
    *,
    by: str,
    now: datetime,
    changes: tuple[str, ...] = (),
    comment: str | None = None,
) -> WorkflowState:
    """Record a human's answer at the gate the workflow waits at.

    Args:
        gate: the gate the human means to answer; None answers whichever gate is waiting.

    Raises:
        HumanAnswerError: the workflow is not waiting, waits at another gate, was already
            answered, or changes were requested without saying which.
    """
    wid = state.workflow_id
    waiting = GATE_OF_STATE.get(state.machine_state)
    if waiting is None:
        raise HumanAnswerError(
            f"workflow {wid} is not waiting for a human (state "
            f"'{state.machine_state.value}'); nothing was recorded"
        )
    if state.pending_answer is not None:
        raise HumanAnswerError(
            f"workflow {wid} was already answered at the '{waiting.value}' gate "
            f"({state.pending_answer.answer.value} by {state.pending_answer.by}); resume it"
        )
    if gate is not None and gate is not waiting:
        raise HumanAnswerError(
            f"workflow {wid} waits at the '{waiting.value}' gate, not '{gate.value}'; "
            "nothing was recorded"
        )
    if answer is ANSWER_ACCEPT and answer not in allowed_answers(state):
        if waiting is not Gate.ESCALATION:
            raise HumanAnswerError(
                f"workflow {wid} waits at the '{waiting.value}' gate: accept answers an "
                "escalation only; answer approve, reject or request-changes; nothing was recorded"
            )
        raise HumanAnswerError(
            f"workflow {wid}: there is no {'plan' if state.phase == 1 else 'code'} to accept "
            "yet; answer approve, reject or request-changes; nothing was recorded"
        )
    changes = tuple(c.strip() for c in changes if c.strip())
    if answer is ANSWER_REQUEST_CHANGES and not changes:
        raise HumanAnswerError(
            f"workflow {wid}: request-changes needs at least one change (--change TEXT)"
        )
    if not by.strip():
        raise HumanAnswerError(f"workflow {wid}: say who answers (--as NAME)")
    # Every value is checked above or typed by the caller; the builder shares the fields-set
    # across answers (memory of thousands of resident workflows).
    record = new_human_answer(
        gate=waiting,
        answer=answer,
        changes=changes,
        comment=comment,
        by=by,
        at=now,
        after_decision=len(state.decisions),
    )
    update: dict[str, Any] = {"human_answers": (*state.human_answers, record), "updated_at": now}
    if state.machine_state is STATE_ESCALATED and answer is not ANSWER_REJECT:
        # A human who lets an escalated workflow go on grants it fresh budgets.
        update["budget_base"] = BudgetBase(
            plan_revisions=state.counters.plan_revisions,
            code_refinements=state.counters.code_refinements,
            decisions=len(state.decisions),
            llm_calls=state.counters.llm_calls,
            llm_tokens=state.counters.prompt_tokens + state.counters.completion_tokens,
        )
    return replace(state, **update)
