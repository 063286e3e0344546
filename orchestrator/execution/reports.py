"""Reading the reports a test run writes: pytest's junit XML and coverage.py's JSON.

A pass is never taken from an exit code alone: the junit report must say that tests ran
(``tests`` above zero, at least one not skipped) and its counts must agree with the test cases
it lists. Anything else is a failure with a reason a person can act on.
"""

from __future__ import annotations

import json

# The input is size-capped by the sandbox, and expat refuses entity expansion bombs.
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

from state.reports import LineHits


@dataclass(frozen=True, slots=True)
class JunitSummary:
    """What a junit report says about a test run.

    Attributes:
        tests: test cases run, as the report counts them.
        failures: failed test cases.
        errors: test cases that errored (in a fixture, at collection).
        skipped: skipped test cases.
        failed_names: up to ten of the failing or erroring test cases.
        messages: their failure messages (for the memory-limit check).
        started: when the test session started (the first suite's timestamp, seconds since
            the epoch); None when the report carries no readable timestamp.
    """

    tests: int
    failures: int
    errors: int
    skipped: int
    failed_names: tuple[str, ...]
    messages: tuple[str, ...]
    started: float | None = None

    @property
    def passed(self) -> int:
        """Test cases that passed."""
        return max(0, self.tests - self.failures - self.errors - self.skipped)

    def describe(self) -> str:
        """``5 tests ran: 4 passed, 1 failed (tests.test_a::test_x)``."""
        parts = [f"{self.passed} passed"]
        parts += [
            f"{count} {word}"
            for count, word in (
                (self.failures, "failed"),
                (self.errors, "errored"),
                (self.skipped, "skipped"),
            )
            if count
        ]
        names = f" ({', '.join(self.failed_names)})" if self.failed_names else ""
        counted = f"{self.tests} test" if self.tests == 1 else f"{self.tests} tests"
        return f"{counted} ran: {', '.join(parts)}{names}"


class ReportError(ValueError):
    """A report is missing, unreadable or contradicts itself; the message says how."""


def read_junit(data: bytes) -> JunitSummary:
    """Summarise a junit XML report, checking that its counts agree with its test cases.

    Raises:
        ReportError: the report is empty, not junit XML, or inconsistent.
    """
    if not data.strip():
        raise ReportError("the test run wrote no junit report")
    try:
        root = ET.fromstring(data)  # noqa: S314 -- see the import
    except ET.ParseError as exc:
        raise ReportError(f"the junit report is not valid XML ({exc})") from exc
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if root.tag not in ("testsuite", "testsuites") or not suites:
        raise ReportError(f"the junit report has no test suite (root element <{root.tag}>)")
    counted = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    cases = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    messages: list[str] = []
    for suite in suites:
        for key in counted:
            try:
                counted[key] += int(suite.get(key, "0"))
            except ValueError as exc:
                raise ReportError(f"the junit report's {key} count is not a number") from exc
        for case in suite.iter("testcase"):
            cases["tests"] += 1
            # a test that fails and then errors in teardown carries both elements
            for outcome in (c for c in case if c.tag in ("failure", "error", "skipped")):
                key = {"failure": "failures", "error": "errors", "skipped": "skipped"}[outcome.tag]
                cases[key] += 1
                if key == "skipped":
                    continue
                name = "::".join(p for p in (case.get("classname"), case.get("name")) if p)
                if len(failed) < 10 and name not in failed:
                    failed.append(name)
                messages.append(f"{outcome.get('message', '')}\n{outcome.text or ''}")
    if counted != cases:
        raise ReportError(
            "the junit report contradicts itself: its counts say "
            f"{_counts(counted)} but it lists {_counts(cases)}"
        )
    return JunitSummary(
        tests=cases["tests"],
        failures=cases["failures"],
        errors=cases["errors"],
        skipped=cases["skipped"],
        failed_names=tuple(failed),
        messages=tuple(messages),
        started=_timestamp(suites[0].get("timestamp")),
    )


def read_line_coverage(data: bytes | None) -> float | None:
    """The total line coverage from coverage.py's JSON report; None when absent or unusable."""
    if not data:
        return None
    try:
        percent = json.loads(data)["totals"]["percent_covered"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(percent, int | float) and 0.0 <= percent <= 100.0:
        return round(float(percent), 2)
    return None


def _timestamp(text: str | None) -> float | None:
    """Seconds since the epoch of an ISO timestamp (local time when it has no offset)."""
    try:
        return datetime.fromisoformat(text).astimezone().timestamp() if text else None
    except ValueError:
        return None


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {key}" for key, value in counts.items())


@dataclass(frozen=True, slots=True)
class Coverage:
    """What coverage.py measured of a test run.

    Attributes:
        percent: the total line coverage of the non-test files.
        files: per file, the lines the tests ran and missed (None when the report lists none
            usable), for the coverage of the changed lines a gate shows.
    """

    percent: float
    files: dict[str, LineHits] | None


def read_coverage(data: bytes | None) -> Coverage | None:
    """The total and per-file coverage from coverage.py's JSON report; None when unusable."""
    percent = read_line_coverage(data)
    if percent is None:
        return None
    return Coverage(percent=percent, files=read_line_hits(data))


def read_line_hits(data: bytes | None) -> dict[str, LineHits] | None:
    """Per file, the lines run and missed, from coverage.py's JSON report; None if unusable.

    The step result keeps these (``CodeValidationReport.line_hits``) so a gate can show which
    changed lines the tests ran (``orchestrator.reporting.changed_line_coverage``).
    """
    if not data:
        return None
    try:
        files = json.loads(data)["files"]
        return {
            str(name): LineHits(
                executed=tuple(int(n) for n in entry.get("executed_lines", ())),
                missing=tuple(int(n) for n in entry.get("missing_lines", ())),
            )
            for name, entry in files.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
