"""The first stages of a decision: the facts of a state, its route, and the machine's view.

``analyze`` evaluates the rules once (``Facts``), classifies the state (route and signals),
lists its legal actions and takes the machine's own decision. Every decider that follows
(the LLM, a script, reconciliation) reads this one ``Analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.deciding.classifier import Classification, classify
from orchestrator.deciding.facts import Facts
from orchestrator.deciding.machine import WorkflowMachine
from state.config import WorkflowConfig
from state.decision import Decision, Route
from state.workflow import WorkflowState


@dataclass(slots=True)
class Analysis:
    """Everything known about a state before anyone else decides.

    Read-only by convention: not frozen, because a frozen dataclass costs a setattr call per
    field on every decision.

    Attributes:
        programmatic: the machine's decision, the first rule edge whose guards pass.
    """

    facts: Facts
    classification: Classification
    legal_actions: tuple[str, ...]
    programmatic: Decision

    @property
    def route(self) -> Route:
        """The classifier's route."""
        return self.classification.route


def analyze(machine: WorkflowMachine, state: WorkflowState, config: WorkflowConfig) -> Analysis:
    """Facts, route, legal actions and the machine's decision for ``state``.

    Raises:
        WorkflowFinishedError: the workflow is in a terminal state.
        AwaitingHumanError: it waits at a gate for an answer.
    """
    facts = Facts(state, config)
    decision = machine.decide(facts)
    legal = facts.legal  # listed by decide, and remembered in the facts
    if legal is None:
        legal = machine.legal_actions(facts)
    return Analysis(facts, classify(facts), legal, decision)
