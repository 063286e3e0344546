"""Inconsistent snapshots are refused with their reason; every state the machine reaches is not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.deciding.actions import build_decision
from orchestrator.deciding.record import Choice
from orchestrator.running.consistency import check_consistency, find_inconsistency
from orchestrator.running.updates import mark_interrupted
from state.config import Gates, Limits, WorkflowConfig
from state.decision import DecisionSource
from state.errors import InconsistentStateError, StateError
from state.reports import CodeChange, PlanDraft
from state.steps import TERMINAL_STATES, Gate, MachineState, Step
from state.workflow import HumanAnswer, HumanAnswerKind, StepStatus, WorkflowState

from builders import BAD_CODE, BAD_PLAN, Driver, code_report, plan_report

PLAN = PlanDraft(version=1, markdown="# plan")
CODE = CodeChange(files=("prep.py",))


class RecordingDriver(Driver):
    """A ``Driver`` that keeps every state it passes through."""

    def __init__(self, config: WorkflowConfig | None = None) -> None:
        super().__init__(config)
        self.seen: list[WorkflowState] = [self.state]

    def _keep(self) -> WorkflowState:
        self.seen.append(self.state)
        return self.state

    def decide(self) -> WorkflowState:
        super().decide()
        return self._keep()

    def finish(self, result: object) -> WorkflowState:
        super().finish(result)
        return self._keep()

    def fail(self, error_type: str = "llm_unavailable", retryable: bool = True) -> WorkflowState:
        super().fail(error_type, retryable)
        return self._keep()

    def answer(self, kind: HumanAnswerKind, *changes: str, gate: Gate | None = None) -> None:
        super().answer(kind, *changes, gate=gate)
        self._keep()

    def interrupt(self) -> None:
        """The process running the step died."""
        self.state = mark_interrupted(self.state, self.clock.now())
        self._keep()

    def choose(self, trigger: str) -> None:
        """Apply a legal action other than the programmatic one, as an LLM would."""
        analysis = self.pipeline.analyze(self.state, self.config)
        assert trigger in analysis.legal_actions, analysis.legal_actions
        answer = self.state.pending_answer
        decision = build_decision(
            trigger,
            analysis.facts,
            rationale="chosen by the test",
            confidence=0.9,
            change_requests=answer.changes if answer is not None else (),
        )
        self.state, _ = self.pipeline.apply(analysis, Choice(decision, DecisionSource.LLM))
        self._keep()

    def until_human(self, plan: object = BAD_PLAN, code: object = BAD_CODE) -> None:
        """Decide and run steps with default results until a gate waits or the workflow ends."""
        while self.state.waiting_gate is None and self.state.machine_state not in TERMINAL_STATES:
            self.decide()
            step = self.running()
            if step is not None:
                self.finish(self.default_result(step, plan, code))  # type: ignore[arg-type]


# -- flows the machine really goes through -----------------------------------------------------


def happy_path(d: RecordingDriver) -> None:
    d.run_step(PLAN)
    d.run_step(BAD_PLAN)
    d.run_step(PLAN)
    d.run_step(plan_report())
    d.decide()
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()
    d.finish(CODE)
    d.run_step(BAD_CODE)
    d.run_step(CODE)
    d.run_step(code_report())
    d.decide()
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()


def gates_off(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(gates=Gates(plan=False, final=False))
    d.run_step(PLAN)
    d.run_step(plan_report())
    d.run_step(CODE)
    d.run_step(code_report())
    d.decide()


def code_review_gate(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(gates=Gates(code_review=True))
    d.to_plan_gate()
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()
    d.finish(CODE)
    d.run_step(BAD_CODE)
    d.decide()  # code review gate
    d.answer(HumanAnswerKind.APPROVE)
    d.run_step(CODE)
    d.run_step(code_report())
    d.decide()
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "log every dropped row")
    d.run_step(CODE)
    d.run_step(code_report())
    d.decide()
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()


def plan_gate_changes(d: RecordingDriver) -> None:
    d.to_plan_gate()
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "add a data-quality section")
    d.run_step(PLAN)
    d.run_step(plan_report())
    d.decide()
    d.answer(HumanAnswerKind.APPROVE)
    d.until_human(code=code_report())


def rejected_at(gate: str) -> Callable[[RecordingDriver], None]:
    def flow(d: RecordingDriver) -> None:
        d.config = WorkflowConfig(gates=Gates(code_review=True))
        d.to_plan_gate()
        if gate != "plan":
            d.answer(HumanAnswerKind.APPROVE)
            d.decide()
            d.finish(CODE)
            d.run_step(code_report())
            d.decide()
            if gate == "final":
                d.answer(HumanAnswerKind.APPROVE)
                d.decide()
        d.answer(HumanAnswerKind.REJECT)
        d.decide()
        assert d.state.machine_state is MachineState.REJECTED

    return flow


def retries(d: RecordingDriver) -> None:
    d.run_step(PLAN)
    d.decide()
    d.fail("timeout")
    d.decide()
    d.interrupt()
    d.decide()
    d.fail("invalid_output")
    d.decide()
    d.finish(plan_report())
    d.until_human()


def fatal(d: RecordingDriver) -> None:
    d.to_phase2()
    d.decide()
    d.fail("template_error", retryable=False)
    d.decide()
    assert d.state.machine_state is MachineState.FAILED


def retries_spent_then_approved(d: RecordingDriver) -> None:
    d.to_phase2()
    d.decide()
    for _ in range(4):
        d.fail()
        d.decide()
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()  # retry with a fresh budget
    d.finish(BAD_CODE)
    d.until_human(code=code_report())


def plan_limit_then_guidance(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(limits=Limits(max_plan_revisions=1))
    d.until_human()
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "drop the PCA step")
    d.until_human()
    d.answer(HumanAnswerKind.APPROVE)
    d.until_human(plan=plan_report())
    d.answer(HumanAnswerKind.APPROVE)
    d.until_human(code=code_report())


def code_limit_then_guidance(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(limits=Limits(max_code_refinements=1))
    d.to_phase2()
    d.until_human()
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "use pandas, not polars")
    d.run_step(CODE)
    d.run_step(code_report())
    d.decide()
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()


def decision_limit_then_approved(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(limits=Limits(max_decisions=4))
    d.until_human()
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.APPROVE)
    d.until_human(plan=plan_report())


def guided_plan_rewrite_after_failures(d: RecordingDriver) -> None:
    d.run_step(PLAN)
    d.decide()
    for _ in range(4):
        d.fail()
        d.decide()
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "the plan is too long for the validator: split it")
    d.choose("invoke_step3")  # a failed step 2 followed by step 3, on the human's guidance
    d.finish(PLAN)
    d.until_human(plan=plan_report())


def guided_refinement_after_failures(d: RecordingDriver) -> None:
    d.to_phase2()
    d.run_step(BAD_CODE)
    d.run_step(CODE)
    d.decide()
    for _ in range(4):
        d.fail()
        d.decide()
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "the tests hang: add timeouts")
    d.choose("invoke_step6")  # a failed step 7 followed by step 6
    d.finish(CODE)
    d.until_human(code=code_report())


def guided_revision_of_the_first_plan(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(limits=Limits(max_decisions=1))
    d.run_step(PLAN)
    d.decide()  # decision limit: escalate
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.REQUEST_CHANGES, "target scikit-learn pipelines")
    d.choose("invoke_step3")  # step 1 straight to step 3
    d.finish(PLAN)
    d.until_human(plan=plan_report())


def escalated_from_a_gate(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(gates=Gates(code_review=True))
    d.to_plan_gate()
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()
    d.finish(CODE)
    d.run_step(code_report())
    d.decide()  # the code review gate
    d.answer(HumanAnswerKind.APPROVE)
    d.choose("escalate")
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()  # ask again at the code review gate
    assert d.state.waiting_gate is Gate.CODE_REVIEW
    d.answer(HumanAnswerKind.APPROVE)
    d.decide()  # converged: the final gate


def accepted_first_plan(d: RecordingDriver) -> None:
    d.config = WorkflowConfig(limits=Limits(max_decisions=1))
    d.run_step(PLAN)
    d.decide()  # decision limit: escalate, the plan never validated
    assert d.state.machine_state is MachineState.ESCALATED
    d.answer(HumanAnswerKind.ACCEPT)
    d.decide()  # step 1 straight to step 4
    d.finish(CODE)


def accepted_plan_after_the_limit(d: RecordingDriver) -> None:
    d.run_step(PLAN)
    d.run_step(BAD_PLAN)
    for _ in range(d.config.limits.max_plan_revisions):
        d.run_step(PLAN)
        d.run_step(BAD_PLAN)
    d.decide()  # plan revision limit: escalate
    d.answer(HumanAnswerKind.ACCEPT)
    d.decide()  # an unconverged plan goes on to phase 2
    d.finish(CODE)
    d.until_human(code=code_report())


def accepted_code(d: RecordingDriver) -> None:
    d.to_phase2()
    d.run_step(BAD_CODE)
    for _ in range(d.config.limits.max_code_refinements):
        d.run_step(CODE)
        d.run_step(BAD_CODE)
    d.decide()  # code refinement limit: escalate
    d.answer(HumanAnswerKind.ACCEPT)
    d.decide()  # unconverged code goes to the final gate


S = MachineState
FLOWS: dict[str, tuple[Callable[[RecordingDriver], None], MachineState]] = {
    "happy path with both loops": (happy_path, S.COMPLETED),
    "all gates off": (gates_off, S.COMPLETED),
    "code review gate": (code_review_gate, S.COMPLETED),
    "plan gate change requests": (plan_gate_changes, S.AWAITING_FINAL_APPROVAL),
    "rejected at plan gate": (rejected_at("plan"), S.REJECTED),
    "rejected at code review": (rejected_at("code_review"), S.REJECTED),
    "rejected at final gate": (rejected_at("final"), S.REJECTED),
    "retries and an interruption": (retries, S.AWAITING_PLAN_APPROVAL),
    "fatal step error": (fatal, S.FAILED),
    "retries spent, human approves": (retries_spent_then_approved, S.AWAITING_FINAL_APPROVAL),
    "plan limit, human guidance": (plan_limit_then_guidance, S.AWAITING_FINAL_APPROVAL),
    "code limit, human guidance": (code_limit_then_guidance, S.COMPLETED),
    "decision limit, human approves": (decision_limit_then_approved, S.AWAITING_PLAN_APPROVAL),
    "guided plan rewrite after failures": (
        guided_plan_rewrite_after_failures,
        S.AWAITING_PLAN_APPROVAL,
    ),
    "guided refinement after failures": (
        guided_refinement_after_failures,
        S.AWAITING_FINAL_APPROVAL,
    ),
    "guided revision of the first plan": (guided_revision_of_the_first_plan, S.ESCALATED),
    "escalated from a gate": (escalated_from_a_gate, S.AWAITING_FINAL_APPROVAL),
    "accepted first plan": (accepted_first_plan, S.IMPLEMENTATION),
    "accepted plan after the limit": (accepted_plan_after_the_limit, S.AWAITING_FINAL_APPROVAL),
    "accepted code": (accepted_code, S.AWAITING_FINAL_APPROVAL),
}


@pytest.mark.parametrize(("flow", "end"), list(FLOWS.values()), ids=list(FLOWS))
def test_every_state_reached_is_consistent(
    flow: Callable[[RecordingDriver], None], end: MachineState
) -> None:
    """Every state the machine passes through in a real flow is accepted as consistent."""
    d = RecordingDriver()
    flow(d)
    assert d.state.machine_state is end
    for i, state in enumerate(d.seen):
        problem = find_inconsistency(state, d.config)
        assert problem is None, f"state #{i} ({state.machine_state.value}): {problem}"
        check_consistency(state, d.config)


# -- inconsistent snapshots -------------------------------------------------------------------


def code_validation_running() -> WorkflowState:
    d = Driver()
    d.to_phase2()
    return d.decide()


def at_plan_gate() -> WorkflowState:
    d = Driver()
    return d.to_plan_gate()


def after_revision() -> WorkflowState:
    d = Driver()
    d.run_step(PLAN)
    d.run_step(BAD_PLAN)
    return d.run_step(PLAN)


def after_refinement() -> WorkflowState:
    d = Driver()
    d.to_phase2()
    d.run_step(BAD_CODE)
    return d.run_step(CODE)


def phase2_without_plan_gate() -> WorkflowState:
    d = Driver(WorkflowConfig(gates=Gates(plan=False)))
    d.run_step(PLAN)
    d.run_step(plan_report())
    return d.run_step(CODE)


def _with(base: Callable[[], WorkflowState], **update: Any) -> Callable[[], WorkflowState]:
    return lambda: base().model_copy(update=update)


def _edit(
    base: Callable[[], WorkflowState], edit: Callable[[WorkflowState], dict[str, Any]]
) -> Callable[[], WorkflowState]:
    def make() -> WorkflowState:
        state = base()
        return state.model_copy(update=edit(state))

    return make


def _answer(gate: Gate, after: int) -> HumanAnswer:
    return HumanAnswer(
        gate=gate,
        answer=HumanAnswerKind.APPROVE,
        by="tester",
        at=datetime(2026, 1, 2, tzinfo=UTC),
        after_decision=after,
    )


def _plan_report_replaced(state: WorkflowState) -> dict[str, Any]:
    history = tuple(
        r.model_copy(update={"result": BAD_PLAN}) if r.step is Step.PLAN_VALIDATION else r
        for r in state.history
    )
    return {"history": history}


def _renumbered(state: WorkflowState) -> dict[str, Any]:
    first = state.decisions[0].model_copy(update={"seq": 5})
    return {"decisions": (first, *state.decisions[1:])}


BAD_STATES: list[tuple[str, Callable[[], WorkflowState], WorkflowConfig, str]] = [
    (
        "step 5 in phase 1",
        _with(code_validation_running, phase=1),
        WorkflowConfig(),
        "machine state 'code_validation' belongs to phase 2, but phase is 1",
    ),
    (
        "current step 5 at the plan gate in phase 1",
        _with(at_plan_gate, current_step=Step.CODE_VALIDATION),
        WorkflowConfig(),
        "current step 5 is a phase-2 step, but phase is 1",
    ),
    (
        "code before plan approval (plan gate on)",
        _with(phase2_without_plan_gate),
        WorkflowConfig(),
        "code steps ran before the plan was approved at the plan gate",
    ),
    (
        "code steps before an approved plan (answers erased)",
        _with(code_validation_running, human_answers=()),
        WorkflowConfig(),
        "code steps ran before the plan was approved at the plan gate",
    ),
    (
        "code steps on a plan that never converged",
        _edit(phase2_without_plan_gate, _plan_report_replaced),
        WorkflowConfig(gates=Gates(plan=False)),
        "code steps ran before the plan converged or was approved",
    ),
    (
        "history skips from step 1 to step 4",
        _edit(code_validation_running, lambda s: {"history": (s.history[0], *s.history[2:])}),
        WorkflowConfig(),
        "the history skips steps: step 1 is followed by 4",
    ),
    (
        "history does not start at step 1",
        _edit(after_revision, lambda s: {"history": s.history[1:]}),
        WorkflowConfig(),
        "the history starts with step 2, not step 1",
    ),
    (
        "plan revision counter disagrees with the history",
        _edit(
            after_revision,
            lambda s: {"counters": s.counters.model_copy(update={"plan_revisions": 0})},
        ),
        WorkflowConfig(),
        "counters say 0 plan revisions, the history shows 1",
    ),
    (
        "code refinement counter disagrees with the history",
        _edit(
            after_refinement,
            lambda s: {"counters": s.counters.model_copy(update={"code_refinements": 2})},
        ),
        WorkflowConfig(),
        "counters say 2 code refinements, the history shows 1",
    ),
    (
        "last_completed_step is not the history's",
        _with(at_plan_gate, last_completed_step=Step.INITIAL_PLANNING),
        WorkflowConfig(),
        "last_completed_step is 1, but the history's last completed step is 2",
    ),
    (
        "machine state disagrees with the last decision",
        _with(at_plan_gate, machine_state=MachineState.ESCALATED),
        WorkflowConfig(),
        "the last decision (#3) moved the workflow to 'awaiting_plan_approval', but the "
        "machine state is 'escalated'",
    ),
    (
        "decision numbering",
        _edit(at_plan_gate, _renumbered),
        WorkflowConfig(),
        "decision #1 is numbered 5",
    ),
    (
        "pending answer for the wrong gate",
        _edit(at_plan_gate, lambda s: {"human_answers": (_answer(Gate.FINAL, 3),)}),
        WorkflowConfig(),
        "the pending answer is for the 'final' gate, not 'plan'",
    ),
    (
        "pending answer while not at a gate",
        _edit(after_revision, lambda s: {"human_answers": (_answer(Gate.PLAN, 3),)}),
        WorkflowConfig(),
        "is pending, but the workflow is not at a gate",
    ),
    (
        "a step ran again after it completed",
        _edit(at_plan_gate, lambda s: {"history": (*s.history, s.history[-1])}),
        WorkflowConfig(),
        "step 2 ran again after it completed",
    ),
    (
        "a completed step without a result",
        _edit(
            at_plan_gate,
            lambda s: {
                "history": (*s.history[:-1], s.history[-1].model_copy(update={"result": None}))
            },
        ),
        WorkflowConfig(),
        "step 2 completed without a result",
    ),
    (
        "a running step followed by another",
        _edit(
            at_plan_gate,
            lambda s: {
                "history": (
                    s.history[0].model_copy(update={"status": StepStatus.RUNNING, "result": None}),
                    *s.history[1:],
                )
            },
        ),
        WorkflowConfig(),
        "step 1 is still running, but step 2 followed",
    ),
]


@pytest.mark.parametrize(
    ("make", "config", "reason"),
    [pytest.param(m, c, r, id=i) for i, m, c, r in BAD_STATES],
)
def test_inconsistent_state_is_refused_with_its_reason(
    make: Callable[[], WorkflowState], config: WorkflowConfig, reason: str
) -> None:
    """An inconsistent snapshot is named by find_inconsistency and refused by check_consistency."""
    state = make()
    problem = find_inconsistency(state, config)
    assert problem is not None and reason in problem
    with pytest.raises(InconsistentStateError) as info:
        check_consistency(state, config)
    message = str(info.value)
    assert reason in message and state.workflow_id in message
    assert isinstance(info.value, StateError)


def test_the_valid_bases_are_consistent() -> None:
    """The states the bad snapshots are made from are themselves consistent (so the edit counts)."""
    for base in (code_validation_running, at_plan_gate, after_revision, after_refinement):
        assert find_inconsistency(base(), WorkflowConfig()) is None
    assert (
        find_inconsistency(phase2_without_plan_gate(), WorkflowConfig(gates=Gates(plan=False)))
        is None
    )
