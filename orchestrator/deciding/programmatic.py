"""The programmatic orchestrator: WORKFLOW.md's rules as code, one decision per state.

``decide`` maps every valid, decidable state to exactly one decision, and that decision is
always legal in the machine (a property test pins this). Decisions without human text are
interned: identical decisions of thousands of workflows are one object.
"""

from __future__ import annotations

from orchestrator.deciding import machine as m
from orchestrator.deciding.actions import build_decision, recovery_for
from orchestrator.deciding.facts import Facts
from orchestrator.deciding.guards import llm_budget_granted, llm_budget_spent
from state.decision import Decision, EscalationReason
from state.errors import AwaitingHumanError, WorkflowFinishedError
from state.steps import GATE_OF_STATE, TERMINAL_STATES, MachineState, Step
from state.workflow import HumanAnswerKind

S = MachineState

# Why each rule fires; constant text, so programmatic decisions can be shared.
WHY = {
    "start": "new workflow: write the first plan",
    "validate_plan": "a plan was written: validate it",
    "revise_plan": "the plan has not converged and revisions are left: revise it",
    "plan_gate": "the plan converged: ask for approval at the plan gate",
    "plan_converged": "the plan converged and the plan gate is off: start phase 2",
    "plan_approved": "a human approved the plan: start phase 2",
    "plan_changes": "a human requested changes to the plan: revise it",
    "validate_code": "code was written: validate it",
    "code_review_gate": "first code validation done: ask for a code review",
    "refine_code": "the code has not converged and refinements are left: refine it",
    "final_gate": "the code converged: ask for final approval",
    "complete": "the code converged and the final gate is off: complete",
    "code_approved": "a human approved: complete",
    "code_changes": "a human requested changes to the code: refine it",
    "validate_refined": "the code was refined: validate it again",
    "retry": "the step failed or was interrupted and retries are left: retry it",
    "retries_spent": "the step failed and its retry budget is spent: ask a human",
    "fatal": "the step failed with an error retrying cannot fix",
    "llm_budget": "the workflow's LLM budget is spent, so the step cannot run: ask a human",
    "llm_budget_granted": "a human let the workflow go on with fresh LLM budget: retry the step",
    "plan_limit": "the plan has not converged after the maximum number of revisions",
    "code_limit": "the code has not converged after the maximum number of refinements",
    "decision_limit": "the workflow reached its maximum number of decisions",
    "rejected": "a human rejected the work",
    "gate_again": "a human answered the escalation: ask again at the interrupted gate",
}


# Triggers and enum members bound once for the hot path (see orchestrator/deciding/facts.py).
_WRITE_PLAN = m.INVOKE[Step.INITIAL_PLANNING]
_VALIDATE_PLAN = m.INVOKE[Step.PLAN_VALIDATION]
_REVISE_PLAN = m.INVOKE[Step.PLAN_REVISION]
_VALIDATE_CODE = m.INVOKE[Step.CODE_VALIDATION]
_REFINE_CODE = m.INVOKE[Step.CODE_REFINEMENT]
_VALIDATE_REFINED = m.INVOKE[Step.CONVERGENCE_VALIDATION]
_ASK_PLAN_GATE = m.REQUEST_APPROVAL[S.AWAITING_PLAN_APPROVAL]
_ASK_CODE_REVIEW_GATE = m.REQUEST_APPROVAL[S.AWAITING_CODE_REVIEW]
_ASK_FINAL_GATE = m.REQUEST_APPROVAL[S.AWAITING_FINAL_APPROVAL]
_NEW = S.NEW
_AT_PLAN_GATE = S.AWAITING_PLAN_APPROVAL
_AT_CODE_REVIEW_GATE = S.AWAITING_CODE_REVIEW
_AT_FINAL_GATE = S.AWAITING_FINAL_APPROVAL
_PLAN_WRITING = (Step.INITIAL_PLANNING, Step.PLAN_REVISION)
_STEP_PLAN_VALIDATION = Step.PLAN_VALIDATION
_STEP_IMPLEMENTATION = Step.IMPLEMENTATION
_STEP_CODE_VALIDATION = Step.CODE_VALIDATION
_STEP_CODE_REFINEMENT = Step.CODE_REFINEMENT
_REJECT = HumanAnswerKind.REJECT
_REQUEST_CHANGES = HumanAnswerKind.REQUEST_CHANGES
_APPROVE = HumanAnswerKind.APPROVE


