"""The workflow's rules, written once: the guarded edges of the state machine.

Each ``TransitionSpec`` is one edge: a trigger from a source state to a destination, the
guards that allow it and, for a *rule*, why the rules take it (and, for an escalation, which
limit was hit). The edges out of each source state are listed in rule priority: the
programmatic decision is the first rule edge whose guards pass (as ``transitions`` tries the
conditional transitions of an event in order). An edge without a rationale is *offered only*:
it makes an action legal, for an LLM, a script or a human to choose, but the rules never take
it (escalating is always allowed from a working state; guidance at an escalation may send the
work to the planner or the programmer).

Reading the same table another way gives the legal actions: every trigger with an edge whose
guards pass (see ``WorkflowMachine.legal_actions``).

Adding a gate: its state and phase in ``state/steps.py``, its switch in ``Gates``
(``state/config.py``), and its edges here (``g.gate_on(Gate.X)`` reads the switch by name).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.deciding import guards as g
from orchestrator.deciding.guards import Guard
from state.decision import EscalationReason
from state.steps import TERMINAL_STATES, Gate, MachineState, Step

S = MachineState
R = EscalationReason


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """One edge of the machine: trigger, source, destination, guards and, for a rule, why.

    Attributes:
        rationale: why the rules take this edge (the recorded decision's rationale); None
            for an edge that is offered only (legal, never chosen by the rules).
        reason: for a rule edge into the escalation gate, which limit it enforces.
        continuation: an escalated workflow resuming where it stopped.
        asks_again: an answered escalation asks again at the gate it interrupted (the
            human's change requests travel with it).
    """

    trigger: str
    source: MachineState
    dest: MachineState
    guards: tuple[Guard, ...] = ()
    continuation: bool = False
    rationale: str | None = None
    reason: EscalationReason | None = None
    asks_again: bool = False

    @property
    def is_rule(self) -> bool:
        """Whether the rules may choose this edge (it is not offered only)."""
        return self.rationale is not None

    @property
    def keeps_changes(self) -> bool:
        """Whether a human's change requests travel with this edge's decision.

        They do when the edge starts a step (the agent is given them), and when an
        escalation is answered by asking again at the gate it interrupted.
        """
        return self.asks_again or self.dest in _STEP_STATES


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
_STEP_STATES = frozenset(WORKING_STATES)
_GO = (g.step_ok, g.decisions_left)
_PLAN_GATE = g.gate_on(Gate.PLAN)
_NO_PLAN_GATE = g.gate_off(Gate.PLAN)
_CODE_REVIEW_GATE = g.gate_on(Gate.CODE_REVIEW)
_NO_CODE_REVIEW_GATE = g.gate_off(Gate.CODE_REVIEW)
_FINAL_GATE = g.gate_on(Gate.FINAL)
_NO_FINAL_GATE = g.gate_off(Gate.FINAL)

# Rationales of the rules that close the code loop, from a validation or the code-review gate.
_FINAL_GATE_WHY = "the code converged: ask for final approval"
_COMPLETE_WHY = "the code converged and the final gate is off: complete"
_REFINE_WHY = "the code has not converged and refinements are left: refine it"
_CODE_LIMIT_WHY = "the code has not converged after the maximum number of refinements"
_CODE_CHANGES_WHY = "a human requested changes to the code: refine it"
_REJECTED_WHY = "a human rejected the work"


def _t(
    trigger: str,
    source: MachineState,
    dest: MachineState,
    guards: tuple[Guard, ...],
    why: str | None,
    reason: EscalationReason | None = None,
) -> TransitionSpec:
    return TransitionSpec(trigger, source, dest, guards, rationale=why, reason=reason)


def _code_verdict(source: MachineState, pre: tuple[Guard, ...]) -> list[TransitionSpec]:
    """After the code was judged (a validation, or an approved code review): the code loop."""
    return [
        _t(
            REQUEST_APPROVAL[S.AWAITING_FINAL_APPROVAL],
            source,
            S.AWAITING_FINAL_APPROVAL,
            (*pre, g.code_converged, _FINAL_GATE),
            _FINAL_GATE_WHY,
        ),
        _t(COMPLETE, source, S.COMPLETED, (*pre, g.code_converged, _NO_FINAL_GATE), _COMPLETE_WHY),
        _t(
            INVOKE[Step.CODE_REFINEMENT],
            source,
            S.CODE_REFINEMENT,
            (*pre, g.code_not_converged, g.code_refinements_left),
            _REFINE_WHY,
        ),
        _t(
            ESCALATE,
            source,
            S.ESCALATED,
            (*pre, g.code_not_converged, g.no_code_refinements_left),
            _CODE_LIMIT_WHY,
            R.CODE_REFINEMENT_LIMIT,
        ),
    ]


def _step_done(st: MachineState) -> list[TransitionSpec]:
    """The rules after the step of working state ``st`` completed."""
    t = _t
    if st in (S.INITIAL_PLANNING, S.PLAN_REVISION):
        return [
            t(
                INVOKE[Step.PLAN_VALIDATION],
                st,
                S.PLAN_VALIDATION,
                _GO,
                "a plan was written: validate it",
            )
        ]
    if st is S.PLAN_VALIDATION:
        return [
            t(
                REQUEST_APPROVAL[S.AWAITING_PLAN_APPROVAL],
                st,
                S.AWAITING_PLAN_APPROVAL,
                (*_GO, g.plan_converged, _PLAN_GATE),
                "the plan converged: ask for approval at the plan gate",
            ),
            t(
                TRANSITION_PHASE,
                st,
                S.IMPLEMENTATION,
                (*_GO, g.plan_converged, _NO_PLAN_GATE),
                "the plan converged and the plan gate is off: start phase 2",
            ),
            t(
                INVOKE[Step.PLAN_REVISION],
                st,
                S.PLAN_REVISION,
                (*_GO, g.plan_not_converged, g.plan_revisions_left),
                "the plan has not converged and revisions are left: revise it",
            ),
            t(
                ESCALATE,
                st,
                S.ESCALATED,
                (g.step_ok, g.plan_not_converged, g.no_plan_revisions_left),
                "the plan has not converged after the maximum number of revisions",
                R.PLAN_REVISION_LIMIT,
            ),
        ]
    if st is S.IMPLEMENTATION:
        return [
            t(
                INVOKE[Step.CODE_VALIDATION],
                st,
                S.CODE_VALIDATION,
                _GO,
                "code was written: validate it",
            )
        ]
    if st is S.CODE_REFINEMENT:
        return [
            t(
                INVOKE[Step.CONVERGENCE_VALIDATION],
                st,
                S.CONVERGENCE_VALIDATION,
                _GO,
                "the code was refined: validate it again",
            )
        ]
    if st is S.CODE_VALIDATION:
        return [
            t(
                REQUEST_APPROVAL[S.AWAITING_CODE_REVIEW],
                st,
                S.AWAITING_CODE_REVIEW,
                (*_GO, _CODE_REVIEW_GATE),
                "first code validation done: ask for a code review",
            ),
            *_code_verdict(st, (*_GO, _NO_CODE_REVIEW_GATE)),
        ]
    assert st is S.CONVERGENCE_VALIDATION
    return _code_verdict(st, _GO)


def _working_rules(st: MachineState) -> list[TransitionSpec]:
    """The rules out of ``st`` (a working state, or NEW), in priority order."""
    t = _t
    edges = [
        t(
            ESCALATE,
            st,
            S.ESCALATED,
            (g.no_decisions_left,),
            "the workflow reached its maximum number of decisions",
            R.DECISION_LIMIT,
        )
    ]
    if st is S.NEW:
        edges.append(
            t(
                INVOKE[Step.INITIAL_PLANNING],
                st,
                S.INITIAL_PLANNING,
                (g.decisions_left,),
                "new workflow: write the first plan",
            )
        )
        return edges
    edges += [
        t(
            FAIL,
            st,
            S.FAILED,
            (g.cannot_retry,),
            "the step failed with an error retrying cannot fix",
        ),
        # A step refused its LLM calls is neither retried nor failed: more budget is a
        # human's call. A human who goes on grants fresh budget (``can_retry`` then passes).
        t(
            ESCALATE,
            st,
            S.ESCALATED,
            (g.llm_budget_spent,),
            "the workflow's LLM budget is spent, so the step cannot run: ask a human",
            R.LLM_BUDGET_EXHAUSTED,
        ),
        t(
            RETRY,
            st,
            st,
            (g.llm_budget_granted, g.decisions_left),
            "a human let the workflow go on with fresh LLM budget: retry the step",
        ),
        t(
            RETRY,
            st,
            st,
            (g.can_retry,),
            "the step failed or was interrupted and retries are left: retry it",
        ),
        t(
            ESCALATE,
            st,
            S.ESCALATED,
            (g.retries_spent,),
            "the step failed and its retry budget is spent: ask a human",
            R.STEP_RETRIES_EXHAUSTED,
        ),
        *_step_done(st),
    ]
    return edges


def _gate_rules() -> list[TransitionSpec]:
    """The rules at the plan, code-review and final gates, once a human answered."""
    t = _t
    plan, review, final = (
        S.AWAITING_PLAN_APPROVAL,
        S.AWAITING_CODE_REVIEW,
        S.AWAITING_FINAL_APPROVAL,
    )
    refine = INVOKE[Step.CODE_REFINEMENT]
    return [
        t(REJECT, plan, S.REJECTED, (g.human_rejected,), _REJECTED_WHY),
        t(
            TRANSITION_PHASE,
            plan,
            S.IMPLEMENTATION,
            (g.human_approved,),
            "a human approved the plan: start phase 2",
        ),
        t(
            INVOKE[Step.PLAN_REVISION],
            plan,
            S.PLAN_REVISION,
            (g.human_requested_changes,),
            "a human requested changes to the plan: revise it",
        ),
        t(REJECT, review, S.REJECTED, (g.human_rejected,), _REJECTED_WHY),
        t(refine, review, S.CODE_REFINEMENT, (g.human_requested_changes,), _CODE_CHANGES_WHY),
        *_code_verdict(review, (g.human_approved,)),
        t(REJECT, final, S.REJECTED, (g.human_rejected,), _REJECTED_WHY),
        t(COMPLETE, final, S.COMPLETED, (g.human_approved,), "a human approved: complete"),
        t(refine, final, S.CODE_REFINEMENT, (g.human_requested_changes,), _CODE_CHANGES_WHY),
    ]


def _escalation_rules(working: list[TransitionSpec]) -> list[TransitionSpec]:
    """Out of the escalation gate once a human answered."""
    t = _t
    esc = S.ESCALATED
    edges = [t(REJECT, esc, S.REJECTED, (g.human_rejected,), _REJECTED_WHY)]
    # A human who approves or gives guidance continues the workflow where it stopped, with
    # fresh budgets: the rules out of the interrupted state apply again from here. (With
    # fresh budgets no limit can be hit yet, and an answered escalation is never escalated
    # again, so the rules' own escalations are not mirrored.)
    for gate_state, trigger in REQUEST_APPROVAL.items():
        edges.append(
            TransitionSpec(
                trigger,
                esc,
                gate_state,
                (g.human_continues, g.origin_is(gate_state)),
                continuation=True,
                rationale="a human answered the escalation: ask again at the interrupted gate",
                asks_again=True,
            )
        )
    for spec in working:
        if spec.trigger != ESCALATE:
            edges.append(
                TransitionSpec(
                    spec.trigger,
                    esc,
                    spec.dest,
                    (g.human_continues, g.origin_is(spec.source), *spec.guards),
                    continuation=True,
                    rationale=spec.rationale,
                    reason=spec.reason,
                )
            )
    # Guidance may instead go to the planner or the programmer (offered, not chosen).
    for trigger, dest, phase, wrote in (
        (INVOKE[Step.PLAN_REVISION], S.PLAN_REVISION, 1, g.has_plan),
        (INVOKE[Step.CODE_REFINEMENT], S.CODE_REFINEMENT, 2, g.has_code),
    ):
        edges.append(
            TransitionSpec(
                trigger,
                esc,
                dest,
                (g.human_requested_changes, g.origin_in_phase(phase), wrote),
                continuation=True,
            )
        )
    # A human may accept the work as it stands, overriding convergence. Only the human's
    # accept answer opens these edges, so no LLM can take them on its own.
    accepted = (g.human_accepted,)
    edges += [
        t(
            TRANSITION_PHASE,
            esc,
            S.IMPLEMENTATION,
            (*accepted, g.origin_in_phase(1), g.has_plan),
            "a human accepted the plan as it stands, overriding convergence: start phase 2",
        ),
        t(
            REQUEST_APPROVAL[S.AWAITING_FINAL_APPROVAL],
            esc,
            S.AWAITING_FINAL_APPROVAL,
            (*accepted, g.origin_in_phase(2), g.has_code, _FINAL_GATE),
            "a human accepted the code as it stands, overriding convergence: ask for final "
            "approval",
        ),
        t(
            COMPLETE,
            esc,
            S.COMPLETED,
            (*accepted, g.origin_in_phase(2), g.has_code, _NO_FINAL_GATE),
            "a human accepted the code as it stands, overriding convergence, and the final "
            "gate is off: complete",
        ),
    ]
    return edges


def build_transition_table() -> tuple[TransitionSpec, ...]:
    """Every edge of the workflow machine, each source's edges in rule priority."""
    working = [spec for st in (S.NEW, *WORKING_STATES) for spec in _working_rules(st)]
    edges = [*working, *_gate_rules(), *_escalation_rules(working)]
    # Escalating is always allowed from a state a human has not just answered: an LLM or a
    # script that is unsure can hand the workflow to a human. A human's answer at the plan
    # or final gate, or at an escalation, is carried out, never bounced back to a human (an
    # LLM that always escalates would loop with a human who always approves); the rules
    # escalate at the code-review gate when an approved, unconverged review has no
    # refinement left, so escalating stays open there.
    answered_gates = (S.AWAITING_PLAN_APPROVAL, S.AWAITING_FINAL_APPROVAL, S.ESCALATED)
    edges += [
        TransitionSpec(ESCALATE, st, S.ESCALATED)
        for st in MachineState
        if st not in TERMINAL_STATES and st not in answered_gates
    ]
    return tuple(edges)
