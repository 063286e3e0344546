"""The 7 steps of the workflow, its agents, gates, prompt templates and machine states.

These are the domain's fixed vocabulary (described in docs/workflow.md); every other module
refers to them. Adding a gate: its ``Gate`` and ``MachineState`` members here (with its
phase in ``phase_of_state``), its switch in ``Gates`` (state/config.py, named like the
gate), and its edges in the machine's rule table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class Step(IntEnum):
    """The seven workflow steps."""

    INITIAL_PLANNING = 1
    PLAN_VALIDATION = 2
    PLAN_REVISION = 3
    IMPLEMENTATION = 4
    CODE_VALIDATION = 5
    CODE_REFINEMENT = 6
    CONVERGENCE_VALIDATION = 7


class Agent(StrEnum):
    """The agents the orchestrator can invoke (the human answers at gates)."""

    PLANNER = "planner"
    VALIDATOR = "validator"
    PROGRAMMER = "programmer"
    HUMAN = "human"


class Gate(StrEnum):
    """Human checkpoints."""

    PLAN = "plan"
    CODE_REVIEW = "code_review"
    FINAL = "final"
    ESCALATION = "escalation"


class MachineState(StrEnum):
    """States of the shared workflow state machine."""

    NEW = "new"
    INITIAL_PLANNING = "initial_planning"
    PLAN_VALIDATION = "plan_validation"
    PLAN_REVISION = "plan_revision"
    IMPLEMENTATION = "implementation"
    CODE_VALIDATION = "code_validation"
    CODE_REFINEMENT = "code_refinement"
    CONVERGENCE_VALIDATION = "convergence_validation"
    AWAITING_PLAN_APPROVAL = "awaiting_plan_approval"
    AWAITING_CODE_REVIEW = "awaiting_code_review"
    AWAITING_FINAL_APPROVAL = "awaiting_final_approval"
    ESCALATED = "escalated"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"


class WorkflowStatus(StrEnum):
    """What a workflow is doing, as a user sees it."""

    RUNNING = "running"
    AWAITING_HUMAN = "awaiting_human"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepSpec:
    """What the workflow fixes about one step: its phase, agent, templates and state."""

    step: Step
    name: str
    phase: int
    agent: Agent
    templates: tuple[str, ...]
    state: MachineState


STEP_SPECS: dict[Step, StepSpec] = {
    spec.step: spec
    for spec in (
        StepSpec(
            Step.INITIAL_PLANNING,
            "initial planning",
            1,
            Agent.PLANNER,
            ("step1_initial_planner",),
            MachineState.INITIAL_PLANNING,
        ),
        StepSpec(
            Step.PLAN_VALIDATION,
            "plan validation",
            1,
            Agent.VALIDATOR,
            ("step2_plan_validator",),
            MachineState.PLAN_VALIDATION,
        ),
        StepSpec(
            Step.PLAN_REVISION,
            "plan revision",
            1,
            Agent.PLANNER,
            ("step3_revision_planner",),
            MachineState.PLAN_REVISION,
        ),
        StepSpec(
            Step.IMPLEMENTATION,
            "implementation",
            2,
            Agent.PROGRAMMER,
            ("step4_programmer",),
            MachineState.IMPLEMENTATION,
        ),
        StepSpec(
            Step.CODE_VALIDATION,
            "code validation",
            2,
            Agent.VALIDATOR,
            ("step5a_alignment_validator", "step5b_standardization_validator"),
            MachineState.CODE_VALIDATION,
        ),
        StepSpec(
            Step.CODE_REFINEMENT,
            "code refinement",
            2,
            Agent.PROGRAMMER,
            ("step6_code_refinement",),
            MachineState.CODE_REFINEMENT,
        ),
        StepSpec(
            Step.CONVERGENCE_VALIDATION,
            "convergence validation",
            2,
            Agent.VALIDATOR,
            ("step5a_alignment_validator", "step5b_standardization_validator"),
            MachineState.CONVERGENCE_VALIDATION,
        ),
    )
}

STEP_OF_STATE: dict[MachineState, Step] = {spec.state: spec.step for spec in STEP_SPECS.values()}

GATE_OF_STATE: dict[MachineState, Gate] = {
    MachineState.AWAITING_PLAN_APPROVAL: Gate.PLAN,
    MachineState.AWAITING_CODE_REVIEW: Gate.CODE_REVIEW,
    MachineState.AWAITING_FINAL_APPROVAL: Gate.FINAL,
    MachineState.ESCALATED: Gate.ESCALATION,
}
STATE_OF_GATE: dict[Gate, MachineState] = {gate: st for st, gate in GATE_OF_STATE.items()}

TERMINAL_STATES: frozenset[MachineState] = frozenset(
    {MachineState.COMPLETED, MachineState.REJECTED, MachineState.FAILED}
)

ALL_TEMPLATES: frozenset[str] = frozenset(
    name for spec in STEP_SPECS.values() for name in spec.templates
)


def _status(machine_state: MachineState) -> WorkflowStatus:
    if machine_state in GATE_OF_STATE:
        return WorkflowStatus.AWAITING_HUMAN
    if machine_state is MachineState.COMPLETED:
        return WorkflowStatus.COMPLETED
    if machine_state is MachineState.REJECTED:
        return WorkflowStatus.REJECTED
    if machine_state is MachineState.FAILED:
        return WorkflowStatus.FAILED
    return WorkflowStatus.RUNNING


# A table: read after every decision, and Enum attribute lookups are slow on Python 3.11.
_STATUS_OF = {st: _status(st) for st in MachineState}


def status_of(machine_state: MachineState) -> WorkflowStatus:
    """The user-facing status of a machine state."""
    return _STATUS_OF[machine_state]


def phase_of_state(machine_state: MachineState) -> int | None:
    """The phase a machine state belongs to, or None when it can occur in either."""
    step = STEP_OF_STATE.get(machine_state)
    if step is not None:
        return STEP_SPECS[step].phase
    if machine_state in (MachineState.NEW, MachineState.AWAITING_PLAN_APPROVAL):
        return 1
    if machine_state in (MachineState.AWAITING_CODE_REVIEW, MachineState.AWAITING_FINAL_APPROVAL):
        return 2
    return None
