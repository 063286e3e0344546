"""Insights: the ledger aggregated per state and signal set, with evidence-backed advice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.app import cli
from orchestrator.composition import open_store
from orchestrator.insights import Recommendation, aggregate, gather, recommend, routing_block
from orchestrator.running.updates import new_workflow
from state.clock import FixedClock
from state.config import Coordinator, WorkflowConfig, load_config
from state.decision import (
    ActionKind,
    Decision,
    DecisionRecord,
    DecisionSource,
    LLMCallInfo,
    LLMCallOutcome,
    Route,
    ShadowDecider,
    ShadowOutcome,
    ShadowRecord,
    Signal,
)
from state.steps import MachineState
from state.store import DecisionEntry, LedgerEntryIn, ShadowEntry, Store

CLOCK = FixedClock()
CV, PV = MachineState.CODE_VALIDATION, MachineState.PLAN_VALIDATION
REFINE = Decision(action=ActionKind.INVOKE_AGENT, rationale="refine")
ESCALATE = Decision(action=ActionKind.ESCALATE, rationale="escalate")
COMPLETE = Decision(action=ActionKind.COMPLETE, rationale="done")
INFO = LLMCallInfo(model="m", prompt_tokens=100, completion_tokens=10, latency_ms=50, attempts=1)


def rec(
    seq: int,
    state: MachineState,
    decision: Decision,
    source: DecisionSource = DecisionSource.PROGRAMMATIC,
    *,
    alternative: Decision | None = None,
    llm: LLMCallInfo | None = None,
    signals: tuple[str, ...] = (),
) -> DecisionRecord:
    """A decision record with the fields insights reads."""
    return DecisionRecord(
        seq=seq,
        decided_at=CLOCK.now(),
        decision=decision,
        source=source,
        route=Route.BORDERLINE if signals else Route.STANDARD,
        signals=tuple(Signal(name=s, route=Route.BORDERLINE) for s in signals),
        legal_actions=("a", "b"),
        programmatic_alternative=alternative,
        state_before=state,
        state_after=state,
        llm=llm,
    )


def shadow(seq: int, state: MachineState, agreed: bool) -> ShadowRecord:
    """An LLM shadow answer beside rule decision ``seq``."""
    return ShadowRecord(
        decision_seq=seq,
        decided_at=CLOCK.now(),
        decider=ShadowDecider.LLM,
        outcome=ShadowOutcome.AGREED if agreed else ShadowOutcome.DISAGREED,
        state=state,
        route=Route.STANDARD,
        applied=REFINE,
        decision=REFINE if agreed else ESCALATE,
        llm=INFO,
    )


def put(store: Store, wid: str, entries: list[LedgerEntryIn]) -> None:
    """A workflow holding ``entries`` in its ledger."""
    state = new_workflow(wid, "r", "/ws", CLOCK.now())
    store.create(state, WorkflowConfig())
    store.commit(wid, state, expected_version=1, entries=entries, owner=None)


def fill(store: Store) -> None:
    """Overrides that finish, rule paths that escalate, and shadows that always agree."""
    for i in range(4):  # code_validation: the LLM overrides every time, and it completes
        put(
            store,
            f"over-{i}",
            [
                DecisionEntry(rec(1, PV, REFINE)),
                ShadowEntry(shadow(1, PV, agreed=True)),
                DecisionEntry(
                    rec(2, CV, COMPLETE, DecisionSource.LLM_OVERRIDE, alternative=REFINE, llm=INFO)
                ),
            ],
        )
    for i in range(4):  # code_validation by the rules: escalated later
        put(
            store,
            f"rules-{i}",
            [
                DecisionEntry(rec(1, PV, REFINE)),
                ShadowEntry(shadow(1, PV, agreed=True)),
                DecisionEntry(rec(2, CV, REFINE)),
                DecisionEntry(rec(3, MachineState.CODE_REFINEMENT, ESCALATE)),
            ],
        )
    # A borderline group: the LLM mostly agrees, its one override is followed by completion.
    sig = ("near_threshold",)
    for i in range(3):
        put(
            store,
            f"agree-{i}",
            [
                DecisionEntry(
                    rec(1, CV, REFINE, DecisionSource.RECONCILED_AGREE, llm=INFO, signals=sig)
                ),
                DecisionEntry(rec(2, MachineState.CODE_REFINEMENT, ESCALATE)),
            ],
        )
    put(
        store,
        "override-once",
        [
            DecisionEntry(
                rec(
                    1,
                    CV,
                    COMPLETE,
                    DecisionSource.LLM_OVERRIDE,
                    alternative=REFINE,
                    llm=INFO,
                    signals=sig,
                )
            )
        ],
    )
    failed = INFO.model_copy(update={"outcome": LLMCallOutcome.UNAVAILABLE})
    put(
        store,
        "fallback",
        [DecisionEntry(rec(1, CV, REFINE, DecisionSource.PROGRAMMATIC_FALLBACK, llm=failed))],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "data") as s:
        fill(s)
        yield s


def test_groups_count_agreement_overrides_and_what_followed(store: Store) -> None:
    """Per state and signal set: samples, agreement (shadows included), outcomes, fallbacks."""
    groups = {(g.state, g.signals): g for g in aggregate(gather(store))}
    plan = groups[(PV, ())]
    assert (plan.samples, plan.compared, plan.agreed, plan.shadow_compared) == (8, 8, 8, 8)
    assert plan.llm_calls == 8 and plan.prompt_tokens == 800
    code = groups[(CV, ())]
    assert code.samples == 4 + 4 + 1
    assert code.overrides == 4
    assert code.after_override.events == {"completed": 4}
    assert code.after_rules.events == {"escalated": 4, "open": 1}
    assert code.fallbacks == {"unavailable": 1}
    near = groups[(CV, ("near_threshold",))]
    assert (near.compared, near.agreed, near.overrides) == (4, 3, 1)


def test_recommendations_carry_their_evidence(store: Store) -> None:
    """Promote when the LLM always agrees; review the rule it overrides with success."""
    groups = {(g.state, g.signals): g for g in recommend(aggregate(gather(store)), min_samples=4)}
    plan = groups[(PV, ())]
    assert plan.recommendation is Recommendation.PROMOTE_TO_RULES
    assert "8 of 8" in plan.evidence
    code = groups[(CV, ())]
    assert code.recommendation is Recommendation.REVIEW_RULE
    assert "100% completed" in code.evidence and "0% escalated" in code.evidence
    near = groups[(CV, ("near_threshold",))]
    assert near.recommendation is Recommendation.KEEP_LLM
    # code_validation's groups disagree (review vs keep): routing leaves it out.
    assert routing_block(list(groups.values())) == {PV: Coordinator.PROGRAMMATIC}


def test_too_few_samples_recommend_nothing(store: Store) -> None:
    """Below ``min_samples`` comparisons the record does not promote a state."""
    groups = recommend(aggregate(gather(store)), min_samples=50)
    plan = next(g for g in groups if g.state is PV)
    assert plan.recommendation is None and "fewer than 50" in plan.evidence


def test_since_keeps_only_recent_decisions(store: Store) -> None:
    """``since`` leaves older decisions out of the counts."""
    later = CLOCK.now() + timedelta(days=1)
    assert aggregate(gather(store), since=later) == []


def invoke(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """Run ``orchestrator insights`` on the test store."""
    result = CliRunner().invoke(cli, ["insights", *args, "--data-dir", str(tmp_path / "data")])
    return result.exit_code, result.stdout, result.stderr


def test_cli_json_and_the_routing_file(store: Store, tmp_path: Path) -> None:
    """JSON lists every group; --write-config writes routing a config loads; no overwrite."""
    code, out, err = invoke(tmp_path, "--format", "json", "--min-samples", "4")
    assert code == 0, err
    data = json.loads(out)
    assert data["routing"] == {"plan_validation": "programmatic"}
    assert {g["machine_state"] for g in data["groups"]} >= {"plan_validation", "code_validation"}
    target = tmp_path / "routing.yaml"
    code, out, err = invoke(tmp_path, "--min-samples", "4", "--write-config", str(target))
    assert code == 0, err
    assert "promote_to_rules" in out and "review_rule" in out
    config = load_config(target)
    assert config.routing == {PV: Coordinator.PROGRAMMATIC}
    assert "8 of 8" in target.read_text(encoding="utf-8")
    code, _, err = invoke(tmp_path, "--write-config", str(target))
    assert code == 2 and "--force" in err
    target.write_text("keep me", encoding="utf-8")
    code, _, _ = invoke(tmp_path, "--write-config", str(target))
    assert target.read_text(encoding="utf-8") == "keep me"
    code, _, err = invoke(tmp_path, "--min-samples", "4", "--write-config", str(target), "--force")
    assert code == 0, err
    assert load_config(target).routing == {PV: Coordinator.PROGRAMMATIC}


def test_cli_refuses_bad_options(store: Store, tmp_path: Path) -> None:
    """A bad --format or --since is one line on stderr and exit code 2."""
    code, _, err = invoke(tmp_path, "--format", "xml")
    assert code == 2 and "table, json" in err
    code, _, err = invoke(tmp_path, "--since", "yesterday")
    assert code == 2 and "--since" in err
