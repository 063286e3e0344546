"""One row per workflow rule: the programmatic decision for each step, gate and limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orchestrator.deciding.actions import trigger_of
from orchestrator.deciding.facts import compute_facts
from orchestrator.running.consistency import find_inconsistency
from state.config import Gates, Limits, WorkflowConfig
from state.decision import DecisionSource, EscalationReason, RecoveryStrategy
from state.errors import AwaitingHumanError, HumanAnswerError, WorkflowFinishedError
from state.reports import CodeChange, PlanDraft
from state.steps import Gate, MachineState, Step
from state.workflow import HumanAnswerKind, StepErrorType

from builders import BAD_CODE, BAD_PLAN, Driver, code_report, plan_report

PLAN = PlanDraft(version=1, markdown="# plan")
CODE = CodeChange(files=("prep.py",))


def _gates(**kw: bool) -> WorkflowConfig:
    return WorkflowConfig(gates=Gates(**kw))


def _limits(**kw: int) -> WorkflowConfig:
    return WorkflowConfig(limits=Limits(**kw))


def after_step1(d: Driver) -> None:
    d.run_step(PLAN)


def plan_not_converged(d: Driver) -> None:
    d.run_step(PLAN)
    d.run_step(BAD_PLAN)


def plan_converged(d: Driver) -> None:
    d.run_step(PLAN)
    d.run_step(plan_report())


def after_revision(d: Driver) -> None:
    plan_not_converged(d)
    d.run_step(PLAN)


def plan_limit(d: Driver) -> None:
    plan_not_converged(d)
    for _ in range(d.config.limits.max_plan_revisions):
        d.run_step(PLAN)
        d.run_step(BAD_PLAN)


def at_plan_gate(kind: HumanAnswerKind, *changes: str) -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        d.to_plan_gate()
        d.answer(kind, *changes)

    return setup


def after_implementation(d: Driver) -> None:
    d.to_phase2()


def code_validated(report: object) -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        d.to_phase2()
        d.run_step(report)

    return setup


def after_refinement(d: Driver) -> None:
    code_validated(BAD_CODE)(d)
    d.run_step(CODE)


def refined_validated(report: object) -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        after_refinement(d)
        d.run_step(report)

    return setup


def code_limit(d: Driver) -> None:
    code_validated(BAD_CODE)(d)
    for _ in range(d.config.limits.max_code_refinements):
        d.run_step(CODE)
        d.run_step(BAD_CODE)


def at_code_review(
    kind: HumanAnswerKind, report: object, *changes: str
) -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        code_validated(report)(d)
        d.decide()  # request_code_review
        d.answer(kind, *changes)

    return setup


def at_final_gate(kind: HumanAnswerKind, *changes: str) -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        code_validated(code_report())(d)
        d.decide()  # request_final_approval
        d.answer(kind, *changes)

    return setup


def failed_times(n: int, error: str = "llm_unavailable") -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        d.decide()
        d.fail(error)
        for _ in range(n - 1):
            d.decide()  # retry
            d.fail(error)

    return setup


def decision_limit(d: Driver) -> None:
    d.config = _limits(max_decisions=3)
    d.run_step(PLAN)
    d.run_step(BAD_PLAN)
    d.run_step(PLAN)


def escalated_then(kind: HumanAnswerKind, *changes: str) -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        plan_limit(d)
        d.decide()  # escalate
        d.answer(kind, *changes)

    return setup


def code_escalated_then(kind: HumanAnswerKind, *changes: str) -> Callable[[Driver], None]:
    def setup(d: Driver) -> None:
        code_limit(d)
        d.decide()  # escalate
        d.answer(kind, *changes)

    return setup


ROWS: list[tuple[str, WorkflowConfig, Callable[[Driver], object], str]] = [
    ("new workflow -> step 1", WorkflowConfig(), lambda d: None, "invoke_step1"),
    ("step 1 done -> step 2", WorkflowConfig(), after_step1, "invoke_step2"),
    ("plan not converged -> step 3", WorkflowConfig(), plan_not_converged, "invoke_step3"),
    (
        "plan converged, gate on -> plan gate",
        WorkflowConfig(),
        plan_converged,
        "request_plan_approval",
    ),
    ("plan converged, gate off -> phase 2", _gates(plan=False), plan_converged, "transition_phase"),
    ("step 3 done -> step 2", WorkflowConfig(), after_revision, "invoke_step2"),
    ("plan revision limit -> escalate", WorkflowConfig(), plan_limit, "escalate"),
    ("plan limit 1 -> escalate", _limits(max_plan_revisions=1), plan_limit, "escalate"),
    (
        "plan gate approve -> phase 2",
        WorkflowConfig(),
        at_plan_gate(HumanAnswerKind.APPROVE),
        "transition_phase",
    ),
    (
        "plan gate reject -> rejected",
        WorkflowConfig(),
        at_plan_gate(HumanAnswerKind.REJECT),
        "reject",
    ),
    (
        "plan gate changes -> step 3",
        WorkflowConfig(),
        at_plan_gate(HumanAnswerKind.REQUEST_CHANGES, "add a data-quality section"),
        "invoke_step3",
    ),
    ("step 4 done -> step 5", WorkflowConfig(), after_implementation, "invoke_step5"),
    (
        "code converged, final on -> final gate",
        WorkflowConfig(),
        code_validated(code_report()),
        "request_final_approval",
    ),
    (
        "code converged, final off -> complete",
        _gates(final=False),
        code_validated(code_report()),
        "complete",
    ),
    ("code not converged -> step 6", WorkflowConfig(), code_validated(BAD_CODE), "invoke_step6"),
    (
        "review below 7 skips tools -> step 6",
        WorkflowConfig(),
        code_validated(code_report(6.0)),
        "invoke_step6",
    ),
    (
        "coverage below 85 -> step 6",
        WorkflowConfig(),
        code_validated(code_report(coverage=80.0)),
        "invoke_step6",
    ),
    (
        "standardization failed -> step 6",
        WorkflowConfig(),
        code_validated(code_report(status="FAILED")),
        "invoke_step6",
    ),
    (
        "3 minor issues -> step 6",
        WorkflowConfig(),
        code_validated(code_report(minor=3)),
        "invoke_step6",
    ),
    (
        "code review gate on -> review gate even if converged",
        _gates(code_review=True),
        code_validated(code_report()),
        "request_code_review",
    ),
    (
        "code review gate on -> review gate if not converged",
        _gates(code_review=True),
        code_validated(BAD_CODE),
        "request_code_review",
    ),
    (
        "code review approve, converged -> final gate",
        _gates(code_review=True),
        at_code_review(HumanAnswerKind.APPROVE, code_report()),
        "request_final_approval",
    ),
    (
        "code review approve, converged, final off -> complete",
        _gates(code_review=True, final=False),
        at_code_review(HumanAnswerKind.APPROVE, code_report()),
        "complete",
    ),
    (
        "code review approve, not converged -> step 6",
        _gates(code_review=True),
        at_code_review(HumanAnswerKind.APPROVE, BAD_CODE),
        "invoke_step6",
    ),
    (
        "code review changes -> step 6",
        _gates(code_review=True),
        at_code_review(HumanAnswerKind.REQUEST_CHANGES, code_report(), "log every dropped row"),
        "invoke_step6",
    ),
    (
        "code review reject -> rejected",
        _gates(code_review=True),
        at_code_review(HumanAnswerKind.REJECT, code_report()),
        "reject",
    ),
    ("step 6 done -> step 7", WorkflowConfig(), after_refinement, "invoke_step7"),
    (
        "step 7 not converged -> step 6",
        WorkflowConfig(),
        refined_validated(BAD_CODE),
        "invoke_step6",
    ),
    (
        "step 7 converged -> final gate",
        WorkflowConfig(),
        refined_validated(code_report()),
        "request_final_approval",
    ),
    (
        "step 7 converged, final off -> complete",
        _gates(final=False),
        refined_validated(code_report()),
        "complete",
    ),
    ("code refinement limit -> escalate", WorkflowConfig(), code_limit, "escalate"),
    (
        "final approve -> complete",
        WorkflowConfig(),
        at_final_gate(HumanAnswerKind.APPROVE),
        "complete",
    ),
    ("final reject -> rejected", WorkflowConfig(), at_final_gate(HumanAnswerKind.REJECT), "reject"),
    (
        "final changes -> step 6",
        WorkflowConfig(),
        at_final_gate(HumanAnswerKind.REQUEST_CHANGES, "rename the module"),
        "invoke_step6",
    ),
    ("step failed once -> retry", WorkflowConfig(), failed_times(1), "retry_step"),
    ("step failed 3 times -> retry", WorkflowConfig(), failed_times(3), "retry_step"),
    ("step failed 4 times -> escalate", WorkflowConfig(), failed_times(4), "escalate"),
    (
        "fatal step error -> fail",
        WorkflowConfig(),
        lambda d: (d.decide(), d.fail("template_error", retryable=False)),
        "fail",
    ),
    ("decision limit -> escalate", WorkflowConfig(), decision_limit, "escalate"),
    (
        "escalation approve -> revise with fresh budget",
        WorkflowConfig(),
        escalated_then(HumanAnswerKind.APPROVE),
        "invoke_step3",
    ),
    (
        "escalation guidance -> revise",
        WorkflowConfig(),
        escalated_then(HumanAnswerKind.REQUEST_CHANGES, "drop the PCA step"),
        "invoke_step3",
    ),
    (
        "escalation reject -> rejected",
        WorkflowConfig(),
        escalated_then(HumanAnswerKind.REJECT),
        "reject",
    ),
    (
        "escalation accept, plan not converged -> phase 2",
        WorkflowConfig(),
        escalated_then(HumanAnswerKind.ACCEPT),
        "transition_phase",
    ),
    (
        "escalation accept, code not converged -> final gate",
        WorkflowConfig(),
        code_escalated_then(HumanAnswerKind.ACCEPT),
        "request_final_approval",
    ),
    (
        "escalation accept, code not converged, final off -> complete",
        _gates(final=False),
        code_escalated_then(HumanAnswerKind.ACCEPT),
        "complete",
    ),
]


@pytest.mark.parametrize(
    ("config", "setup", "expected"), [pytest.param(c, s, e, id=i) for i, c, s, e in ROWS]
)
def test_decision_row(
    config: WorkflowConfig, setup: Callable[[Driver], None], expected: str
) -> None:
    """Each workflow rule yields exactly its decision, and that decision is legal."""
    d = Driver(config)
    setup(d)
    facts = compute_facts(d.state, d.config)
    decision = d.pipeline.machine.decide(facts)
    assert trigger_of(decision) == expected
    assert expected in d.pipeline.machine.legal_actions(facts)
    d.decide()  # firing it through the machine succeeds


def test_retry_strategy_follows_error_type() -> None:
    """Timeouts retry with a longer timeout, bad output with corrected input, others back off."""
    for error, strategy in (
        ("timeout", RecoveryStrategy.EXTENDED_TIMEOUT),
        ("invalid_output", RecoveryStrategy.CORRECTED_INPUT),
        ("llm_unavailable", RecoveryStrategy.BACKOFF),
    ):
        d = Driver()
        failed_times(1, error)(d)
        state = d.decide()
        assert state.decisions[-1].decision.recovery_strategy is strategy
        assert state.last_record is not None and state.last_record.attempt == 2


def test_escalation_reason_recorded() -> None:
    """An escalation at a limit records which limit."""
    d = Driver()
    plan_limit(d)
    d.decide()
    assert d.state.decisions[-1].decision.escalation_reason is EscalationReason.PLAN_REVISION_LIMIT
    assert d.state.machine_state is MachineState.ESCALATED


def test_change_requests_reach_the_next_step() -> None:
    """Changes requested at a gate are carried into the next planner step's record."""
    d = Driver()
    at_plan_gate(HumanAnswerKind.REQUEST_CHANGES, "add a data-quality section")(d)
    d.decide()
    assert d.state.decisions[-1].decision.change_requests == ("add a data-quality section",)
    assert d.state.last_record is not None
    assert d.state.last_record.change_requests == ("add a data-quality section",)


