"""The one ``transitions`` state machine of the 7-step workflow, behind a typed adapter.

The machine is built once (``WorkflowMachine()``) from the rule table (``table.py``) and
shared by every workflow: it is never given a model (no ``add_model``, whose cost grows with
the number of models); each ``fire`` triggers the event on a throw-away carrier of the
workflow's machine state, with the decision's ``Facts`` passed to the guards.

The same table is read three ways: ``decide`` is the first rule edge out of the state whose
guards pass (the programmatic decision), ``legal_actions`` every trigger with a passing edge
(what an LLM or a script may choose), and ``fire`` what the machine accepts. So what is
offered is exactly what the machine will accept, and the rules cannot drift from it.

``transitions`` is pinned in pyproject.toml to the versions whose ``Transition.execute``,
``Event.trigger`` and event/transition tables this module relies on (a test checks them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transitions import Event, Machine, MachineError, Transition

from orchestrator.deciding.actions import build_decision, recovery_for
from orchestrator.deciding.facts import Facts
from orchestrator.deciding.guards import Guard
from orchestrator.deciding.table import (
    ESCALATE,
    RETRY,
    TransitionSpec,
    build_transition_table,
)
from state.decision import Decision
from state.errors import (
    AwaitingHumanError,
    DecisionError,
    IllegalTransitionError,
    WorkflowFinishedError,
)
from state.fast import ANSWER_REQUEST_CHANGES
from state.steps import GATE_OF_STATE, TERMINAL_STATES, MachineState

__all__ = ["TransitionSpec", "WorkflowMachine", "build_transition_table"]


class _GuardedTransition(Transition):
    """A transition that checks its guards and moves the state, and nothing else.

    The shared machine registers no callbacks (``WorkflowMachine`` refuses any), so the
    library's general path, which runs prepare/before/after/enter/exit callbacks and logs each
    phase, does nothing but cost time on every decision. ``transition_cls`` is the library's
    extension point for this.
    """

    def execute(self, event_data: Any) -> bool:
        """The library's entry point (conditions are called with the Facts argument)."""
        return self.move(event_data.model, *event_data.args)

    def move(self, model: _Carrier, facts: Facts) -> bool:
        """Move ``model`` to this edge's destination if its conditions pass in ``facts``."""
        for condition in self.conditions:
            # Every condition is an _AllOf (send_event=False: called with the Facts).
            check: Any = condition.func
            if not check(facts):
                return False
        # What Machine.set_state does for a plain model, without its lookups: the carrier
        # holds the state's name (the machine's model_attribute is "state").
        # Every edge has a destination (the table has no internal transitions).
        model.state = self.dest  # type: ignore[assignment]
        return True


class _LeanEvent(Event):
    """An event that tries its transitions in order, without the empty callback plumbing.

    The machine has no prepare, finalize or exception callbacks (``WorkflowMachine`` builds
    it with none), so ``fire`` skips them, their debug logging and the ``EventData`` they
    read. As the library does with ``ignore_invalid_triggers=False``, an event with no edge
    from the model's state raises ``MachineError``.
    """

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        """The library's entry point: ``fire`` with the Facts argument."""
        return self.fire(model, args[0])

    def fire(self, model: _Carrier, facts: Facts) -> bool:
        """Try this event's edges from ``model``'s state in order; the first that passes moves it.

        The machine is never queued, so this is what ``Machine._process`` would run.
        """
        transitions = self.transitions.get(model.state)
        if transitions is None:
            raise MachineError(f"{self.name} has no edge from state {model.state}")
        for transition in transitions:  # noqa: SIM110 -- faster than any(generator)
            # transition_cls makes every transition a _GuardedTransition.
            if transition.move(model, facts):  # type: ignore[attr-defined]
                return True
        return False


class _WorkflowTransitions(Machine):
    transition_cls = _GuardedTransition
    event_cls = _LeanEvent


class _AllOf:
    """The guards of one edge as a single condition (one call per edge, not per guard)."""

    __slots__ = ("__name__", "guards")

    def __init__(self, guards: tuple[Guard, ...]) -> None:
        self.guards = guards
        self.__name__ = " and ".join(g.__name__ for g in guards) or "always"

    def check(self, facts: Facts) -> bool:
        """Whether every guard passes in ``facts``."""
        for guard in self.guards:  # noqa: SIM110 -- a loop is faster than all(generator)
            if not guard(facts):
                return False
        return True

    def __call__(self, facts: Facts) -> bool:
        passed = facts.passed
        if passed is not None:  # legal_actions already judged this state's edges
            return self in passed
        return self.check(facts)


