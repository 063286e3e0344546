"""Human-readable summaries of a workflow: scores beside thresholds, timelines, verdicts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator.deciding.facts import (
    code_issue_counts,
    code_shortfalls,
    latest_code_report,
    plan_shortfalls,
)
from orchestrator.repository import git
from state.config import WorkflowConfig
from state.decision import Decision
from state.errors import ConfigError
from state.reports import CodeChange, CodeValidationReport, LineHits, PlanValidationReport
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


MAX_DIFF_CHARS = 20_000
"""How much of a diff ``change_view`` shows before it cuts with a note."""
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(?P<start>\d+)(?:,\d+)? @@")


def changed_lines(diff: str) -> dict[str, list[int]]:
    """The lines each file's new version adds or changes in a unified diff (new numbering)."""
    found: dict[str, list[int]] = {}
    path: str | None = None
    line = 0
    for text in diff.splitlines():
        if text.startswith("+++ "):
            name = text[4:].strip()
            path = None if name == "/dev/null" else name.removeprefix("b/")
            continue
        hunk = _HUNK.match(text)
        if hunk is not None:
            line = int(hunk.group("start"))
            continue
        if path is None or text.startswith(("--- ", "diff ", "index ")):
            continue
        if text.startswith("+"):
            found.setdefault(path, []).append(line)
            line += 1
        elif text.startswith(" "):
            line += 1
    return found


def _hits_for(path: str, hits: dict[str, LineHits]) -> LineHits | None:
    """A file's coverage entry, also when coverage named it with a sandbox prefix."""
    if path in hits:
        return hits[path]
    for name, entry in hits.items():
        if name.endswith("/" + path):
            return entry
    return None


def changed_line_coverage(
    changed: dict[str, list[int]], report: CodeValidationReport | None
) -> dict[str, Any]:
    """Which changed lines the tests ran: per file covered / executable, and the missed ones."""
    if report is None or report.line_hits is None:
        return {"measured": False, "note": "not measured"}
    files: dict[str, Any] = {}
    covered_total = executable_total = 0
    for path, lines in changed.items():
        entry = _hits_for(path, report.line_hits)
        if entry is None:
            continue  # not measured code (a test, a doc): nothing to cover
        ran, missed = set(entry.executed), set(entry.missing)
        covered = [n for n in lines if n in ran]
        uncovered = [n for n in lines if n in missed]
        if covered or uncovered:
            files[path] = {"covered": len(covered), "executable": len(covered) + len(uncovered)}
            files[path]["uncovered_lines"] = uncovered
            covered_total += len(covered)
            executable_total += len(covered) + len(uncovered)
    percent = 100.0 * covered_total / executable_total if executable_total else None
    return {
        "measured": True,
        "covered": covered_total,
        "executable": executable_total,
        "percent": round(percent, 1) if percent is not None else None,
        "files": files,
    }


def round_commits(state: WorkflowState, config: WorkflowConfig) -> dict[int, tuple[str, str]]:
    """Per index into ``state.history``: the (older, newer) commits of that code round.

    Only the completed code rounds of a ``--repo`` workflow that recorded a commit; ``older``
    is the commit of the code round before it, or the base for the first, so the diff
    between them is what that round changed.
    """
    repo = config.repository
    if not repo.enabled or repo.base_commit is None:
        return {}
    rounds: dict[int, tuple[str, str]] = {}
    last = repo.base_commit
    for index, rec in enumerate(state.history):
        result = rec.result
        if rec.status is StepStatus.COMPLETED and isinstance(result, CodeChange) and result.commit:
            rounds[index] = (last, result.commit)
            last = result.commit
    return rounds


def round_diff(
    worktree: Path, older: str, newer: str, *, max_diff_chars: int = MAX_DIFF_CHARS
) -> dict[str, Any]:
    """What one code round changed: the stat and the diff (cut with a note), or the error."""
    try:
        stat = git.diff_between(worktree, older, newer, stat=True)
        diff = git.diff_between(worktree, older, newer)
    except (git.GitError, ConfigError) as exc:
        return {"from": older, "to": newer, "error": str(exc)}
    view: dict[str, Any] = {
        "from": older,
        "to": newer,
        "stat": stat,
        "diff": diff[:max_diff_chars],
        "diff_chars": len(diff),
    }
    if len(diff) > max_diff_chars:
        view["truncated"] = (
            f"diff cut at {max_diff_chars:,} of {len(diff):,} characters; see it all with "
            f"git -C {worktree} diff {older[:12]} {newer[:12]}"
        )
    return view