def test_gate_waits_without_answer() -> None:
    """At a gate with no answer there is nothing to decide."""
    d = Driver()
    d.to_plan_gate()
    assert d.state.waiting_gate is Gate.PLAN
    with pytest.raises(AwaitingHumanError, match="plan"):
        d.decide()


def test_finished_workflow_has_nothing_to_decide() -> None:
    """A completed workflow refuses further decisions."""
    d = Driver(_gates(final=False))
    code_validated(code_report())(d)
    d.decide()
    assert d.state.machine_state is MachineState.COMPLETED
    with pytest.raises(WorkflowFinishedError):
        d.decide()


def test_human_sourced_decisions() -> None:
    """Decisions that carry out a human answer are recorded with source human."""
    d = Driver()
    at_plan_gate(HumanAnswerKind.APPROVE)(d)
    d.decide()
    assert d.state.decisions[-1].source.value == "human"
    assert d.state.phase == 2 and d.running() is Step.IMPLEMENTATION


def test_fresh_budget_after_escalation_answer() -> None:
    """Approving an escalation grants a full new round of revisions."""
    d = Driver(_limits(max_plan_revisions=2))
    escalated_then(HumanAnswerKind.APPROVE)(d)
    for _ in range(2):
        d.run_step(PLAN)
        d.run_step(BAD_PLAN)
        # within the new budget the decision is still a revision or an escalation at the end
    d.decide()
    assert d.state.decisions[-1].decision.escalation_reason is EscalationReason.PLAN_REVISION_LIMIT


