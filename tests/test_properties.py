"""Random workflows: decisions stay legal; gates and convergence checks are never skipped."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.deciding import table as m
from orchestrator.deciding.actions import build_decision, trigger_of
from orchestrator.deciding.facts import code_converged, compute_facts, plan_converged
from orchestrator.deciding.record import Choice
from orchestrator.running.consistency import find_inconsistency
from orchestrator.running.updates import allowed_answers
from state.config import Gates, Limits, WorkflowConfig
from state.decision import DecisionSource
from state.reports import (
    CodeChange,
    CodeReview,
    CodeValidationReport,
    PlanDraft,
    PlanValidationReport,
    StandardizationReview,
    ToolResult,
    ToolStatus,
)
from state.steps import GATE_OF_STATE, TERMINAL_STATES, Gate, MachineState, Step
from state.workflow import HumanAnswerKind, StepStatus

from builders import Driver

scores = st.one_of(
    st.none(),
    st.just(math.nan),
    st.floats(min_value=-2, max_value=12, allow_nan=False),
    st.sampled_from([7.75, 8.0, 8.25, 9.0, 9.5, 10.0]),
)
counts = st.one_of(st.none(), st.integers(min_value=0, max_value=4))

plan_reports = st.builds(
    PlanValidationReport,
    alignment_score=scores,
    standardization_score=scores,
    compatibility_score=scores,
    critical_issues=counts,
    minor_issues=counts,
)
code_reports = st.builds(
    lambda score, tools, crit, minor, status, cov: CodeValidationReport(
        review=CodeReview(overall_score=score, critical_issues=crit, minor_issues=minor),
        standardization=StandardizationReview(status=status, critical_issues=0, minor_issues=0),
        tools=tuple(ToolResult(name=f"t{i}", status=t) for i, t in enumerate(tools)),
        tools_skipped_reason=None if tools else "skipped",
        line_coverage=cov,
    ),
    scores,
    st.lists(st.sampled_from(list(ToolStatus)), max_size=3),
    counts,
    counts,
    st.sampled_from(["PASSED", "FAILED", None]),
    st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
)
configs = st.builds(
    lambda plan, review, final, revs, refs, retries, decisions: WorkflowConfig(
        gates=Gates(plan=plan, code_review=review, final=final),
        limits=Limits(
            max_plan_revisions=revs,
            max_code_refinements=refs,
            max_step_retries=retries,
            max_decisions=decisions,
        ),
    ),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 2),
    st.integers(3, 40),
)


def _check_safety(d: Driver, before: MachineState, trigger: str) -> None:
    """The action just applied passed no gate and no convergence check illegitimately."""
    s = d.state
    facts_plan = plan_converged(compute_facts(s, d.config).plan_report, d.config.plan_thresholds)
    facts_code = code_converged(compute_facts(s, d.config).code_report, d.config.code_thresholds)
    rec = s.decisions[-1]
    answers = [a for a in s.human_answers if a.after_decision == rec.seq - 1]
    approved_here = bool(answers) and answers[-1].answer is HumanAnswerKind.APPROVE
    # Only a human's accept at an escalation overrides convergence.
    accepted_here = bool(answers) and answers[-1].answer is HumanAnswerKind.ACCEPT
    if accepted_here:
        assert before is MachineState.ESCALATED, "accepted work outside an escalation"
    if trigger == m.TRANSITION_PHASE:
        if before is MachineState.AWAITING_PLAN_APPROVAL:
            assert approved_here, "left the plan gate without an approval"
        elif accepted_here:
            assert s.phase == 2
        else:
            assert facts_plan, "entered phase 2 with a plan that did not converge"
            assert not d.config.gates.plan, "skipped the plan gate"
    if trigger == m.REQUEST_APPROVAL[MachineState.AWAITING_PLAN_APPROVAL]:
        assert facts_plan or before is MachineState.ESCALATED
    if trigger == m.REQUEST_APPROVAL[MachineState.AWAITING_FINAL_APPROVAL]:
        assert facts_code or before is MachineState.ESCALATED
    if trigger == m.COMPLETE:
        if before is MachineState.AWAITING_FINAL_APPROVAL:
            assert approved_here, "completed without a final approval"
        else:
            assert facts_code or accepted_here, "completed with code that did not converge"
            assert not d.config.gates.final, "skipped the final gate"
    if trigger == m.REJECT:
        assert answers and answers[-1].answer is HumanAnswerKind.REJECT
    if before in GATE_OF_STATE and trigger != m.ESCALATE:
        assert answers, f"left gate {before.value} without a recorded human answer"


def _result_for(step: Step, data: st.DataObject) -> object:
    if step in (Step.INITIAL_PLANNING, Step.PLAN_REVISION):
        return PlanDraft(version=1, markdown="# plan")
    if step is Step.PLAN_VALIDATION:
        return data.draw(plan_reports)
    if step in (Step.IMPLEMENTATION, Step.CODE_REFINEMENT):
        return CodeChange(files=("a.py",))
    return data.draw(code_reports)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, data=st.data())
def test_random_workflows_stay_legal_and_safe(config: WorkflowConfig, data: st.DataObject) -> None:
    """Whoever chooses among the legal actions, gates and convergence are never skipped."""
    d = Driver(config)
    for _ in range(60):
        s = d.state
        if s.machine_state in TERMINAL_STATES:
            break
        if s.machine_state in GATE_OF_STATE and s.pending_answer is None:
            kind = data.draw(st.sampled_from(allowed_answers(s)))
            d.answer(kind, *(["make it faster"] if kind is HumanAnswerKind.REQUEST_CHANGES else []))
            continue
        rec = s.last_record
        if rec is not None and rec.status is StepStatus.RUNNING:
            if data.draw(st.booleans()):
                d.fail(
                    data.draw(st.sampled_from(["timeout", "invalid_output", "llm_error"])),
                    retryable=data.draw(st.booleans()),
                )
            else:
                d.finish(_result_for(rec.step, data))
            continue
        assert find_inconsistency(s, config) is None, find_inconsistency(s, config)
        analysis = d.pipeline.analyze(s, config)
        # The programmatic decision is always legal.
        assert trigger_of(analysis.programmatic) in analysis.legal_actions
        # An LLM (here: chance) picks any legal action; the machine must keep it safe.
        trigger = data.draw(st.sampled_from(analysis.legal_actions))
        decision = build_decision(trigger, analysis.facts, rationale="random", confidence=0.9)
        before = s.machine_state
        d.state, _ = d.pipeline.apply(analysis, Choice(decision, DecisionSource.LLM))
        _check_safety(d, before, trigger)


@settings(max_examples=100, deadline=None)
@given(config=configs, data=st.data())
def test_programmatic_path_always_terminates_or_waits(
    config: WorkflowConfig, data: st.DataObject
) -> None:
    """Following the rules, every workflow ends or reaches a gate within its decision budget."""
    d = Driver(config)
    for _ in range(200):
        s = d.state
        if s.machine_state in TERMINAL_STATES:
            return
        if s.machine_state in GATE_OF_STATE and s.pending_answer is None:
            if s.machine_state is MachineState.ESCALATED or data.draw(st.booleans()):
                return  # a human is needed: the workflow waits, it does not loop
            d.answer(HumanAnswerKind.APPROVE)
            continue
        rec = s.last_record
        if rec is not None and rec.status is StepStatus.RUNNING:
            d.finish(_result_for(rec.step, data))
            continue
        d.decide()
    raise AssertionError("the workflow neither ended nor waited for a human in 200 rounds")


def test_escalation_gate_is_never_passed_without_answer() -> None:
    """At the escalation gate the only legal moves need a human answer."""
    d = Driver(WorkflowConfig(limits=Limits(max_plan_revisions=0)))
    d.run_step(PlanDraft(version=1, markdown="x"))
    d.run_step(PlanValidationReport(alignment_score=1.0))
    d.decide()
    assert d.state.machine_state is MachineState.ESCALATED
    facts = compute_facts(d.state, d.config)
    assert set(d.pipeline.machine.legal_actions(facts)) <= {m.ESCALATE}
    assert d.state.waiting_gate is Gate.ESCALATION
