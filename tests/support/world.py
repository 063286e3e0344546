"""A scripted world for end-to-end runs: plausible agent answers chosen by request purpose.

Plan and code reports come from queues (so a test says "bad, then good"); plans and code
are fixed, small and correct (the code passes compile, ruff and pytest with full coverage).
Every request is recorded, so tests can look at what each agent was told.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import Any

from orchestrator.llm.protocol import LLMRequest

from support.fake_openai import Content

PLAN_MD = """# Implementation Plan: tabular preprocessing

## Files to create
- `prep.py`: `fill_missing(rows, value)` replaces None cells.
- `test_prep.py`: tests for `fill_missing`.
"""

PREP = '''"""Tabular preprocessing."""


def fill_missing(rows, value):
    """Replace None cells with value."""
    return [[value if cell is None else cell for cell in row] for row in rows]
'''

TEST_PREP = """from prep import fill_missing


def test_fill_missing():
    assert fill_missing([[1, None], [None, 2]], 0) == [[1, 0], [0, 2]]
"""

GOOD_PLAN = {
    "alignment_score": 9.5,
    "standardization_score": 8.6,
    "compatibility_score": 9.0,
    "critical_issues": 0,
    "minor_issues": 0,
    "verdict": "PASS",
    "report": "Good.",
}
BAD_PLAN = {
    "alignment_score": 7.0,
    "standardization_score": 7.5,
    "compatibility_score": 8.0,
    "critical_issues": 1,
    "minor_issues": 2,
    "verdict": "FAIL",
    "report": "Missing validation of inputs.",
}
GOOD_REVIEW = {
    "overall_score": 9.0,
    "critical_issues": 0,
    "minor_issues": 0,
    "verdict": "PASS",
    "report": "Matches the plan.",
}
BAD_REVIEW = {
    "overall_score": 6.0,
    "critical_issues": 1,
    "minor_issues": 1,
    "verdict": "FAIL",
    "report": "Edge cases missing.",
}
GOOD_STANDARD = {
    "status": "PASSED",
    "critical_issues": 0,
    "minor_issues": 0,
    "report": "Conventions followed.",
}


class World:
    """Answers agent requests by purpose; reports are taken from queues."""

    def __init__(
        self,
        plan_reports: Iterable[dict[str, Any]] = (BAD_PLAN, GOOD_PLAN),
        reviews: Iterable[dict[str, Any]] = (BAD_REVIEW, GOOD_REVIEW),
        decisions: Iterable[dict[str, Any]] = (),
    ) -> None:
        self.plan_reports = deque(plan_reports)
        self.reviews = deque(reviews)
        self.decisions = deque(decisions)
        self.requests: list[LLMRequest] = []

    def prompts_for(self, purpose: str) -> list[str]:
        """The user messages sent for ``purpose``."""
        return [r.messages[-1].content for r in self.requests if r.purpose.startswith(purpose)]

    def __call__(self, request: LLMRequest) -> str | dict[str, Any]:
        self.requests.append(request)
        purpose = request.purpose.split(":")[0]
        if purpose in ("step1_initial_planner", "step3_revision_planner"):
            return PLAN_MD
        if purpose == "step2_plan_validator":
            return self._next(self.plan_reports, GOOD_PLAN)
        if purpose in ("step4_programmer", "step6_code_refinement"):
            return {
                "files": [
                    {"path": "prep.py", "content": PREP},
                    {"path": "test_prep.py", "content": TEST_PREP},
                ],
                "summary": "fill_missing with a test",
            }
        if purpose == "step5a_alignment_validator":
            return self._next(self.reviews, GOOD_REVIEW)
        if purpose == "step5b_standardization_validator":
            return GOOD_STANDARD
        if purpose == "decision":
            return self._next(
                self.decisions, {"action": "escalate", "rationale": "unsure", "confidence": 0.9}
            )
        raise AssertionError(f"the scripted world has no answer for purpose {purpose!r}")

    @staticmethod
    def _next(queue: deque[dict[str, Any]], default: dict[str, Any]) -> dict[str, Any]:
        return queue.popleft() if len(queue) > 1 else (queue[0] if queue else default)

    def http_responder(self, body: dict[str, Any]) -> Content:
        """The same answers for the loopback fake server, told apart by the asked schema."""
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
        props = set(schema.get("properties", {}))
        purpose = "step1_initial_planner"  # plans are asked as plain text
        for key, name in (
            ("alignment_score", "step2_plan_validator"),
            ("overall_score", "step5a_alignment_validator"),
            ("status", "step5b_standardization_validator"),
            ("files", "step4_programmer"),
            ("action", "decision"),
        ):
            if key in props:
                purpose = name
                break
        reply = self(LLMRequest(messages=(), purpose=purpose))
        return Content(reply if isinstance(reply, str) else json.dumps(reply))
