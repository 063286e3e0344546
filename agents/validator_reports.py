"""Reading the validator's reports: structured output first, labelled lines as the fallback.

Reports are asked for as structured output (a JSON schema in the request). Servers without a
JSON mode, or answers whose JSON is unusable, fall back to labelled markdown lines such as
``Alignment Rules Score: 8.5/10`` or ``Overall: PASS``. Both readers share one description of
each report's fields (``ReportSpec``), so the JSON schema and the labels cannot drift apart.

Values are kept as the model gave them: a missing score is None and an out-of-range one is
kept as is, each with a note in ``parse_problems``, because the classifier's anomaly signals
need to see them. Only an answer with nothing readable at all is ``invalid_output``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import Draft202012Validator

from state.errors import AgentError
from state.reports import Verdict

FieldKind = Literal["score", "count", "verdict", "status"]


@dataclass(frozen=True, slots=True)
class ReportField:
    """One value a report carries, under its JSON key and its labelled-line names."""

    name: str
    kind: FieldKind
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """The fields of one kind of report; the JSON schema is derived from them."""

    name: str
    fields: tuple[ReportField, ...]

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema asked of the model: every field plus the markdown ``report``.

        Ranges are described, not enforced: an out-of-range score must reach the report so
        the classifier can flag it, rather than fail validation here.
        """
        kinds: dict[FieldKind, dict[str, Any]] = {
            "score": {"type": "number", "description": "a score from 0 to 10"},
            "count": {"type": "integer", "description": "how many issues"},
            "verdict": {"type": "string", "enum": ["PASS", "FAIL"]},
            "status": {"type": "string", "enum": ["PASSED", "FAILED"]},
        }
        properties = {f.name: kinds[f.kind] for f in self.fields}
        properties["report"] = {"type": "string", "description": "the markdown report"}
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }


_ISSUES = (
    ReportField("critical_issues", "count", ("Critical Issues",)),
    ReportField("minor_issues", "count", ("Minor Issues",)),
)

PLAN_REPORT = ReportSpec(
    "plan_validation_report",
    (
        ReportField("alignment_score", "score", ("Alignment Rules Score", "Alignment Score")),
        ReportField(
            "standardization_score",
            "score",
            ("Standardization Score", "Standardization Rules Score"),
        ),
        ReportField("compatibility_score", "score", ("Compatibility Score",)),
        *_ISSUES,
        ReportField("verdict", "verdict", ("Overall", "Overall Verdict", "Verdict")),
    ),
)
CODE_REVIEW = ReportSpec(
    "code_alignment_review",
    (
        ReportField("overall_score", "score", ("Overall Score",)),
        *_ISSUES,
        ReportField("verdict", "verdict", ("Verdict", "Overall Verdict", "Overall")),
    ),
)
STANDARDIZATION = ReportSpec(
    "code_standardization_review",
    (
        ReportField("status", "status", ("Status", "Standardization Status")),
        *_ISSUES,
    ),
)

_NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"
_SCORE_TEXT = re.compile(rf"(?P<num>{_NUMBER}|nan)(?:\s*/\s*(?P<den>{_NUMBER}))?", re.IGNORECASE)
_COUNT_TEXT = re.compile(rf"(?P<num>{_NUMBER})|(?P<none>none|no|zero)\b", re.IGNORECASE)
_VERDICT_TEXT = re.compile(r"(PASS|FAIL)(?:ED)?\b", re.IGNORECASE)
_DECORATION = " \t*_`'\"|"
_JSON_ANSWER = re.compile(
    r"\A\s*(?:```(?:json)?\s*)?(?P<body>\{.*\})\s*(?:```)?\s*\Z", re.DOTALL | re.IGNORECASE
)


def _label_pattern(labels: tuple[str, ...]) -> re.Pattern[str]:
    names = sorted(labels, key=len, reverse=True)
    alternatives = "|".join(r"[ \t]+".join(map(re.escape, name.split())) for name in names)
    return re.compile(
        rf"^[ \t>*_#|+-]*(?:{alternatives})[ \t*_]*[:=|](?P<value>.*)$",
        re.IGNORECASE | re.MULTILINE,
    )


def _parse_text(kind: FieldKind, text: str) -> tuple[Any, str | None]:
    """A value read from text, and a note when its scale is unusual; (None, None) if none."""
    text = text.strip(_DECORATION)
    if kind == "score":
        score = _SCORE_TEXT.match(text)
        if score is None:
            return None, None
        value = float(score.group("num"))
        den = score.group("den")
        note = f"given on a /{den} scale, kept as given" if den and float(den) != 10 else None
        return value, note
    if kind == "count":
        count = _COUNT_TEXT.match(text)
        if count is None:
            return None, None
        if count.group("none"):
            return 0, None
        number = float(count.group("num"))
        return (int(number), None) if number.is_integer() else (None, None)
    verdict = _VERDICT_TEXT.match(text)
    if verdict is None:
        return None, None
    word = verdict.group(1).upper()
    if kind == "verdict":
        return Verdict(word), None
    return f"{word}ED", None


