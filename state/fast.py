"""Enum members read on every decision, bound once as module constants.

On Python 3.11 each ``Enum.MEMBER`` lookup goes through ``EnumType.__getattr__`` (about
90 ns, ten times a global read), and the decision hot path reads a few dozen per decision.
The modules on that path import the members from here, under one naming scheme:
``<ENUM>_<MEMBER>``, the enum named as below. Code off the hot path writes
``Enum.MEMBER`` as usual.

======================  ===============
enum                    prefix
======================  ===============
``Step``                ``STEP_``
``StepStatus``          ``STEP_STATUS_``
``MachineState``        ``STATE_``
``HumanAnswerKind``     ``ANSWER_``
``ActionKind``          ``ACTION_``
``DecisionSource``      ``SOURCE_``
``Verdict``             ``VERDICT_``
``ToolStatus``          ``TOOL_``
======================  ===============
"""

from __future__ import annotations

from typing import Final

from state.decision import ActionKind, DecisionSource
from state.reports import ToolStatus, Verdict
from state.steps import MachineState, Step
from state.workflow import HumanAnswerKind, StepStatus

STEP_PLAN_VALIDATION: Final = Step.PLAN_VALIDATION
STEP_PLAN_REVISION: Final = Step.PLAN_REVISION
STEP_IMPLEMENTATION: Final = Step.IMPLEMENTATION
STEP_CODE_REFINEMENT: Final = Step.CODE_REFINEMENT

STEP_STATUS_RUNNING: Final = StepStatus.RUNNING
STEP_STATUS_COMPLETED: Final = StepStatus.COMPLETED
STEP_STATUS_FAILED: Final = StepStatus.FAILED

STATE_ESCALATED: Final = MachineState.ESCALATED

ANSWER_REJECT: Final = HumanAnswerKind.REJECT
ANSWER_REQUEST_CHANGES: Final = HumanAnswerKind.REQUEST_CHANGES
ANSWER_ACCEPT: Final = HumanAnswerKind.ACCEPT

ACTION_INVOKE_AGENT: Final = ActionKind.INVOKE_AGENT
ACTION_REQUEST_APPROVAL: Final = ActionKind.REQUEST_APPROVAL
ACTION_TRANSITION_PHASE: Final = ActionKind.TRANSITION_PHASE
ACTION_RETRY_STEP: Final = ActionKind.RETRY_STEP

SOURCE_PROGRAMMATIC: Final = DecisionSource.PROGRAMMATIC
SOURCE_HUMAN: Final = DecisionSource.HUMAN

VERDICT_PASS: Final = Verdict.PASS
VERDICT_FAIL: Final = Verdict.FAIL

TOOL_PASSED: Final = ToolStatus.PASSED
TOOL_CRASHED: Final = ToolStatus.CRASHED
