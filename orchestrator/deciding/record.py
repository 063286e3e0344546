"""The last stage of a decision: fire it through the machine and record it.

``record_decision`` fires the chosen decision's trigger (an illegal one is refused and
nothing changes), builds its ``DecisionRecord`` with the route, signals, legal actions and
any alternative, and returns the new state: when the decision starts a step, that step's
attempt is marked running, so a crash between the decision and its action shows up as an
interrupted step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.deciding.actions import trigger_of
from orchestrator.deciding.analysis import Analysis
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.llm.metering import UsageMeter
from state.build import build, new_decision_record, replace
from state.clock import Clock
from state.decision import (
    ActionKind,
    Decision,
    DecisionRecord,
    DecisionSource,
    LLMCallInfo,
    Routing,
)
from state.fast import (
    ACTION_RETRY_STEP,
    ACTION_TRANSITION_PHASE,
    SOURCE_HUMAN,
    SOURCE_PROGRAMMATIC,
    STEP_STATUS_RUNNING,
)
from state.steps import GATE_OF_STATE
from state.workflow import StepRecord, WorkflowState

_STARTS_STEP = frozenset(
    {ActionKind.INVOKE_AGENT, ActionKind.RETRY_STEP, ActionKind.TRANSITION_PHASE}
)


@dataclass(slots=True)
class Choice:
    """The decision to apply and its envelope: who chose it, what it beat, what it cost.

    Read-only by convention: not frozen, because a frozen dataclass costs a setattr call
    per field, and one is made on every decision.
    """

    decision: Decision
    source: DecisionSource
    alternative: Decision | None = None
    conflict: str | None = None
    llm: LLMCallInfo | None = None
    script_usage: UsageMeter | None = None  # the coordinator script's subagent calls
    routing: Routing | None = None  # the coordinator mode that applied


def machine_source(analysis: Analysis) -> DecisionSource:
    """``human`` when the machine's decision carries out a human's answer, else ``programmatic``."""
    if analysis.facts.machine_state in GATE_OF_STATE:
        return SOURCE_HUMAN
    return SOURCE_PROGRAMMATIC


def machine_choice(analysis: Analysis) -> Choice:
    """The machine's own decision, as chosen by the rules (or a human's answer)."""
    return Choice(analysis.programmatic, machine_source(analysis))


def record_decision(
    machine: WorkflowMachine, clock: Clock, analysis: Analysis, choice: Choice
) -> tuple[WorkflowState, DecisionRecord]:
    """Fire ``choice``'s decision and return the new state and the decision's record.

    Raises:
        IllegalTransitionError: the decision is not legal in the state; nothing changes.
    """
    facts = analysis.facts
    state = facts.state
    decision = choice.decision
    dest = machine.fire(facts, trigger_of(decision))
    now = clock.now()
    seq = len(state.decisions) + 1
    record = new_decision_record(
        seq=seq,
        decided_at=now,
        decision=decision,
        source=choice.source,
        route=analysis.classification.route,
        signals=analysis.classification.signals,
        legal_actions=analysis.legal_actions,
        programmatic_alternative=choice.alternative,
        conflict_reason=choice.conflict,
        state_before=facts.machine_state,
        state_after=dest,
        llm=choice.llm,
        routing=choice.routing,
    )
    update: dict[str, Any] = {
        "machine_state": dest,
        "decisions": (*state.decisions, record),
        "updated_at": now,
    }
    if decision.action is ACTION_TRANSITION_PHASE:
        update["phase"] = 2
    step = decision.step
    if step is not None and decision.action in _STARTS_STEP:
        retry = decision.action is ACTION_RETRY_STEP and facts.record is not None
        attempt = facts.record.attempt + 1 if retry and facts.record else 1
        update["current_step"] = step
        update["history"] = (
            *state.history,
            build(
                StepRecord,  # replaced when the step ends: built for speed
                step=step,
                attempt=attempt,
                status=STEP_STATUS_RUNNING,
                decision_seq=seq,
                started_at=now,
                finished_at=None,
                result=None,
                error=None,
                change_requests=decision.change_requests,
                llm_usage=None,
            ),
        )
    return replace(state, **update), record
