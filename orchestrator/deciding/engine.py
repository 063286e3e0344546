"""The decision engine: analyse a state, apply a decision, record it.

This is the hot path of every workflow. ``analyze`` evaluates the rules once (``Facts``),
classifies the state and lists its legal actions; ``apply`` fires the chosen action through
the shared machine and returns the new state with the decision recorded (and, when the
decision starts a step, that step's attempt marked running, so a crash between the decision
and its action is visible as an interrupted step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.deciding.actions import trigger_of
from orchestrator.deciding.classifier import Classification, classify
from orchestrator.deciding.facts import Facts
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.programmatic import ProgrammaticDecider
from state.build import build, builder, replace
from state.clock import Clock
from state.config import WorkflowConfig
from state.decision import (
    ActionKind,
    Decision,
    DecisionRecord,
    DecisionSource,
    LLMCallInfo,
    Route,
)
from state.steps import GATE_OF_STATE
from state.workflow import StepRecord, StepStatus, WorkflowState

# Enum members bound once for the hot path (see orchestrator/deciding/facts.py).
_PROGRAMMATIC = DecisionSource.PROGRAMMATIC
_HUMAN = DecisionSource.HUMAN
_TRANSITION_PHASE = ActionKind.TRANSITION_PHASE
_RETRY_STEP = ActionKind.RETRY_STEP
_RUNNING = StepStatus.RUNNING

_new_record = builder(DecisionRecord)
_STARTS_STEP = frozenset(
    {ActionKind.INVOKE_AGENT, ActionKind.RETRY_STEP, ActionKind.TRANSITION_PHASE}
)


@dataclass(slots=True)
class Analysis:
    """Everything known about a state before anyone decides (read-only by convention: not
    frozen, because a frozen dataclass costs a setattr call per field on every decision)."""

    facts: Facts
    classification: Classification
    legal_actions: tuple[str, ...]
    programmatic: Decision

    @property
    def route(self) -> Route:
        """The classifier's route."""
        return self.classification.route


class DecisionEngine:
    """Analyses states and applies decisions through the shared machine."""

    def __init__(
        self,
        machine: WorkflowMachine,
        clock: Clock,
        programmatic: ProgrammaticDecider | None = None,
    ) -> None:
        self.machine = machine
        self.clock = clock
        self.programmatic = programmatic or ProgrammaticDecider()

    def analyze(self, state: WorkflowState, config: WorkflowConfig) -> Analysis:
        """Facts, route, legal actions and the programmatic decision for ``state``.

        Raises:
            WorkflowFinishedError: the workflow is in a terminal state.
            AwaitingHumanError: it waits at a gate for an answer.
        """
        facts = Facts(state, config)
        decision = self.programmatic.decide(facts)
        return Analysis(facts, classify(facts), self.machine.legal_actions(facts), decision)

    def programmatic_source(self, analysis: Analysis) -> DecisionSource:
        """``human`` when the programmatic decision carries out a human's answer."""
        if analysis.facts.machine_state in GATE_OF_STATE:
            return _HUMAN
        return _PROGRAMMATIC

    def apply(
        self,
        analysis: Analysis,
        decision: Decision,
        source: DecisionSource,
        *,
        programmatic_alternative: Decision | None = None,
        conflict_reason: str | None = None,
        llm: LLMCallInfo | None = None,
    ) -> tuple[WorkflowState, DecisionRecord]:
        """Fire ``decision`` and return the new state and the decision's record.

        Raises:
            IllegalTransitionError: the decision is not legal in the state; nothing changes.
        """
        facts = analysis.facts
        state = facts.state
        dest = self.machine.fire(facts, trigger_of(decision))
        now = self.clock.now()
        seq = len(state.decisions) + 1
        record = _new_record(
            seq=seq,
            decided_at=now,
            decision=decision,
            source=source,
            route=analysis.classification.route,
            signals=analysis.classification.signals,
            legal_actions=analysis.legal_actions,
            programmatic_alternative=programmatic_alternative,
            conflict_reason=conflict_reason,
            state_before=facts.machine_state,
            state_after=dest,
            llm=llm,
        )
        update: dict[str, Any] = {
            "machine_state": dest,
            "decisions": (*state.decisions, record),
            "updated_at": now,
        }
        if decision.action is _TRANSITION_PHASE:
            update["phase"] = 2
        step = decision.step
        if step is not None and decision.action in _STARTS_STEP:
            retry = decision.action is _RETRY_STEP and facts.record is not None
            attempt = facts.record.attempt + 1 if retry and facts.record else 1
            update["current_step"] = step
            update["history"] = (
                *state.history,
                build(
                    StepRecord,  # replaced when the step ends: built for speed
                    step=step,
                    attempt=attempt,
                    status=_RUNNING,
                    decision_seq=seq,
                    started_at=now,
                    finished_at=None,
                    result=None,
                    error=None,
                    change_requests=decision.change_requests,
                ),
            )
        return replace(state, **update), record

    def decide(
        self, state: WorkflowState, config: WorkflowConfig
    ) -> tuple[WorkflowState, DecisionRecord]:
        """Classify, decide by rule, fire and record: the programmatic path in one call."""
        analysis = self.analyze(state, config)
        return self.apply(analysis, analysis.programmatic, self.programmatic_source(analysis))
