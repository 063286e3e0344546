"""Insights: what the decision record says about who should decide each state.

``gather`` reads every workflow's decisions and shadow answers in one scan of the store
(``Store.scan_ledger``), decoding of each entry only the fields counted here
(``DecisionFields``, ``ShadowFields``: pydantic models of a few fields, which skip the
rest of the JSON), and ``aggregate`` groups them by machine state and signal set. Full
validation of every entry (``Store.ledger``) made reading 100,000 decisions take seconds;
an entry whose counted fields are damaged is still refused, naming its workflow and seq.
For each group it counts:

- **samples**: the decisions taken there;
- **agreement**: of the cases where both the LLM and the rules answered (a borderline
  reconciliation, an LLM decision with the rules' alternative beside it, an LLM shadow answer
  beside a rule decision), how many named the same action;
- **overrides**: applied LLM decisions that differed from the rules, and **what followed**
  each, in that workflow: the first decisive event from it on (``completed``, ``escalated``,
  ``failed``, ``rejected``, or ``open`` if none yet) and how many decisions later; the same is
  counted after the decisions that followed the rules, for comparison;
- **fallbacks** and their causes (the LLM call's outcome), shadow failures included;
- LLM **tokens and latency**, applied and shadow calls together.

``recommend`` then proposes, with the evidence beside each:

``promote_to_rules``
    the LLM agreed with the rules in at least ``agree_threshold`` of at least
    ``min_samples`` comparisons: the rules can decide alone (``routing: programmatic``);
``keep_llm``
    its overrides were followed by better outcomes than the rules' decisions there, by a
    margin (5 points more completions or fewer escalations, failures and rejections, or
    completion in 5% fewer decisions): keep it consulted (``routing: hybrid``);
``review_rule``
    as ``keep_llm``, and the LLM overrides in at least half of the comparisons: the rule
    itself looks wrong; until it is reviewed, let the LLM decide (``routing: llm``).

``routing_block`` turns the recommendations into the ``routing:`` YAML that
``WorkflowConfig`` accepts, one entry per machine state all of whose recommendations agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from state.config import Coordinator, parse_config
from state.decision import (
    ActionKind,
    DecisionSource,
    LLMCallOutcome,
    ShadowDecider,
    ShadowOutcome,
)
from state.errors import StoreCorruptError
from state.steps import MachineState
from state.store import LedgerKind, RawLedgerEntry, Store
from state.validation import describe_validation_error

_KINDS = (LedgerKind.DECISION, LedgerKind.SHADOW)
_ENDS = {
    ActionKind.COMPLETE: "completed",
    ActionKind.ESCALATE: "escalated",
    ActionKind.FAIL: "failed",
    ActionKind.REJECT: "rejected",
}
_GOOD = "completed"
F = TypeVar("F", bound="BaseModel")
_BAD = frozenset({"escalated", "failed", "rejected"})


class Recommendation(StrEnum):
    """What the record suggests for a group of decisions."""

    PROMOTE_TO_RULES = "promote_to_rules"
    KEEP_LLM = "keep_llm"
    REVIEW_RULE = "review_rule"


ROUTING_OF = {
    Recommendation.PROMOTE_TO_RULES: Coordinator.PROGRAMMATIC,
    Recommendation.KEEP_LLM: Coordinator.HYBRID,
    Recommendation.REVIEW_RULE: Coordinator.LLM,
}


# The fields of the ledger's records that insights counts. The rest of each record is
# skipped (extra="ignore"): it is the store's to validate (``Store.ledger``), not ours.
_READ = ConfigDict(extra="ignore", frozen=True)


class ActionField(BaseModel):
    """A ``Decision``'s action: all insights reads of it."""

    model_config = _READ

    action: ActionKind


class SignalField(BaseModel):
    """A ``Signal``'s name: all insights reads of it."""

    model_config = _READ

    name: str


class CallFields(BaseModel):
    """The ``LLMCallInfo`` fields insights counts (same names, same defaults)."""

    model_config = _READ

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    attempts: int = 0
    outcome: LLMCallOutcome = LLMCallOutcome.OK


class DecisionFields(BaseModel):
    """The ``DecisionRecord`` fields insights counts (same names)."""

    model_config = _READ

    decided_at: datetime
    decision: ActionField
    source: DecisionSource
    signals: tuple[SignalField, ...] = ()
    programmatic_alternative: ActionField | None = None
    state_before: MachineState
    llm: CallFields | None = None


