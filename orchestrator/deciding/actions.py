"""Turning a machine trigger into a ``Decision`` and back.

The LLM and scripts choose a trigger among the legal actions; the machine's rules choose one
by priority. Either way the ``Decision`` is built here, with the agent, templates and context
the workflow assigns to the step (see docs/workflow.md), so every source describes an action
the same way.
"""

from __future__ import annotations

from orchestrator.deciding import table as m
from orchestrator.deciding.facts import Facts
from state.decision import ActionKind, Decision, EscalationReason, RecoveryStrategy
from state.errors import IllegalTransitionError
from state.fast import ACTION_INVOKE_AGENT, ACTION_REQUEST_APPROVAL, STEP_IMPLEMENTATION
from state.steps import GATE_OF_STATE, STEP_OF_STATE, STEP_SPECS, MachineState, Step
from state.workflow import StepErrorType

STEP_CONTEXT: dict[Step, tuple[str, ...]] = {
    Step.INITIAL_PLANNING: ("requirements", "workspace_context"),
    Step.PLAN_VALIDATION: ("requirements", "plan"),
    Step.PLAN_REVISION: ("requirements", "plan", "latest_plan_report", "change_requests"),
    Step.IMPLEMENTATION: ("approved_plan", "workspace_context", "change_requests"),
    Step.CODE_VALIDATION: ("plan", "code"),
    Step.CODE_REFINEMENT: ("plan", "code", "latest_code_reports", "change_requests"),
    Step.CONVERGENCE_VALIDATION: ("plan", "code"),
}

_INVOKE_STEP = {trigger: step for step, trigger in m.INVOKE.items()}
_GATE_OF_TRIGGER = {trigger: GATE_OF_STATE[st] for st, trigger in m.REQUEST_APPROVAL.items()}
_TRIGGER_OF_ACTION = {
    ActionKind.TRANSITION_PHASE: m.TRANSITION_PHASE,
    ActionKind.RETRY_STEP: m.RETRY,
    ActionKind.ESCALATE: m.ESCALATE,
    ActionKind.COMPLETE: m.COMPLETE,
    ActionKind.FAIL: m.FAIL,
    ActionKind.REJECT: m.REJECT,
}


def trigger_of(decision: Decision) -> str:
    """The machine trigger that carries out ``decision``.

    Raises:
        IllegalTransitionError: the decision names no action the machine has.
    """
    action = decision.action
    if action is ACTION_INVOKE_AGENT:
        if decision.step is None or decision.step not in m.INVOKE:
            raise IllegalTransitionError("an invoke_agent decision must name a step 1-7")
        if decision.step is STEP_IMPLEMENTATION:
            return m.TRANSITION_PHASE
        return m.INVOKE[decision.step]
    if action is ACTION_REQUEST_APPROVAL:
        for trig, gate in _GATE_OF_TRIGGER.items():
            if gate is decision.gate:
                return trig
        raise IllegalTransitionError(
            f"no approval can be requested at gate '{decision.gate}'; escalate instead"
        )
    return _TRIGGER_OF_ACTION[action]


def target_step(trigger: str, facts: Facts) -> Step | None:
    """The step a trigger starts (None when it starts no step)."""
    if trigger in _INVOKE_STEP:
        return _INVOKE_STEP[trigger]
    if trigger == m.TRANSITION_PHASE:
        return STEP_IMPLEMENTATION
    if trigger == m.RETRY:
        return facts.step
    return None


_RECOVERY = {
    StepErrorType.TIMEOUT: RecoveryStrategy.EXTENDED_TIMEOUT,
    # Bad output or a bad workspace: retried with the problem in the agent's input.
    StepErrorType.INVALID_OUTPUT: RecoveryStrategy.CORRECTED_INPUT,
    StepErrorType.WORKSPACE_ERROR: RecoveryStrategy.CORRECTED_INPUT,
    StepErrorType.WORKSPACE_VIOLATION: RecoveryStrategy.CORRECTED_INPUT,
}


def recovery_for(facts: Facts) -> RecoveryStrategy:
    """How to retry the current step, from the type of its last error."""
    err = facts.record.error if facts.record is not None else None
    if err is None:
        return RecoveryStrategy.BACKOFF  # interrupted: nothing wrong with the input
    return _RECOVERY.get(err.type, RecoveryStrategy.BACKOFF)


_ACTION_OF_TRIGGER: dict[str, ActionKind] = {
    **dict.fromkeys(_INVOKE_STEP, ActionKind.INVOKE_AGENT),
    **dict.fromkeys(_GATE_OF_TRIGGER, ActionKind.REQUEST_APPROVAL),
    m.TRANSITION_PHASE: ActionKind.TRANSITION_PHASE,
    m.RETRY: ActionKind.RETRY_STEP,
    m.ESCALATE: ActionKind.ESCALATE,
    m.COMPLETE: ActionKind.COMPLETE,
    m.FAIL: ActionKind.FAIL,
    m.REJECT: ActionKind.REJECT,
}


def action_of(trigger: str) -> ActionKind:
    """The kind of decision a trigger carries out."""
    try:
        return _ACTION_OF_TRIGGER[trigger]
    except KeyError:
        raise IllegalTransitionError(f"unknown action '{trigger}'") from None


def build_decision(
    trigger: str,
    facts: Facts,
    *,
    rationale: str,
    confidence: float | None = None,
    escalation_reason: EscalationReason | None = None,
    change_requests: tuple[str, ...] = (),
) -> Decision:
    """The full decision for ``trigger`` in ``facts``' state."""
    action = action_of(trigger)
    step = target_step(trigger, facts)
    spec = STEP_SPECS[step] if step is not None else None
    return Decision.model_construct(
        action=action,
        step=step,
        agent=spec.agent if spec else None,
        templates=spec.templates if spec else (),
        context=STEP_CONTEXT[step] if step is not None else (),
        gate=_GATE_OF_TRIGGER.get(trigger)
        or (GATE_OF_STATE[MachineState.ESCALATED] if trigger == m.ESCALATE else None),
        recovery_strategy=recovery_for(facts) if trigger == m.RETRY else None,
        escalation_reason=escalation_reason,
        change_requests=change_requests,
        rationale=rationale,
        confidence=confidence,
    )


def origin_step(facts: Facts) -> Step | None:
    """The step the decision follows (the interrupted one at an escalation)."""
    return STEP_OF_STATE.get(facts.origin)
