"""What an agent is given for a step: gathered from the workflow's history and decision."""

from __future__ import annotations

from pathlib import Path

from agents.base import StepContext
from state.check_settings import ValidationSetup
from state.config import WorkflowConfig
from state.decision import Decision
from state.reports import CodeValidationReport, PlanDraft, PlanValidationReport
from state.steps import Step
from state.workflow import StepStatus, WorkflowState


def latest_plan(state: WorkflowState) -> PlanDraft | None:
    """The latest plan written."""
    for rec in reversed(state.history):
        if rec.status is StepStatus.COMPLETED and isinstance(rec.result, PlanDraft):
            return rec.result
    return None


def build_step_context(
    state: WorkflowState, config: WorkflowConfig, decision: Decision
) -> StepContext:
    """The context for the step ``decision`` started (the running record at the tail)."""
    rec = state.history[-1]
    step = rec.step
    plan = latest_plan(state)
    plan_report: PlanValidationReport | None = None
    code_report: CodeValidationReport | None = None
    last_error: str | None = None
    for earlier in reversed(state.history[:-1]):
        if earlier.status is StepStatus.COMPLETED:
            res = earlier.result
            if plan_report is None and isinstance(res, PlanValidationReport):
                plan_report = res
            elif code_report is None and isinstance(res, CodeValidationReport):
                code_report = res
        elif last_error is None and earlier.step is step and earlier.error is not None:
            last_error = f"{earlier.error.type}: {earlier.error.message}"
    changes = rec.change_requests or _carried_changes(state, step)
    return StepContext(
        workflow_id=state.workflow_id,
        step=step,
        workspace=Path(state.workspace),
        requirements=state.requirements,
        attempt=rec.attempt,
        plan_markdown=plan.markdown if plan else None,
        plan_version=plan.version if plan else None,
        plan_report=plan_report,
        code_report=code_report,
        change_requests=changes,
        recovery_strategy=decision.recovery_strategy,
        last_error=last_error if rec.attempt > 1 else None,
        timeout_s=config.limits.step_timeout_s,
        plan_thresholds=config.plan_thresholds,
        code_thresholds=config.code_thresholds,
        sandbox=config.sandbox,
        validation=ValidationSetup(environment=config.environment, checks=config.checks),
    )


def _carried_changes(state: WorkflowState, step: Step) -> tuple[str, ...]:
    """A retry keeps the change requests its first attempt was given."""
    for rec in reversed(state.history[:-1]):
        if rec.step is not step:
            break
        if rec.change_requests:
            return rec.change_requests
    return ()