class ShadowFields(BaseModel):
    """The ``ShadowRecord`` fields insights counts (same names)."""

    model_config = _READ

    decided_at: datetime
    decider: ShadowDecider
    outcome: ShadowOutcome
    state: MachineState
    signals: tuple[SignalField, ...] = ()
    llm: CallFields | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """One workflow's decisions and shadow answers, in ledger order."""

    workflow_id: str
    decisions: tuple[DecisionFields, ...]
    shadows: tuple[ShadowFields, ...]


@dataclass(slots=True)
class Outcomes:
    """What followed a set of decisions: the next decisive event and its distance."""

    events: Counter[str] = field(default_factory=Counter)
    distances: list[int] = field(default_factory=list)  # decisions until a completion

    def add(self, event: str, distance: int) -> None:
        """Count one decision followed by ``event``, ``distance`` decisions later."""
        self.events[event] += 1
        if event == _GOOD:
            self.distances.append(distance)

    @property
    def total(self) -> int:
        """Decisions counted."""
        return sum(self.events.values())

    def rate(self, events: Iterable[str]) -> float:
        """The share of the decisions followed by one of ``events``."""
        wanted = set(events)
        n = self.total
        return sum(v for k, v in self.events.items() if k in wanted) / n if n else 0.0

    @property
    def mean_distance(self) -> float | None:
        """Mean decisions until completion, over those that completed."""
        return sum(self.distances) / len(self.distances) if self.distances else None

    def as_json(self) -> dict[str, Any]:
        """The outcomes as plain JSON values."""
        mean = self.mean_distance
        return {
            "total": self.total,
            "events": dict(sorted(self.events.items())),
            "completion_rate": round(self.rate([_GOOD]), 3),
            "bad_rate": round(self.rate(_BAD), 3),
            "mean_decisions_to_completion": round(mean, 2) if mean is not None else None,
        }


@dataclass(slots=True)
class Group:
    """The decisions of one machine state and signal set, and what the record says of them."""

    state: MachineState
    signals: tuple[str, ...]
    samples: int = 0
    compared: int = 0
    agreed: int = 0
    shadow_compared: int = 0
    overrides: int = 0
    after_override: Outcomes = field(default_factory=Outcomes)
    after_rules: Outcomes = field(default_factory=Outcomes)
    fallbacks: Counter[str] = field(default_factory=Counter)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    recommendation: Recommendation | None = None
    evidence: str = ""

    def add_llm(self, info: CallFields | None) -> None:
        """Count an LLM consultation's requests, tokens and latency (none if not asked)."""
        if info is not None and info.attempts:
            self.llm_calls += info.attempts
            self.prompt_tokens += info.prompt_tokens
            self.completion_tokens += info.completion_tokens
            self.latencies_ms.append(info.latency_ms)

    @property
    def agreement(self) -> float | None:
        """The share of comparisons where the LLM and the rules agreed."""
        return self.agreed / self.compared if self.compared else None

    def as_json(self) -> dict[str, Any]:
        """The group as plain JSON values."""
        lat = sorted(self.latencies_ms)
        agreement = self.agreement
        return {
            "machine_state": self.state.value,
            "signals": list(self.signals),
            "samples": self.samples,
            "compared": self.compared,
            "shadow_compared": self.shadow_compared,
            "agreed": self.agreed,
            "agreement": round(agreement, 3) if agreement is not None else None,
            "overrides": self.overrides,
            "after_override": self.after_override.as_json(),
            "after_rules": self.after_rules.as_json(),
            "fallbacks": dict(sorted(self.fallbacks.items())),
            "llm_calls": self.llm_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms_mean": round(sum(lat) / len(lat), 1) if lat else None,
            "latency_ms_p95": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 1)
            if lat
            else None,
            "recommendation": self.recommendation.value if self.recommendation else None,
            "evidence": self.evidence,
        }


SINCE_MARGIN = timedelta(minutes=10)
"""How much earlier than ``since`` ``gather`` asks the store for: an entry is recorded
after its decision by the same process, but a clock stepped back in between (NTP) would
date it earlier. ``aggregate`` still cuts on each record's ``decided_at``."""