class ProgrammaticDecider:
    """Decides by rule. Holds the interning cache of its decisions."""

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], Decision] = {}

    def _decision(
        self,
        trigger: str,
        f: Facts,
        why: str,
        reason: EscalationReason | None = None,
        changes: tuple[str, ...] = (),
    ) -> Decision:
        strategy = recovery_for(f) if trigger == m.RETRY else None
        key = (trigger, why, reason, strategy, f.step if trigger == m.RETRY else None)
        if not changes:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        decision = build_decision(
            trigger, f, rationale=WHY[why], escalation_reason=reason, change_requests=changes
        )
        if not changes:
            self._cache[key] = decision
        return decision

    def decide(self, f: Facts) -> Decision:
        """The programmatic decision for the state in ``f``.

        Raises:
            WorkflowFinishedError: the workflow is completed, rejected or failed.
            AwaitingHumanError: the workflow waits at a gate and no human has answered yet.
        """
        ms = f.machine_state
        if ms in TERMINAL_STATES:
            raise WorkflowFinishedError(
                f"workflow {f.state.workflow_id} is {ms.value}: there is nothing left to decide"
            )
        if ms in GATE_OF_STATE:
            return self._at_gate(f)
        return self._working(f, ms)

    def _at_gate(self, f: Facts) -> Decision:
        ms = f.machine_state
        answer = f.answer
        if answer is None:
            raise AwaitingHumanError(
                f"workflow {f.state.workflow_id} waits for a human at the "
                f"'{GATE_OF_STATE[ms].value}' gate: answer with orchestrator approve, reject "
                "or request-changes"
            )
        if answer.answer is _REJECT:
            return self._decision(m.REJECT, f, "rejected")
        changes = answer.changes if answer.answer is _REQUEST_CHANGES else ()
        approved = answer.answer is _APPROVE
        if ms is _AT_PLAN_GATE:
            if approved:
                return self._decision(m.TRANSITION_PHASE, f, "plan_approved")
            return self._decision(_REVISE_PLAN, f, "plan_changes", changes=changes)
        if ms is _AT_CODE_REVIEW_GATE:
            if approved:
                return self._after_code_validation(f)
            return self._decision(_REFINE_CODE, f, "code_changes", changes=changes)
        if ms is _AT_FINAL_GATE:
            if approved:
                return self._decision(m.COMPLETE, f, "code_approved")
            return self._decision(_REFINE_CODE, f, "code_changes", changes=changes)
        # The escalation gate: carry on where the escalation stopped, with fresh budgets.
        origin = f.origin
        if origin in GATE_OF_STATE:
            return self._decision(m.REQUEST_APPROVAL[origin], f, "gate_again", changes=changes)
        decision = self._working(f, origin)
        if changes and decision.step is not None:
            decision = decision.model_copy(update={"change_requests": changes})
        return decision

    def _working(self, f: Facts, at: MachineState) -> Decision:
        """The decision after the step of ``at`` (a working state, or NEW)."""
        if f.decisions_left <= 0:
            return self._decision(m.ESCALATE, f, "decision_limit", EscalationReason.DECISION_LIMIT)
        if at is _NEW:
            return self._decision(_WRITE_PLAN, f, "start")
        if f.step_failed:
            if not f.retryable:
                if llm_budget_granted(f):
                    return self._decision(m.RETRY, f, "llm_budget_granted")
                if llm_budget_spent(f):
                    return self._decision(
                        m.ESCALATE, f, "llm_budget", EscalationReason.LLM_BUDGET_EXHAUSTED
                    )
                return self._decision(m.FAIL, f, "fatal")
            if f.failures <= f.config.limits.max_step_retries:
                return self._decision(m.RETRY, f, "retry")
            return self._decision(
                m.ESCALATE, f, "retries_spent", EscalationReason.STEP_RETRIES_EXHAUSTED
            )
        step = f.step
        if step in _PLAN_WRITING:
            return self._decision(_VALIDATE_PLAN, f, "validate_plan")
        if step is _STEP_PLAN_VALIDATION:
            if f.plan_converged:
                if f.config.gates.plan:
                    return self._decision(_ASK_PLAN_GATE, f, "plan_gate")
                return self._decision(m.TRANSITION_PHASE, f, "plan_converged")
            if f.plan_revisions_left > 0:
                return self._decision(_REVISE_PLAN, f, "revise_plan")
            return self._decision(m.ESCALATE, f, "plan_limit", EscalationReason.PLAN_REVISION_LIMIT)
        if step is _STEP_IMPLEMENTATION:
            return self._decision(_VALIDATE_CODE, f, "validate_code")
        if step is _STEP_CODE_REFINEMENT:
            return self._decision(_VALIDATE_REFINED, f, "validate_refined")
        if step is _STEP_CODE_VALIDATION and f.config.gates.code_review:
            return self._decision(_ASK_CODE_REVIEW_GATE, f, "code_review_gate")
        return self._after_code_validation(f)

    def _after_code_validation(self, f: Facts) -> Decision:
        if f.code_converged:
            if f.config.gates.final:
                return self._decision(_ASK_FINAL_GATE, f, "final_gate")
            return self._decision(m.COMPLETE, f, "complete")
        if f.code_refinements_left > 0:
            return self._decision(_REFINE_CODE, f, "refine_code")
        return self._decision(m.ESCALATE, f, "code_limit", EscalationReason.CODE_REFINEMENT_LIMIT)
