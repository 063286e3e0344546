"""Insights: the ledger aggregated per state and signal set, with evidence-backed advice."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_store_contract import ManualClock

from orchestrator.cli.app import cli
from orchestrator.composition import open_store
from orchestrator.insights import (
    SINCE_MARGIN,
    DecisionFields,
    Recommendation,
    ShadowFields,
    WorkflowRecord,
    aggregate,
    gather,
    recommend,
    routing_block,
    routing_yaml,
)
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
from state.errors import StoreCorruptError
from state.sqlite_store import DB_FILENAME
from state.steps import MachineState
from state.store import DecisionEntry, LedgerEntryIn, LedgerKind, ShadowEntry, Store

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


def test_since_is_cut_by_the_store_before_anything_is_read(tmp_path: Path) -> None:
    """Entries recorded well before ``since`` never leave the store; the margin's do."""
    clock = ManualClock()
    since = clock.t + timedelta(days=1)
    with open_store(tmp_path / "data", clock=clock) as store:
        put(store, "old", [DecisionEntry(rec(1, PV, COMPLETE))])
        clock.t = since - SINCE_MARGIN / 2
        put(store, "near", [DecisionEntry(rec(1, PV, COMPLETE))])
        assert [w.workflow_id for w in gather(store, since)] == ["near"]
        assert [w.workflow_id for w in gather(store)] == ["near", "old"]


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


def validated(store: Store) -> Iterator[WorkflowRecord]:
    """The workflows as the old path read them: ``ledger()`` per workflow, fully validated."""
    for summary in store.list_workflows():
        decisions, shadows = [], []
        for entry in store.ledger(
            summary.workflow_id, kinds=(LedgerKind.DECISION, LedgerKind.SHADOW)
        ):
            content = entry.content
            if isinstance(content, DecisionEntry):
                decisions.append(
                    DecisionFields.model_validate(content.record, from_attributes=True)
                )
            elif isinstance(content, ShadowEntry):
                shadows.append(ShadowFields.model_validate(content.record, from_attributes=True))
        yield WorkflowRecord(summary.workflow_id, tuple(decisions), tuple(shadows))


def vary(store: Store) -> None:
    """Records of every kind insights tells apart, beside ``fill``'s, at several times."""
    script = rec(1, CV, REFINE, DecisionSource.PROGRAMMATIC_FALLBACK)
    unsure = rec(
        2, CV, REFINE, DecisionSource.PROGRAMMATIC_FALLBACK, alternative=ESCALATE,
        llm=INFO.model_copy(update={"outcome": LLMCallOutcome.LOW_CONFIDENCE}),
    )  # fmt: skip
    llm_alone = rec(3, PV, COMPLETE, DecisionSource.LLM, llm=INFO, signals=("b", "a", "b"))
    llm_over = rec(4, PV, ESCALATE, DecisionSource.LLM, alternative=REFINE, llm=INFO)
    human = rec(5, MachineState.CODE_REFINEMENT, ESCALATE, DecisionSource.HUMAN)
    later = rec(6, PV, REFINE).model_copy(update={"decided_at": CLOCK.now() + timedelta(hours=2)})
    failed = shadow(1, CV, agreed=True).model_copy(
        update={"outcome": ShadowOutcome.FAILED, "decision": None, "error": "boom"}
    )
    rules = shadow(3, PV, agreed=False).model_copy(update={"decider": ShadowDecider.RULES})
    entries: list[LedgerEntryIn] = [
        DecisionEntry(script),
        ShadowEntry(failed),
        DecisionEntry(unsure),
    ]
    entries += [DecisionEntry(llm_alone), ShadowEntry(rules), DecisionEntry(llm_over)]
    entries += [DecisionEntry(human), DecisionEntry(later), ShadowEntry(shadow(6, PV, False))]
    put(store, "varied", entries)
    put(store, "empty", [])


@pytest.mark.parametrize("cut", ["none", "middle", "late"])
def test_the_fast_read_counts_what_full_validation_counts(store: Store, cut: str) -> None:
    """One scan (gather) gives the groups, advice and routing that ledger() per workflow gives."""
    vary(store)
    times = sorted(d.decided_at for wf in validated(store) for d in wf.decisions)
    since = {"none": None, "middle": times[len(times) // 2], "late": times[0] + timedelta(hours=1)}
    start = since[cut]

    def report(workflows: Iterable[WorkflowRecord]) -> tuple[list[dict[str, Any]], str]:
        groups = recommend(aggregate(workflows, start), min_samples=4)
        return [g.as_json() for g in groups], routing_yaml(groups)

    fast, slow = report(gather(store, start)), report(validated(store))
    assert fast == slow
    counted = sum(g["samples"] for g in fast[0])
    assert counted == {"none": 34, "middle": 34 - len(times) // 2, "late": 1}[cut]


def test_a_damaged_entry_is_named_by_workflow_and_seq(store: Store, tmp_path: Path) -> None:
    """A decision whose counted fields are damaged stops insights, naming workflow and seq."""
    store.close()
    with closing(sqlite3.connect(tmp_path / "data" / DB_FILENAME)) as db, db:
        db.execute(
            "UPDATE ledger SET payload = json_set(payload, '$.source', 'oracle') "
            "WHERE workflow_id = 'rules-2' AND seq = 3"
        )
    with open_store(tmp_path / "data") as again, pytest.raises(StoreCorruptError) as err:
        aggregate(gather(again))
    message = str(err.value)
    assert message.startswith("workflow rules-2: ledger entry seq 3 (decision) is damaged")
    assert "field 'source'" in message and "'oracle'" in message
    code, _, stderr = invoke(tmp_path, "--format", "json")
    assert code != 0 and "rules-2" in stderr and "seq 3" in stderr