def gather(store: Store, since: datetime | None = None) -> Iterator[WorkflowRecord]:
    """Every workflow with decisions or shadow answers, from one scan of the ledgers.

    Args:
        store: the store to read.
        since: only entries recorded from about then on (``SINCE_MARGIN`` earlier), cut
            by the store, so a short window reads only its part of a long record.

    Raises:
        StoreCorruptError: an entry's counted fields are damaged, naming its workflow and seq.
        StoreError: the store cannot be read.
    """
    wid: str | None = None
    decisions: list[DecisionFields] = []
    shadows: list[ShadowFields] = []
    cut = since - SINCE_MARGIN if since is not None else None
    for entry in store.scan_ledger(_KINDS, since=cut):
        if entry.workflow_id != wid:
            if wid is not None:
                yield WorkflowRecord(wid, tuple(decisions), tuple(shadows))
            wid, decisions, shadows = entry.workflow_id, [], []
        if entry.kind == LedgerKind.DECISION:
            decisions.append(_read(DecisionFields, entry))
        elif entry.kind == LedgerKind.SHADOW:
            shadows.append(_read(ShadowFields, entry))
    if wid is not None:
        yield WorkflowRecord(wid, tuple(decisions), tuple(shadows))


def _read(fields: type[F], entry: RawLedgerEntry) -> F:
    """The fields of one stored entry insights counts, or the damage, named."""
    try:
        return fields.model_validate_json(entry.payload)
    except ValidationError as exc:
        problem = describe_validation_error(exc)
    except (TypeError, ValueError) as exc:  # not JSON text at all
        problem = str(exc)
    raise StoreCorruptError(
        f"workflow {entry.workflow_id}: ledger entry seq {entry.seq} ({entry.kind}) is "
        f"damaged: {problem}. Insights changed nothing; `orchestrator export "
        f"{entry.workflow_id}` shows the ledger, and a backup of the store restores it"
    )


def _followed_by(decisions: tuple[DecisionFields, ...]) -> list[tuple[str, int]]:
    """For each decision, the first decisive event from it on, and how many decisions later.

    The decision itself counts: an override that completes the workflow is followed by
    ``completed``, 0 decisions later.
    """
    out: list[tuple[str, int]] = [("open", 0)] * len(decisions)
    event, at = "open", len(decisions)
    for i in range(len(decisions) - 1, -1, -1):
        ends = _ENDS.get(decisions[i].decision.action)
        if ends is not None:
            event, at = ends, i
        out[i] = (event, at - i)
    return out


def _key(state: MachineState, signals: Iterable[Any]) -> tuple[MachineState, tuple[str, ...]]:
    return state, tuple(sorted({s.name for s in signals}))


def _is_override(record: DecisionFields) -> bool:
    source = record.source
    return source is DecisionSource.LLM_OVERRIDE or (
        source is DecisionSource.LLM and record.programmatic_alternative is not None
    )


def _compared(record: DecisionFields) -> bool | None:
    """Whether the LLM and the rules agreed on this applied decision (None: not compared)."""
    source = record.source
    if source is DecisionSource.RECONCILED_AGREE:
        return True
    if source is DecisionSource.LLM_OVERRIDE:
        return False
    if source is DecisionSource.LLM:
        return record.programmatic_alternative is None
    # An unsure LLM answer that differed is kept as the fallback's alternative.
    unsure = (
        source is DecisionSource.PROGRAMMATIC_FALLBACK
        and record.llm is not None
        and record.llm.attempts > 0
        and record.programmatic_alternative is not None
    )
    return False if unsure else None


def aggregate(workflows: Iterable[WorkflowRecord], since: datetime | None = None) -> list[Group]:
    """The groups of decisions (taken at or after ``since``), with their counts."""
    groups: dict[tuple[MachineState, tuple[str, ...]], Group] = {}

    def group(state: MachineState, signals: Iterable[Any]) -> Group:
        key = _key(state, signals)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(key[0], key[1])
        return g

    for wf in workflows:
        followed = _followed_by(wf.decisions)
        for record, (event, distance) in zip(wf.decisions, followed, strict=True):
            if since is not None and record.decided_at < since:
                continue
            g = group(record.state_before, record.signals)
            g.samples += 1
            agreed = _compared(record)
            if agreed is not None:
                g.compared += 1
                g.agreed += agreed
            if _is_override(record):
                g.overrides += 1
                g.after_override.add(event, distance)
            elif record.source is not DecisionSource.HUMAN:
                g.after_rules.add(event, distance)
            info = record.llm
            if record.source is DecisionSource.PROGRAMMATIC_FALLBACK:
                g.fallbacks[info.outcome.value if info is not None else "script"] += 1
            g.add_llm(info)
        for shadow in wf.shadows:
            if shadow.decider is not ShadowDecider.LLM:
                continue  # the rules beside an LLM decision: its record already compares them
            if since is not None and shadow.decided_at < since:
                continue
            g = group(shadow.state, shadow.signals)
            if shadow.outcome in (ShadowOutcome.AGREED, ShadowOutcome.DISAGREED):
                g.compared += 1
                g.shadow_compared += 1
                g.agreed += shadow.outcome is ShadowOutcome.AGREED
            else:
                g.fallbacks[f"shadow_{shadow.outcome.value}"] += 1
            g.add_llm(shadow.llm)
    return sorted(groups.values(), key=lambda g: (g.state.value, g.signals))


