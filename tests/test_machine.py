"""The shared transitions machine: legal actions, firing, and its refusals."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from transitions import Event, Machine, Transition
from transitions.core import Condition

from orchestrator.deciding.facts import compute_facts
from orchestrator.deciding.machine import WorkflowMachine
from state.errors import IllegalTransitionError
from state.reports import PlanDraft
from state.steps import MachineState
from state.workflow import HumanAnswerKind

from builders import Driver, plan_report


def validated_plan(converged: bool) -> Driver:
    d = Driver()
    d.run_step(PlanDraft(version=1, markdown="# plan"))
    d.run_step(plan_report() if converged else plan_report(a=5.0))
    return d


def test_unknown_action_is_refused() -> None:
    """An action the machine does not know is an error naming the known ones."""
    d = validated_plan(True)
    with pytest.raises(IllegalTransitionError, match=r"unknown action 'teleport'.*escalate"):
        d.pipeline.machine.fire(compute_facts(d.state, d.config), "teleport")


def test_action_without_an_edge_is_refused() -> None:
    """'complete' has no edge out of plan validation."""
    d = validated_plan(True)
    with pytest.raises(IllegalTransitionError, match="no edge from state 'plan_validation'"):
        d.pipeline.machine.fire(compute_facts(d.state, d.config), "complete")


def test_guards_refuse_a_revision_of_a_converged_plan() -> None:
    """invoke_step3 exists from plan validation, but its guards refuse a converged plan."""
    d = validated_plan(True)
    facts = compute_facts(d.state, d.config)
    with pytest.raises(IllegalTransitionError, match=r"guards refuse it.*request_plan_approval"):
        d.pipeline.machine.fire(facts, "invoke_step3")


def test_legal_actions_follow_convergence() -> None:
    """Converged: ask for approval; not converged: revise; escalating is always possible."""
    m = WorkflowMachine()
    good, bad = validated_plan(True), validated_plan(False)
    assert m.legal_actions(compute_facts(good.state, good.config)) == (
        "request_plan_approval",
        "escalate",
    )
    assert m.legal_actions(compute_facts(bad.state, bad.config)) == ("invoke_step3", "escalate")


def test_one_machine_serves_interleaved_workflows() -> None:
    """The same machine fires for several workflows in turn and holds no model of its own."""
    m = WorkflowMachine()
    a, b = validated_plan(True), validated_plan(False)
    fa, fb = compute_facts(a.state, a.config), compute_facts(b.state, b.config)
    assert m.fire(fb, "invoke_step3") is MachineState.PLAN_REVISION
    assert m.fire(fa, "request_plan_approval") is MachineState.AWAITING_PLAN_APPROVAL
    assert m._machine.models == []  # no add_model: nothing grows with the workflows


def test_answered_plan_gate_is_not_bounced_back() -> None:
    """After a human answers at the plan gate, escalating again is not a legal move."""
    d = Driver()
    d.to_plan_gate()
    d.answer(HumanAnswerKind.APPROVE)
    assert d.pipeline.machine.legal_actions(compute_facts(d.state, d.config)) == (
        "transition_phase",
    )


def test_spent_retries_can_only_escalate() -> None:
    """With the retry budget spent, failing the workflow is not offered: a human decides."""
    d = Driver()
    d.decide()
    d.fail("llm_unavailable")
    for _ in range(3):  # three retries, all failing
        d.decide()
        d.fail("llm_unavailable")
    facts = compute_facts(d.state, d.config)
    assert d.pipeline.machine.legal_actions(facts) == ("escalate",)


def test_fatal_error_may_fail_the_workflow() -> None:
    """An error retrying cannot fix offers failing the workflow, or asking a human."""
    d = Driver()
    d.decide()
    d.fail("template_error", retryable=False)
    facts = compute_facts(d.state, d.config)
    assert d.pipeline.machine.legal_actions(facts) == ("fail", "escalate")


def test_transitions_internals_the_machine_overrides_are_there() -> None:
    """The library entry points and tables machine.py replaces keep their shapes."""
    major, minor, *_ = (int(p) for p in version("transitions").split("."))
    assert (major, minor) == (0, 9), "machine.py is checked against transitions 0.9"
    assert list(inspect.signature(Transition.execute).parameters) == ["self", "event_data"]
    assert list(inspect.signature(Event.trigger).parameters) == ["self", "model", "args", "kwargs"]
    assert list(inspect.signature(Condition.__init__).parameters)[:2] == ["self", "func"]
    for name in ("transition_cls", "event_cls"):
        assert isinstance(getattr(Machine, name), type)
    machine = Machine(model=None, states=["a", "b"], initial="a", auto_transitions=False)
    machine.add_transition("go", "a", "b", conditions=[lambda: True])
    event = machine.events["go"]
    (transition,) = event.transitions["a"]
    assert transition.dest == "b"
    assert callable(transition.conditions[0].func)
    for attr in (
        "has_queue",
        "prepare_event",
        "finalize_event",
        "before_state_change",
        "after_state_change",
        "on_exception",
    ):
        assert hasattr(machine, attr), attr


def test_the_decision_is_the_first_passing_rule_edge() -> None:
    """Decide picks the first rule edge out of the state, in table order, whose guards pass."""
    m = WorkflowMachine()
    d = validated_plan(False)
    facts = compute_facts(d.state, d.config)
    first = next(
        s
        for s in m.table
        if s.source is facts.machine_state and s.is_rule and all(g(facts) for g in s.guards)
    )
    decision = m.decide(facts)
    assert decision.rationale == first.rationale
    assert first.trigger == "invoke_step3"


def test_every_rule_escalation_says_why_and_offered_edges_are_never_chosen() -> None:
    """Escalating rule edges carry their reason; offered-only edges carry no rationale."""
    table = WorkflowMachine().table
    for spec in table:
        if spec.is_rule and spec.trigger == "escalate":
            assert spec.reason is not None, spec
        if not spec.is_rule:
            assert spec.reason is None, spec
    offered = {(s.source, s.trigger) for s in table if not s.is_rule}
    assert (MachineState.PLAN_VALIDATION, "escalate") in offered
    assert (MachineState.ESCALATED, "invoke_step3") in offered
