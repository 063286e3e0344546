"""The one ``transitions`` state machine of the 7-step workflow, behind a typed adapter.

The machine is built once (``WorkflowMachine()``) and shared by every workflow: it is never
given a model (no ``add_model``, whose cost grows with the number of models); each ``fire``
triggers the event on a throw-away carrier of the workflow's machine state, with the
decision's ``Facts`` passed to the guards. ``legal_actions`` reads the same transition table
and guards, so what is offered to an LLM is exactly what the machine will accept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from transitions import Event, Machine, MachineError, Transition

from orchestrator.deciding import guards as g
from orchestrator.deciding.facts import Facts
from orchestrator.deciding.guards import Guard
from state.errors import IllegalTransitionError
from state.steps import GATE_OF_STATE, TERMINAL_STATES, MachineState, Step

S = MachineState


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """One edge of the machine: trigger, source, destination and the guards that allow it."""

    trigger: str
    source: MachineState
    dest: MachineState
    guards: tuple[Guard, ...] = ()
    continuation: bool = False  # an escalated workflow resuming where it stopped


INVOKE = {step: f"invoke_step{int(step)}" for step in Step}
TRANSITION_PHASE = "transition_phase"
REQUEST_APPROVAL = {
    S.AWAITING_PLAN_APPROVAL: "request_plan_approval",
    S.AWAITING_CODE_REVIEW: "request_code_review",
    S.AWAITING_FINAL_APPROVAL: "request_final_approval",
}
RETRY = "retry_step"
ESCALATE = "escalate"
COMPLETE = "complete"
FAIL = "fail"
REJECT = "reject"

WORKING_STATES: tuple[MachineState, ...] = (
    S.INITIAL_PLANNING,
    S.PLAN_VALIDATION,
    S.PLAN_REVISION,
    S.IMPLEMENTATION,
    S.CODE_VALIDATION,
    S.CODE_REFINEMENT,
    S.CONVERGENCE_VALIDATION,
)
_GO = (g.step_ok, g.decisions_left)


def _forward_edges() -> list[TransitionSpec]:
    """Edges of the two loops, the gates and the phase change (everything but escalation)."""
    t = TransitionSpec
    edges = [
        t(INVOKE[Step.INITIAL_PLANNING], S.NEW, S.INITIAL_PLANNING, (g.decisions_left,)),
        # Phase 1: plan -> validate -> (revise -> validate)* -> plan gate -> phase 2
        t(INVOKE[Step.PLAN_VALIDATION], S.INITIAL_PLANNING, S.PLAN_VALIDATION, _GO),
        t(INVOKE[Step.PLAN_VALIDATION], S.PLAN_REVISION, S.PLAN_VALIDATION, _GO),
        t(
            INVOKE[Step.PLAN_REVISION],
            S.PLAN_VALIDATION,
            S.PLAN_REVISION,
            (*_GO, g.plan_not_converged, g.plan_revisions_left),
        ),
        t(
            REQUEST_APPROVAL[S.AWAITING_PLAN_APPROVAL],
            S.PLAN_VALIDATION,
            S.AWAITING_PLAN_APPROVAL,
            (*_GO, g.plan_converged, g.plan_gate_on),
        ),
        t(
            TRANSITION_PHASE,
            S.PLAN_VALIDATION,
            S.IMPLEMENTATION,
            (*_GO, g.plan_converged, g.plan_gate_off),
        ),
        t(TRANSITION_PHASE, S.AWAITING_PLAN_APPROVAL, S.IMPLEMENTATION, (g.human_approved,)),
        t(
            INVOKE[Step.PLAN_REVISION],
            S.AWAITING_PLAN_APPROVAL,
            S.PLAN_REVISION,
            (g.human_requested_changes,),
        ),
        # Phase 2: implement -> validate -> (refine -> validate)* -> final gate -> done
        t(INVOKE[Step.CODE_VALIDATION], S.IMPLEMENTATION, S.CODE_VALIDATION, _GO),
        t(
            REQUEST_APPROVAL[S.AWAITING_CODE_REVIEW],
            S.CODE_VALIDATION,
            S.AWAITING_CODE_REVIEW,
            (*_GO, g.code_review_gate_on),
        ),
        t(
            INVOKE[Step.CODE_REFINEMENT],
            S.AWAITING_CODE_REVIEW,
            S.CODE_REFINEMENT,
            (g.human_requested_changes,),
        ),
        t(
            INVOKE[Step.CODE_REFINEMENT],
            S.AWAITING_CODE_REVIEW,
            S.CODE_REFINEMENT,
            (g.human_approved, g.code_not_converged, g.code_refinements_left),
        ),
        t(
            REQUEST_APPROVAL[S.AWAITING_FINAL_APPROVAL],
            S.AWAITING_CODE_REVIEW,
            S.AWAITING_FINAL_APPROVAL,
            (g.human_approved, g.code_converged, g.final_gate_on),
        ),
        t(
            COMPLETE,
            S.AWAITING_CODE_REVIEW,
            S.COMPLETED,
            (g.human_approved, g.code_converged, g.final_gate_off),
        ),
        t(INVOKE[Step.CONVERGENCE_VALIDATION], S.CODE_REFINEMENT, S.CONVERGENCE_VALIDATION, _GO),
        t(
            INVOKE[Step.CODE_REFINEMENT],
            S.AWAITING_FINAL_APPROVAL,
            S.CODE_REFINEMENT,
            (g.human_requested_changes,),
        ),
        t(COMPLETE, S.AWAITING_FINAL_APPROVAL, S.COMPLETED, (g.human_approved,)),
    ]
    for validated, extra in (
        (S.CODE_VALIDATION, (g.code_review_gate_off,)),
        (S.CONVERGENCE_VALIDATION, ()),
    ):
        edges += [
            t(
                INVOKE[Step.CODE_REFINEMENT],
                validated,
                S.CODE_REFINEMENT,
                (*_GO, *extra, g.code_not_converged, g.code_refinements_left),
            ),
            t(
                REQUEST_APPROVAL[S.AWAITING_FINAL_APPROVAL],
                validated,
                S.AWAITING_FINAL_APPROVAL,
                (*_GO, *extra, g.code_converged, g.final_gate_on),
            ),
            t(COMPLETE, validated, S.COMPLETED, (*_GO, *extra, g.code_converged, g.final_gate_off)),
        ]
    # A failed or interrupted step is retried in place, or the workflow fails.
    for st in WORKING_STATES:
        edges.append(t(RETRY, st, st, (g.can_retry,)))
        edges.append(t(FAIL, st, S.FAILED, (g.cannot_retry,)))
    for gate_state in GATE_OF_STATE:
        edges.append(t(REJECT, gate_state, S.REJECTED, (g.human_rejected,)))
    return edges


def _escalation_edges(forward: list[TransitionSpec]) -> list[TransitionSpec]:
    """Into the escalation gate from anywhere, and out of it once a human answers."""
    t = TransitionSpec
    # A human's answer at the plan or final gate, or at an escalation, is carried out, never
    # bounced back to a human (an LLM that always escalates would loop with a human who
    # always approves). The code-review gate keeps it: the rules escalate there when an
    # approved but unconverged review has no refinement left.
    answered_gates = (S.AWAITING_PLAN_APPROVAL, S.AWAITING_FINAL_APPROVAL, S.ESCALATED)
    edges = [
        t(ESCALATE, st, S.ESCALATED)
        for st in MachineState
        if st not in TERMINAL_STATES and st not in answered_gates
    ]
    # A human who approves or gives guidance continues the workflow where it stopped, with
    # fresh budgets: every forward edge out of a working state is offered again from there.
    for spec in forward:
        if spec.source in WORKING_STATES or spec.source is S.NEW:
            edges.append(
                t(
                    spec.trigger,
                    S.ESCALATED,
                    spec.dest,
                    (g.human_continues, g.origin_is(spec.source), *spec.guards),
                    True,
                )
            )
    for gate_state, trigger in REQUEST_APPROVAL.items():
        edges.append(
            t(trigger, S.ESCALATED, gate_state, (g.human_continues, g.origin_is(gate_state)), True)
        )
    # Guidance at an escalation goes to the planner or the programmer.
    edges.append(
        t(
            INVOKE[Step.PLAN_REVISION],
            S.ESCALATED,
            S.PLAN_REVISION,
            (g.human_requested_changes, g.origin_in_phase(1), g.has_plan),
            True,
        )
    )
    edges.append(
        t(
            INVOKE[Step.CODE_REFINEMENT],
            S.ESCALATED,
            S.CODE_REFINEMENT,
            (g.human_requested_changes, g.origin_in_phase(2), g.has_code),
            True,
        )
    )
    return edges


def build_transition_table() -> tuple[TransitionSpec, ...]:
    """Every edge of the workflow machine."""
    forward = _forward_edges()
    return (*forward, *_escalation_edges(forward))


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
        """Try this event's edges from ``model``'s state in order; the first that passes moves
        it. The machine is never queued, so this is what ``Machine._process`` would run."""
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


class _Carrier:
    """What the shared machine fires on: just a machine state."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class WorkflowMachine:
    """The shared state machine: legal actions and firing, for any workflow's ``Facts``."""

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
        candidates: dict[MachineState, list[tuple[str, _AllOf]]] = {st: [] for st in MachineState}
        for spec in self.table:
            condition = _AllOf(spec.guards)
            self._machine.add_transition(
                spec.trigger, spec.source.value, spec.dest.value, conditions=[condition]
            )
            candidates[spec.source].append((spec.trigger, condition))
        self._candidates = {st: tuple(c) for st, c in candidates.items()}
        # event_cls makes every event a _LeanEvent.
        self._events: dict[str, _LeanEvent] = self._machine.events  # type: ignore[assignment]
        self._interned: dict[tuple[str, ...], tuple[str, ...]] = {}

    @property
    def triggers(self) -> frozenset[str]:
        """Every trigger name the machine knows."""
        return frozenset(self._events)

    def legal_actions(self, facts: Facts) -> tuple[str, ...]:
        """The triggers whose guards pass in ``facts``' state, in table order, no repeats.

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
