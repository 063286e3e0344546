"""Human-readable summaries of a workflow: scores beside thresholds, timelines, verdicts."""

from __future__ import annotations

from typing import Any

from orchestrator.deciding.facts import code_issue_counts, code_shortfalls, plan_shortfalls
from state.config import WorkflowConfig
from state.decision import Decision
from state.reports import CodeValidationReport, PlanValidationReport
from state.workflow import StepRecord, StepStatus, WorkflowState


def _v(value: float | None) -> str:
    return "missing" if value is None else f"{value:g}"


def _verdict(shortfalls: tuple[str, ...]) -> str:
    return "not converged (missed: " + ", ".join(shortfalls) + ")" if shortfalls else "converged"


def scores_line(rec: StepRecord, config: WorkflowConfig) -> str:
    """A validation step's scores beside their thresholds and its convergence verdict."""
    res = rec.result
    if isinstance(res, PlanValidationReport):
        t = config.plan_thresholds
        verdict = _verdict(plan_shortfalls(res, t))
        return (
            f"alignment {_v(res.alignment_score)}/{t.alignment:g}, "
            f"standardization {_v(res.standardization_score)}/{t.standardization:g}, "
            f"compatibility {_v(res.compatibility_score)}/{t.compatibility:g}, "
            f"critical {res.critical_issues if res.critical_issues is not None else 'missing'}"
            f"/{t.max_critical_issues} -> {verdict}"
        )
    if isinstance(res, CodeValidationReport):
        ct = config.code_thresholds
        critical, minor = code_issue_counts(res)
        tools = ", ".join(f"{t.name} {t.status.value}" for t in res.tools) or (
            f"tools skipped ({res.tools_skipped_reason})"
        )
        cov = "n/a" if res.line_coverage is None else f"{res.line_coverage:.0f}%"
        verdict = _verdict(code_shortfalls(res, ct))
        return (
            f"review {_v(res.review.overall_score)}/{ct.review_score_for_tools:g}, {tools}, "
            f"coverage {cov}/{ct.min_line_coverage:g}%, critical {critical}, minor {minor}"
            f"/{ct.max_minor_issues}, standardization {res.standardization.status} -> {verdict}"
        )
    return ""


def validation_rounds(state: WorkflowState, config: WorkflowConfig) -> list[dict[str, Any]]:
    """Every validation round with its scores, thresholds and convergence verdict."""
    rounds: list[dict[str, Any]] = []
    for rec in state.history:
        if rec.status is not StepStatus.COMPLETED:
            continue
        res = rec.result
        if isinstance(res, PlanValidationReport):
            t = config.plan_thresholds
            missed = plan_shortfalls(res, t)
            rounds.append(
                {
                    "step": int(rec.step),
                    "attempt": rec.attempt,
                    "kind": "plan",
                    "scores": {
                        "alignment": res.alignment_score,
                        "standardization": res.standardization_score,
                        "compatibility": res.compatibility_score,
                        "critical_issues": res.critical_issues,
                    },
                    "thresholds": {
                        "alignment": t.alignment,
                        "standardization": t.standardization,
                        "compatibility": t.compatibility,
                        "critical_issues": t.max_critical_issues,
                    },
                    "converged": not missed,
                    "missed": list(missed),
                    "summary": scores_line(rec, config),
                }
            )
        elif isinstance(res, CodeValidationReport):
            ct = config.code_thresholds
            critical, minor = code_issue_counts(res)
            missed = code_shortfalls(res, ct)
            rounds.append(
                {
                    "step": int(rec.step),
                    "attempt": rec.attempt,
                    "kind": "code",
                    "scores": {
                        "overall": res.review.overall_score,
                        "coverage": res.line_coverage,
                        "critical_issues": critical,
                        "minor_issues": minor,
                        "standardization": res.standardization.status,
                        "tools": {t.name: t.status.value for t in res.tools},
                    },
                    "thresholds": {
                        "overall_for_tools": ct.review_score_for_tools,
                        "coverage": ct.min_line_coverage,
                        "critical_issues": ct.max_critical_issues,
                        "minor_issues": ct.max_minor_issues,
                    },
                    "converged": not missed,
                    "missed": list(missed),
                    "summary": scores_line(rec, config),
                }
            )
    return rounds


def describe_decision(decision: Decision) -> str:
    """One line naming what a decision does (``inspect``, ``decide``, the console)."""
    parts = [decision.action.value]
    if decision.step is not None:
        parts.append(f"step {int(decision.step)}")
    if decision.agent is not None:
        parts.append(f"agent {decision.agent.value}")
    if decision.templates:
        parts.append("template " + "+".join(decision.templates))
    if decision.gate is not None:
        parts.append(f"gate {decision.gate.value}")
    if decision.recovery_strategy is not None:
        parts.append(f"strategy {decision.recovery_strategy.value}")
    if decision.escalation_reason is not None:
        parts.append(f"reason {decision.escalation_reason.value}")
    if decision.confidence is not None:
        parts.append(f"confidence {decision.confidence:.2f}")
    return ", ".join(parts)


def repository_summary(config: WorkflowConfig) -> dict[str, Any]:
    """The ``--repo`` workflow's repository, base, branch and worktree ({} for a plain one)."""
    repo = config.repository
    if not repo.enabled:
        return {}
    return {
        "repository": repo.path,
        "base": repo.base,
        "base_commit": repo.base_commit,
        "branch": repo.branch,
        "worktree": repo.worktree,
    }


def repository_line(config: WorkflowConfig) -> str | None:
    """One line naming the branch and worktree, and how to look at the change."""
    repo = config.repository
    if not repo.enabled:
        return None
    return (
        f"branch {repo.branch} (from {repo.base}) in worktree {repo.worktree}; "
        f"see it with: git -C {repo.path} diff {repo.base_commit}...{repo.branch}"
    )