def _better(over: Outcomes, rules: Outcomes, margin: float) -> str | None:
    """Why the outcomes after overrides beat those after the rules (None: they do not).

    Better means no worse on either rate and ahead by ``margin`` on one (completions up or
    escalations, failures and rejections down), or, rates equal within ``margin``,
    completion in at least ``margin`` fewer decisions (relative).
    """
    if not rules.total:
        return None
    oc, rc = over.rate([_GOOD]), rules.rate([_GOOD])
    ob, rb = over.rate(_BAD), rules.rate(_BAD)
    if ob > rb + margin or oc < rc - margin:
        return None
    if oc >= rc + margin or ob <= rb - margin:
        return (
            f"after its {over.total} overrides {oc:.0%} completed and {ob:.0%} escalated, "
            f"failed or were rejected, against {rc:.0%} and {rb:.0%} after {rules.total} "
            "rule decisions"
        )
    od, rd = over.mean_distance, rules.mean_distance
    if od is not None and rd is not None and od <= rd * (1 - margin):
        return (
            f"after its {over.total} overrides workflows completed in {od:.1f} decisions, "
            f"against {rd:.1f} after {rules.total} rule decisions"
        )
    return None


def recommend(
    groups: list[Group],
    *,
    min_samples: int = 20,
    agree_threshold: float = 0.95,
    margin: float = 0.05,
) -> list[Group]:
    """Set each group's recommendation and its evidence (see the module docstring).

    Args:
        min_samples: comparisons needed to promote a state; a quarter of it (at least one)
            is the overrides needed to judge what followed them.
        agree_threshold: the agreement that promotes a state to the rules.
        margin: how far ahead the outcomes after overrides must be (see ``_better``).
    """
    for g in groups:
        g.recommendation, g.evidence = None, ""
        agreement = g.agreement
        if g.overrides >= max(1, min_samples // 4):
            why = _better(g.after_override, g.after_rules, margin)
            if why is not None:
                share = g.overrides / g.compared if g.compared else 1.0
                if share >= 0.5:
                    g.recommendation = Recommendation.REVIEW_RULE
                    g.evidence = f"the LLM overrides the rules in {share:.0%} of cases; {why}"
                else:
                    g.recommendation = Recommendation.KEEP_LLM
                    g.evidence = why
                continue
        if agreement is not None and g.compared >= min_samples and agreement >= agree_threshold:
            g.recommendation = Recommendation.PROMOTE_TO_RULES
            g.evidence = (
                f"the LLM agreed with the rules in {g.agreed} of {g.compared} comparisons "
                f"({agreement:.1%}, {g.shadow_compared} of them shadow answers)"
            )
        elif g.compared < min_samples:
            g.evidence = f"{g.compared} comparisons, fewer than {min_samples}: no recommendation"
    return groups


def routing_block(groups: list[Group]) -> dict[MachineState, Coordinator]:
    """The ``routing:`` the recommendations call for: the states whose groups all agree.

    A state is left out when its groups recommend different things, or when one of its
    groups with comparisons has no recommendation (the record does not settle it).
    """
    by_state: dict[MachineState, set[Coordinator | None]] = {}
    for g in groups:
        if g.recommendation is None and not g.compared and not g.overrides:
            continue  # decisions the LLM was never part of say nothing of routing
        mode = ROUTING_OF[g.recommendation] if g.recommendation is not None else None
        by_state.setdefault(g.state, set()).add(mode)
    out: dict[MachineState, Coordinator] = {}
    for state, modes in sorted(by_state.items(), key=lambda kv: kv[0].value):
        mode = next(iter(modes))
        if len(modes) == 1 and mode is not None:
            out[state] = mode
    return out


def routing_yaml(groups: list[Group]) -> str:
    """The ``routing:`` block as YAML ``WorkflowConfig`` accepts, the evidence as comments."""
    routing = routing_block(groups)
    lines = ["# written by orchestrator insights: one routing entry per machine state"]
    for g in groups:
        if g.recommendation is not None and g.state in routing:
            sig = ",".join(g.signals) or "no signals"
            lines.append(f"# {g.state.value} ({sig}): {g.recommendation.value}: {g.evidence}")
    body = {"routing": {s.value: c.value for s, c in routing.items()}}
    text = "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False)
    parse_config(yaml.safe_load(text), "the routing insights wrote")  # what it writes loads
    return text