_STATE_OF_VALUE = {st.value: st for st in MachineState}


class _Rule:
    """A rule edge as the programmatic decision reads it: its condition and its decision.

    Decisions without human text are interned: the same rule in thousands of workflows
    gives one object (retries are keyed by their step and recovery strategy too).
    """

    __slots__ = ("_decisions", "_fixed", "condition", "keeps_changes", "retry", "spec")

    def __init__(
        self, spec: TransitionSpec, condition: _AllOf, interned: dict[tuple[object, ...], Decision]
    ) -> None:
        self.spec = spec
        self.condition = condition
        self.retry = spec.trigger == RETRY
        self.keeps_changes = spec.keeps_changes
        self._decisions = interned
        self._fixed: Decision | None = None

    def decision(self, f: Facts) -> Decision:
        """This rule's decision in ``f``."""
        if self.keeps_changes:
            answer = f.answer
            if answer is not None and answer.answer is ANSWER_REQUEST_CHANGES and answer.changes:
                return self._build(f, answer.changes)
        fixed = self._fixed
        if fixed is not None:
            return fixed
        spec = self.spec
        if self.retry:  # its step and recovery strategy depend on the failed attempt
            return self._interned(f, (spec.trigger, spec.rationale, recovery_for(f), f.step))
        fixed = self._fixed = self._interned(f, (spec.trigger, spec.rationale, spec.reason))
        return fixed

    def _interned(self, f: Facts, key: tuple[object, ...]) -> Decision:
        hit = self._decisions.get(key)
        if hit is None:
            hit = self._decisions[key] = self._build(f, ())
        return hit

    def _build(self, f: Facts, changes: tuple[str, ...]) -> Decision:
        spec = self.spec
        assert spec.rationale is not None  # only rule edges become _Rule
        return build_decision(
            spec.trigger,
            f,
            rationale=spec.rationale,
            escalation_reason=spec.reason,
            change_requests=changes,
        )