def change_view(
    state: WorkflowState, config: WorkflowConfig, *, max_diff_chars: int = MAX_DIFF_CHARS
) -> dict[str, Any]:
    """What a human approves: the change against the base, the tools, changed-line coverage.

    For a ``--repo`` workflow: ``git diff --stat`` and the diff of the branch against its
    base (cut after ``max_diff_chars`` with a note). For a plain directory, which has no
    base, the files the programmer wrote. Never raises: a git failure is reported in
    ``error``.
    """
    report = latest_code_report(state.history)
    tools = [
        {"name": t.name, "status": t.status.value, "exit_code": t.exit_code}
        for t in (report.tools if report is not None else ())
    ]
    view: dict[str, Any] = {"tools": tools}
    if report is not None and report.tools_skipped_reason:
        view["tools_skipped_reason"] = report.tools_skipped_reason
    repo = config.repository
    if not repo.enabled or repo.worktree is None or repo.base_commit is None:
        files: dict[str, None] = {}
        for rec in state.history:
            if rec.status is StepStatus.COMPLETED and isinstance(rec.result, CodeChange):
                files.update(dict.fromkeys(rec.result.files))
        view |= {
            "diff": None,
            "files": list(files),
            "note": "a plain-directory workflow has no base to diff against (run with --repo)",
            "coverage": {"measured": False, "note": "not measured"},
        }
        return view
    try:
        worktree = Path(repo.worktree)
        stat = git.diff_against(worktree, repo.base_commit, stat=True)
        diff = git.diff_against(worktree, repo.base_commit)
    except (git.GitError, ConfigError) as exc:
        return view | {"error": str(exc), "coverage": {"measured": False, "note": "not measured"}}
    shown = diff[:max_diff_chars]
    view |= {
        "base": repo.base,
        "base_commit": repo.base_commit,
        "branch": repo.branch,
        "stat": stat,
        "diff": shown,
        "diff_chars": len(diff),
        "coverage": changed_line_coverage(changed_lines(diff), report),
    }
    if len(diff) > len(shown):
        view["truncated"] = (
            f"[diff cut at {len(shown)} of {len(diff)} characters; see all of it with: "
            f"git -C {repo.worktree} diff {repo.base_commit}...HEAD]"
        )
    return view


def change_text(state: WorkflowState, config: WorkflowConfig, *, max_diff_chars: int) -> str:
    """``change_view`` as text for a terminal: the stat, the diff, the tools, the coverage."""
    view = change_view(state, config, max_diff_chars=max_diff_chars)
    parts: list[str] = []
    if view.get("error"):
        parts.append(f"the change could not be shown: {view['error']}")
    elif view.get("diff") is None:
        parts.append(f"files written: {', '.join(view.get('files', [])) or 'none'}")
        parts.append(str(view.get("note", "")))
    else:
        parts.append(f"change on {view['branch']} against {view['base']}:")
        parts.append(view["stat"].rstrip() or "(no change)")
        parts.append(view["diff"].rstrip())
        if "truncated" in view:
            parts.append(view["truncated"])
    tools = view["tools"]
    if tools:
        parts.append("tools: " + ", ".join(f"{t['name']} {t['status']}" for t in tools))
    elif view.get("tools_skipped_reason"):
        parts.append(f"tools: not run ({view['tools_skipped_reason']})")
    cov = view["coverage"]
    if not cov.get("measured"):
        parts.append("coverage of the changed lines: not measured")
    elif cov["executable"] == 0:
        parts.append("coverage of the changed lines: no executable line changed")
    else:
        missed = "; ".join(
            f"{path}: {', '.join(map(str, f['uncovered_lines']))}"
            for path, f in cov["files"].items()
            if f["uncovered_lines"]
        )
        parts.append(
            f"coverage of the changed lines: {cov['covered']}/{cov['executable']} "
            f"({cov['percent']}%)" + (f"; not run: {missed}" if missed else "")
        )
    return "\n".join(parts)
