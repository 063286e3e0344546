"""Guards of the workflow state machine: named predicates over ``Facts``.

Each guard is one rule of WORKFLOW.md (convergence, a limit, a gate's switch or answer).
Their names appear in the rendered graph, so they read as conditions.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.deciding.facts import Facts
from state.steps import MachineState, phase_of_state
from state.usage import BUDGET_EXHAUSTED
from state.workflow import HumanAnswerKind

# Enum members bound once for the hot path (see orchestrator/deciding/facts.py).
_REJECT = HumanAnswerKind.REJECT

Guard = Callable[[Facts], bool]


def step_ok(f: Facts) -> bool:
    """The current step's latest attempt completed."""
    return f.step_ok


def can_retry(f: Facts) -> bool:
    """The latest attempt failed (or was interrupted) and the retry budget is not spent."""
    return (
        f.step_failed
        and (f.retryable or llm_budget_granted(f))
        and f.failures <= f.config.limits.max_step_retries
        and f.decisions_left > 0
    )


def cannot_retry(f: Facts) -> bool:
    """The latest attempt failed with an error retrying cannot fix.

    A spent retry budget is not enough: WORKFLOW.md escalates it to a human, so no one (an
    LLM included) may fail the workflow on those grounds.
    """
    return f.step_failed and not f.retryable and not llm_budget_spent(f)


def llm_budget_spent(f: Facts) -> bool:
    """The latest attempt was refused its LLM calls: the workflow's budget is spent.

    Such a step is not retried (nothing changed) and not failed either: more budget is a
    human's call, so the workflow escalates.
    """
    error = f.record.error if f.record is not None else None
    return error is not None and error.type == BUDGET_EXHAUSTED


def llm_budget_granted(f: Facts) -> bool:
    """A step refused for want of LLM budget, escalated: a human going on grants fresh budget."""
    return f.machine_state is MachineState.ESCALATED and llm_budget_spent(f)


def decisions_left(f: Facts) -> bool:
    """The workflow has not reached max_decisions since its last budget reset."""
    return f.decisions_left > 0


def plan_converged(f: Facts) -> bool:
    """The latest plan report meets every phase-1 criterion."""
    return f.plan_converged


def plan_not_converged(f: Facts) -> bool:
    """The latest plan report misses a phase-1 criterion."""
    return not f.plan_converged


def plan_revisions_left(f: Facts) -> bool:
    """Fewer than max_plan_revisions revisions were done."""
    return f.plan_revisions_left > 0


def code_converged(f: Facts) -> bool:
    """The latest code reports meet every phase-2 criterion."""
    return f.code_converged


def code_not_converged(f: Facts) -> bool:
    """The latest code reports miss a phase-2 criterion."""
    return not f.code_converged


def code_refinements_left(f: Facts) -> bool:
    """Fewer than max_code_refinements refinements were done."""
    return f.code_refinements_left > 0


def plan_gate_on(f: Facts) -> bool:
    """The plan gate is on."""
    return f.config.gates.plan


def plan_gate_off(f: Facts) -> bool:
    """The plan gate is off."""
    return not f.config.gates.plan


def code_review_gate_on(f: Facts) -> bool:
    """The code_review gate is on."""
    return f.config.gates.code_review


def code_review_gate_off(f: Facts) -> bool:
    """The code_review gate is off."""
    return not f.config.gates.code_review


def final_gate_on(f: Facts) -> bool:
    """The final gate is on."""
    return f.config.gates.final


def final_gate_off(f: Facts) -> bool:
    """The final gate is off."""
    return not f.config.gates.final


def _answered(kind: HumanAnswerKind) -> Guard:
    def guard(f: Facts) -> bool:
        return f.answer is not None and f.answer.answer is kind

    guard.__name__ = f"human_{kind.value}"
    guard.__doc__ = f"A human answered {kind.value} at this gate."
    return guard


human_approved = _answered(HumanAnswerKind.APPROVE)
human_rejected = _answered(HumanAnswerKind.REJECT)
human_requested_changes = _answered(HumanAnswerKind.REQUEST_CHANGES)


def human_continues(f: Facts) -> bool:
    """A human answered an escalation with approve or with guidance: carry on."""
    return f.answer is not None and f.answer.answer is not _REJECT


def has_plan(f: Facts) -> bool:
    """A plan has been written."""
    return f.has_plan


def has_code(f: Facts) -> bool:
    """Code has been written."""
    return f.has_code


def origin_is(state: MachineState) -> Guard:
    """The escalation interrupted ``state``: continuing resumes from there."""

    def guard(f: Facts) -> bool:
        return f.origin is state

    guard.__name__ = f"from_{state.value}"
    guard.__doc__ = f"The escalation interrupted {state.value}."
    return guard


def origin_in_phase(phase: int) -> Guard:
    """The escalation interrupted a state of ``phase``."""

    def guard(f: Facts) -> bool:
        return phase_of_state(f.origin) == phase or (
            phase_of_state(f.origin) is None and f.state.phase == phase
        )

    guard.__name__ = f"in_phase_{phase}"
    guard.__doc__ = f"The escalation happened in phase {phase}."
    return guard