def test_accept_overrides_convergence_and_says_so() -> None:
    """An accepted unconverged plan enters phase 2, recorded as a human override."""
    d = Driver()
    escalated_then(HumanAnswerKind.ACCEPT)(d)
    state = d.decide()
    rec = state.decisions[-1]
    assert rec.source is DecisionSource.HUMAN
    assert "overriding convergence" in rec.decision.rationale
    assert state.phase == 2 and state.machine_state is MachineState.IMPLEMENTATION
    assert find_inconsistency(state, d.config) is None


def test_accept_is_only_an_answer_to_an_escalation() -> None:
    """Accept at the plan gate is refused and nothing is recorded."""
    d = Driver()
    d.to_plan_gate()
    with pytest.raises(HumanAnswerError, match="accept answers an escalation only"):
        d.answer(HumanAnswerKind.ACCEPT)
    assert d.state.human_answers == ()


def test_accept_needs_work_to_accept() -> None:
    """An escalation before any plan was written cannot be accepted."""
    d = Driver(_limits(max_step_retries=0))
    failed_times(1)(d)
    d.decide()  # retries spent: escalate
    assert d.state.machine_state is MachineState.ESCALATED
    with pytest.raises(HumanAnswerError, match="no plan to accept"):
        d.answer(HumanAnswerKind.ACCEPT)


def test_no_one_but_a_human_can_accept() -> None:
    """Without a human's accept, an escalation offers no edge that skips convergence."""
    d = Driver()
    plan_limit(d)
    d.decide()  # escalate
    d.answer(HumanAnswerKind.APPROVE)
    legal = d.pipeline.machine.legal_actions(compute_facts(d.state, d.config))
    assert "transition_phase" not in legal


def test_an_unknown_error_type_is_kept_in_the_message() -> None:
    """A failure kind the enum lacks is recorded as internal_error, its name in the message."""
    d = Driver()
    d.decide()
    state = d.fail("gpu_on_fire")
    assert state.last_record is not None and state.last_record.error is not None
    assert state.last_record.error.type is StepErrorType.INTERNAL_ERROR
    assert state.last_record.error.message.startswith("(gpu_on_fire) ")