def _convert(field: ReportField, raw: Any) -> tuple[Any, str | None]:
    """A JSON value converted to the field's type; None when it cannot be."""
    if isinstance(raw, bool):
        return None, None
    if isinstance(raw, str):
        return _parse_text(field.kind, raw)
    if field.kind == "score" and isinstance(raw, int | float):
        return float(raw), None
    if field.kind == "count" and isinstance(raw, int | float) and float(raw).is_integer():
        return int(raw), None
    return None, None


def _range_problem(field: ReportField, value: Any) -> str | None:
    if field.kind == "score" and (math.isnan(value) or not 0 <= value <= 10):
        return f"{field.name}: {value:g} is outside 0-10, kept as given"
    if field.kind == "count" and value < 0:
        return f"{field.name}: {value} is negative, kept as given"
    return None


@functools.cache
def _validator(spec: ReportSpec) -> Draft202012Validator:
    """The schema validator of ``spec``, built once (building it costs more than using it)."""
    return Draft202012Validator(spec.schema)


def _read_json(data: dict[str, Any], spec: ReportSpec) -> tuple[dict[str, Any], list[str]]:
    problems = [
        f"schema: {err.message}"
        for err in _validator(spec).iter_errors(data)
        # missing fields, wrong types and bad enum values are reported field by field below
        if err.validator not in ("required", "type", "enum")
    ]
    values: dict[str, Any] = {}
    for field in spec.fields:
        raw = data.get(field.name)
        value, note = (None, None) if raw is None else _convert(field, raw)
        values[field.name] = value
        if raw is None:
            problems.append(f"{field.name}: missing")
        elif value is None:
            problems.append(f"{field.name}: unreadable value {raw!r}")
        else:
            problems.extend(p for p in (note, _range_problem(field, value)) if p)
    return values, problems


def _read_labelled(text: str, spec: ReportSpec) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in spec.fields:
        given = [
            m.group("value").strip(_DECORATION) for m in _label_pattern(field.labels).finditer(text)
        ]
        given = [g for g in given if g]
        readings = [(g, *_parse_text(field.kind, g)) for g in given]
        readable = [(g, v, note) for g, v, note in readings if v is not None]
        if not readable:
            values[field.name] = None
            problems.append(
                f"{field.name}: unreadable value {given[-1]!r}"
                if given
                else f"{field.name}: missing (no '{field.labels[0]}:' line)"
            )
            continue
        distinct = list(dict.fromkeys(str(v) for _, v, _ in readable))
        if len(distinct) > 1:
            problems.append(
                f"{field.name}: given {len(readable)} times with different values "
                f"({', '.join(distinct)}); the last is used"
            )
        _, value, note = readable[-1]
        values[field.name] = value
        problems.extend(p for p in (note, _range_problem(field, value)) if p)
    return values, problems


def _json_object_in(text: str) -> dict[str, Any] | None:
    match = _JSON_ANSWER.match(text)
    if match is None:
        return None
    try:
        value = json.loads(match.group("body"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_report(
    data: dict[str, Any] | None, text: str, spec: ReportSpec, *, where: str
) -> tuple[dict[str, Any], str, tuple[str, ...]]:
    """Read a report's values from structured output, else from labelled lines.

    Args:
        data: the parsed JSON object, if the model gave one.
        text: the raw answer text.
        spec: the report's fields.
        where: names the report in the error message.

    Returns:
        The values by field name (None where missing or unreadable), the markdown report,
        and the notes on what could not be read as expected.

    Raises:
        AgentError: ``invalid_output`` when not one value can be read.
    """
    fallback = text
    notes: list[str] = []
    if data is None:
        data = _json_object_in(text)  # a text-mode answer may still be the JSON asked for
    if data is not None:
        values, problems = _read_json(data, spec)
        report = data.get("report")
        if any(v is not None for v in values.values()):
            if isinstance(report, str) and report.strip():
                return values, report.strip(), tuple(problems)
            return values, text.strip(), (*problems, "report: missing, the raw answer is kept")
        if isinstance(report, str):
            fallback = report
        notes.append("the structured answer had no readable field; labelled lines were read")
    values, problems = _read_labelled(fallback, spec)
    if all(v is None for v in values.values()):
        labels = ", ".join(f"'{f.labels[0]}:'" for f in spec.fields)
        raise AgentError(
            f"{where} could not be read: no JSON object with its fields and no "
            f"labelled lines ({labels})",
            error_type="invalid_output",
        )
    return values, fallback.strip(), (*notes, *problems)