class _Carrier:
    """What the shared machine fires on: just a machine state."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class WorkflowMachine:
    """The shared state machine: the rules' decision, the legal actions and firing.

    One instance serves every workflow: each call takes the workflow's ``Facts``.
    """

    def __init__(self, table: Iterable[TransitionSpec] | None = None) -> None:
        self.table: tuple[TransitionSpec, ...] = tuple(table or build_transition_table())
        self._machine = _WorkflowTransitions(
            model=None,
            states=[st.value for st in MachineState],
            initial=MachineState.NEW.value,
            auto_transitions=False,
            send_event=False,
            ignore_invalid_triggers=False,
        )
        machine = self._machine
        if (
            machine.has_queue
            or machine.prepare_event
            or machine.finalize_event
            or (machine.before_state_change or machine.after_state_change or machine.on_exception)
        ):
            raise AssertionError("the lean transition classes assume no queue and no callbacks")
        offered: dict[MachineState, list[tuple[str, _AllOf]]] = {st: [] for st in MachineState}
        rules: dict[MachineState, list[_Rule]] = {st: [] for st in MachineState}
        decisions: dict[tuple[object, ...], Decision] = {}
        for spec in self.table:
            condition = _AllOf(spec.guards)
            self._machine.add_transition(
                spec.trigger, spec.source.value, spec.dest.value, conditions=[condition]
            )
            offered[spec.source].append((spec.trigger, condition))
            if spec.is_rule:
                rules[spec.source].append(_Rule(spec, condition, decisions))
        # Legal actions are listed with escalate last, the safe choice beside the others. The
        # order within a trigger is the table's, which is also the order fire tries them in.
        self._candidates = {
            st: tuple(sorted(c, key=lambda tc: tc[0] == ESCALATE)) for st, c in offered.items()
        }
        self._rules = {st: tuple(r) for st, r in rules.items()}
        _check_memo_order(self.table)
        # event_cls makes every event a _LeanEvent.
        self._events: dict[str, _LeanEvent] = self._machine.events  # type: ignore[assignment]
        self._interned: dict[tuple[str, ...], tuple[str, ...]] = {}

    @property
    def triggers(self) -> frozenset[str]:
        """Every trigger name the machine knows."""
        return frozenset(self._events)

    def legal_actions(self, facts: Facts) -> tuple[str, ...]:
        """The triggers whose guards pass in ``facts``' state (table order, escalate last).

        No trigger is listed twice.

        The first passing edge of each trigger is remembered in ``facts.passed``: firing
        one of them then checks that memo instead of the guards again. The edges of a
        trigger are tried in table order by both, so the memo holds every edge ``fire`` can
        reach, and ``Facts`` never change after they are built.
        """
        known = facts.legal
        if known is not None:
            return known
        found: list[str] = []
        passed: set[object] = set()
        for trigger, condition in self._candidates[facts.machine_state]:
            if trigger not in found and condition.check(facts):
                found.append(trigger)
                passed.add(condition)
        key = tuple(found)
        # Interned: thousands of resident workflows share a handful of distinct tuples.
        legal = facts.legal = self._interned.setdefault(key, key)
        facts.passed = passed
        return legal

    def decide(self, facts: Facts) -> Decision:
        """The programmatic decision: the first rule edge out of the state whose guards pass.

        Raises:
            WorkflowFinishedError: the workflow is completed, rejected or failed.
            AwaitingHumanError: the workflow waits at a gate and no human has answered yet.
            DecisionError: no rule applies (a state the rules cannot reach).
        """
        ms = facts.machine_state
        if ms in TERMINAL_STATES:
            raise WorkflowFinishedError(
                f"workflow {facts.state.workflow_id} is {ms.value}: there is nothing left to decide"
            )
        if facts.answer is None and ms in GATE_OF_STATE:
            kinds = "approve, accept, reject" if ms is MachineState.ESCALATED else "approve, reject"
            raise AwaitingHumanError(
                f"workflow {facts.state.workflow_id} waits for a human at the "
                f"'{GATE_OF_STATE[ms].value}' gate: answer with orchestrator {kinds} or "
                "request-changes"
            )
        self.legal_actions(facts)
        # legal_actions remembered the first passing edge of each trigger; the first passing
        # rule edge is always one of them (see _check_memo_order).
        passed = facts.passed
        assert passed is not None
        for rule in self._rules[ms]:
            if rule.condition in passed:
                return rule.decision(facts)
        raise DecisionError(
            f"workflow {facts.state.workflow_id}: no rule decides state '{ms.value}'; legal "
            f"actions: {', '.join(self.legal_actions(facts)) or 'none'}; escalate or inspect it"
        )

    def is_legal(self, facts: Facts, trigger: str) -> bool:
        """Whether ``trigger`` is legal in ``facts``' state."""
        return trigger in self.legal_actions(facts)

    def fire(self, facts: Facts, trigger: str) -> MachineState:
        """Fire ``trigger`` through the ``transitions`` machine and return the new state.

        Raises:
            IllegalTransitionError: the trigger is unknown, has no edge from this state, or
                its guards refuse it.
        """
        wid = facts.state.workflow_id
        event = self._events.get(trigger)
        if event is None:
            raise IllegalTransitionError(
                f"workflow {wid}: unknown action '{trigger}'; known actions: "
                f"{', '.join(sorted(self._events))}"
            )
        carrier = _Carrier(facts.machine_state.value)
        try:
            moved = event.fire(carrier, facts)
        except MachineError as exc:
            raise IllegalTransitionError(
                f"workflow {wid}: action '{trigger}' has no edge from state "
                f"'{facts.machine_state.value}'"
            ) from exc
        if not moved:
            raise IllegalTransitionError(
                f"workflow {wid}: action '{trigger}' is not allowed in state "
                f"'{facts.machine_state.value}' (its guards refuse it); legal now: "
                f"{', '.join(self.legal_actions(facts)) or 'none'}"
            )
        return _STATE_OF_VALUE[carrier.state]


def _check_memo_order(table: tuple[TransitionSpec, ...]) -> None:
    """Refuse a table where an offered-only edge precedes a rule edge of the same trigger.

    ``legal_actions`` remembers only the first passing edge of each trigger out of a state,
    and ``decide`` reads that memo: the first passing rule edge is in it as long as no
    offered-only edge of its trigger comes before it.
    """
    seen_offered: set[tuple[MachineState, str]] = set()
    for spec in table:
        key = (spec.source, spec.trigger)
        if not spec.is_rule:
            seen_offered.add(key)
        elif key in seen_offered:
            raise AssertionError(
                f"rule edge {spec.trigger} from {spec.source.value} is listed after an "
                "offered-only edge of the same trigger"
            )
