"""The contract every ``Store`` backend keeps, run against each backend in ``BACKENDS``.

A new backend plugs in with one entry in ``BACKENDS``: a function that, given the test's
request (for fixtures such as the session's PostgreSQL server), a fresh temporary directory
and the test clock, returns a factory opening handles on one fresh, empty store (every call
a new handle, as another process would open it), through the composition root's
``open_store`` like every other caller. The PostgreSQL cases skip, saying why, where no
server can be started. The tests at the end of the file
pin what is particular to SQLite (data directory, pragmas, real processes): each says why
it cannot run on the in-memory store.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator import composition
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.running.updates import complete_step, fail_step, new_workflow, record_answer
from state.clock import FixedClock
from state.codec import decode_entry, ts
from state.config import Gates, WorkflowConfig
from state.decision import LLMCallInfo, ShadowDecider, ShadowOutcome, ShadowRecord
from state.errors import (
    ConcurrencyError,
    ConfigError,
    StoreError,
    UnknownWorkflowError,
)
from state.reports import PlanDraft, PlanValidationReport
from state.sql_core import SqlStore
from state.sqlite_store import DB_FILENAME, default_data_dir
from state.steps import Gate, MachineState, Step, WorkflowStatus
from state.store import (
    ACTIVITY_CHARS,
    ArtifactIn,
    Commit,
    DecisionEntry,
    EventEntry,
    HumanAnswerEntry,
    Lease,
    LedgerEntryIn,
    LedgerKind,
    ShadowEntry,
    SnapshotEncoder,
    StepResultEntry,
    Store,
    pid_alive,
)
from state.workflow import HumanAnswerKind, StepStatus, WorkflowState

from support.histories import long_history

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return (self.t - T0).total_seconds()

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


StoreFactory = Callable[[], Store]


def _sqlite_backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> StoreFactory:
    return lambda: composition.open_store(tmp_path / "data", clock=clock)


def _memory_backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> StoreFactory:
    # A name of its own per test, so that every handle of this test shares one store.
    name = f"contract-{tmp_path.name}-{uuid.uuid4().hex}"
    return lambda: composition.open_store(f"memory://{name}", clock=clock)


def _postgres_backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> StoreFactory:
    # A new database per test on the session's server (conftest), skipping without one.
    url: str = request.getfixturevalue("postgres_url")
    return lambda: composition.open_store(url, clock=clock)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path, ManualClock], StoreFactory]] = {
    "sqlite": _sqlite_backend,
    "memory": _memory_backend,
    "postgres": _postgres_backend,
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=sorted(BACKENDS))
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[StoreFactory]:
    make = BACKENDS[request.param](request, tmp_path, clock)
    opened: list[Store] = []

    def factory() -> Store:
        store = make()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> Store:
    return open_store()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of this host that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- realistic states, made by the real engine -----------------------------------------------


def _engine() -> DecisionPipeline:
    return DecisionPipeline(WorkflowMachine(), FixedClock(T0))


def _history(wid: str) -> list[tuple[WorkflowState, list[LedgerEntryIn]]]:
    """A workflow from creation through the plan gate to a failed step 4, commit by commit.

    Each item is a state to commit and the ledger entries that go with it.
    """
    engine, tick, config = _engine(), FixedClock(T0, timedelta(minutes=1)), WorkflowConfig()
    state = new_workflow(wid, "create a data preprocessing step for tabular data", "/ws", T0)
    out: list[tuple[WorkflowState, list[LedgerEntryIn]]] = []

    def decide() -> None:
        nonlocal state
        state, record = engine.decide_by_rule(state, config)
        out.append((state, [DecisionEntry(record)]))

    decide()  # step 1
    state = complete_step(state, PlanDraft(version=1, markdown="# Plan v1"), tick.now())
    out.append((state, [StepResultEntry(state.history[-1])]))
    decide()  # step 2
    report = PlanValidationReport(
        alignment_score=9.5,
        standardization_score=9.0,
        compatibility_score=8.5,
        critical_issues=0,
        minor_issues=1,
        markdown="all good",
    )
    state = complete_step(state, report, tick.now())
    out.append((state, [StepResultEntry(state.history[-1])]))
    decide()  # plan gate
    state = record_answer(
        state, Gate.PLAN, HumanAnswerKind.APPROVE, by="alice", now=tick.now(), comment="ok"
    )
    out.append((state, [HumanAnswerEntry(state.human_answers[-1])]))
    decide()  # phase 2, step 4
    state = fail_step(state, "timeout", "the programmer took too long", tick.now())
    out.append(
        (state, [StepResultEntry(state.history[-1]), EventEntry("step_failed", {"step": 4})])
    )
    return out


def _created(store: Store, wid: str = "wf-1") -> tuple[WorkflowState, int]:
    state = new_workflow(wid, "requirements", "/ws", T0)
    return state, store.create(state, WorkflowConfig())


def _replay(store: Store, wid: str = "wf-1") -> tuple[WorkflowState, int]:
    """Create ``wid`` and commit its whole ``_history``; the last state and version."""
    state, version = _created(store, wid)
    for state, entries in _history(wid):
        version = store.commit(wid, state, expected_version=version, entries=entries, owner=None)
    return state, version


# -- workflows -----------------------------------------------------------------------------


def test_create_starts_at_version_1_and_load_returns_state_and_config(store: Store) -> None:
    """A created workflow loads back equal, with its configuration, at version 1."""
    state = new_workflow("wf-1", "requirements", "/ws", T0)
    config = WorkflowConfig(gates=Gates(code_review=True))
    assert store.create(state, config) == 1
    loaded = store.load("wf-1")
    assert (loaded.state, loaded.config, loaded.version) == (state, config, 1)


def test_create_refuses_an_existing_id_and_keeps_the_first(store: Store) -> None:
    """Creating an id twice raises StoreError and leaves the first workflow as it was."""
    first, _ = _created(store)
    other = new_workflow("wf-1", "something else", "/elsewhere", T0)
    with pytest.raises(StoreError, match="wf-1 already exists"):
        store.create(other, WorkflowConfig())
    assert store.load("wf-1").state == first


def test_load_of_unknown_id_names_it_and_suggests_list(store: Store) -> None:
    """Loading an unknown id raises UnknownWorkflowError naming it and `orchestrator list`."""
    with pytest.raises(UnknownWorkflowError, match=r"'nope'.*orchestrator list"):
        store.load("nope")


def test_commits_of_a_real_workflow_round_trip(store: Store) -> None:
    """Every engine-made snapshot loads back equal, and the version grows by one per commit."""
    _, version = _created(store)
    for state, entries in _history("wf-1"):
        new = store.commit("wf-1", state, expected_version=version, entries=entries, owner=None)
        assert new == version + 1
        version = new
        loaded = store.load("wf-1")
        assert (loaded.state, loaded.version) == (state, version)


def test_commit_with_a_stale_version_raises_and_writes_nothing(store: Store) -> None:
    """A commit naming an old version raises ConcurrencyError; snapshot and ledger stay."""
    _created(store)
    (moved, entries), (later, more) = _history("wf-1")[:2]
    store.commit("wf-1", moved, expected_version=1, entries=entries, owner=None)
    with pytest.raises(ConcurrencyError, match=r"wf-1 changed.*version 1 expected, 2 stored"):
        store.commit("wf-1", later, expected_version=1, entries=more, owner=None)
    assert store.load("wf-1").state == moved
    assert [e.seq for e in store.ledger("wf-1")] == [1]


def test_commit_to_unknown_workflow_raises_unknown(store: Store) -> None:
    """Committing to an id the store does not hold raises UnknownWorkflowError."""
    state = new_workflow("ghost", "r", "/ws", T0)
    with pytest.raises(UnknownWorkflowError, match="ghost"):
        store.commit("ghost", state, expected_version=1, owner=None)


def test_commit_of_another_workflows_state_is_refused(store: Store) -> None:
    """A state whose workflow_id differs from the id committed to raises StoreError."""
    _created(store, "wf-1")
    other, _ = _created(store, "wf-2")
    with pytest.raises(StoreError, match="state of workflow wf-2"):
        store.commit("wf-1", other, expected_version=1, owner=None)
    assert store.load("wf-1").version == 1


def test_commit_many_writes_each_workflow_as_commit_would(open_store: StoreFactory) -> None:
    """Three workflows' histories, a batch per step: each loads and reads back as if alone."""
    store, alone = open_store(), open_store()
    wids = ("wf-a", "wf-b", "wf-c")
    versions = {wid: _created(store, wid)[1] for wid in wids}
    histories = {wid: _history(wid) for wid in wids}
    for step in range(len(histories["wf-a"])):
        batch = [
            Commit(wid, histories[wid][step][0], versions[wid], histories[wid][step][1])
            for wid in wids
        ]
        outcomes = store.commit_many(batch)
        assert outcomes == [versions[wid] + 1 for wid in wids]
        versions = {wid: versions[wid] + 1 for wid in wids}
    reader = open_store()  # knows nothing this process wrote
    for wid in wids:
        _, version = _replay(alone, f"{wid}-alone")
        loaded = reader.load(wid)
        assert (loaded.state, loaded.version) == (histories[wid][-1][0], version)
        ledger = [(e.seq, e.content) for e in reader.ledger(wid)]
        assert ledger == [(e.seq, e.content) for e in reader.ledger(f"{wid}-alone")]
        assert len(ledger) == 9


def test_commit_many_refuses_one_commit_and_writes_the_others(
    store: Store, clock: ManualClock
) -> None:
    """A stale version, an unknown id, a foreign state, a lost lease: each its own error."""
    for wid in ("wf-1", "wf-2", "wf-3", "wf-4", "wf-5"):
        _created(store, wid)
    store.acquire_lease("wf-5", "someone-else", 60)
    step = {wid: _history(wid)[0] for wid in ("wf-1", "wf-2", "wf-3", "wf-5")}
    store.commit("wf-2", step["wf-2"][0], expected_version=1, entries=step["wf-2"][1], owner=None)
    ghost = new_workflow("ghost", "r", "/ws", T0)
    outcomes = store.commit_many(
        [
            Commit("wf-1", step["wf-1"][0], 1, step["wf-1"][1]),
            Commit("wf-2", step["wf-2"][0], 1, step["wf-2"][1]),  # stale: version 2 stored
            Commit("ghost", ghost, 1),
            Commit("wf-4", step["wf-1"][0], 1),  # the state of wf-1
            Commit("wf-5", step["wf-5"][0], 1, step["wf-5"][1], owner="me"),
            Commit("wf-3", step["wf-3"][0], 1, step["wf-3"][1]),
        ]
    )
    assert outcomes[0] == 2 and outcomes[5] == 2
    assert isinstance(outcomes[1], ConcurrencyError) and "2 stored" in str(outcomes[1])
    assert isinstance(outcomes[2], UnknownWorkflowError) and "ghost" in str(outcomes[2])
    assert isinstance(outcomes[3], StoreError) and "state of workflow wf-1" in str(outcomes[3])
    assert isinstance(outcomes[4], ConcurrencyError) and "someone-else" in str(outcomes[4])
    assert [store.load(w).version for w in ("wf-1", "wf-2", "wf-3", "wf-4", "wf-5")] == [
        2, 2, 2, 1, 1,
    ]  # fmt: skip
    assert [len(store.ledger(w)) for w in ("wf-1", "wf-2", "wf-3", "wf-4", "wf-5")] == [
        1, 1, 1, 0, 0,
    ]  # fmt: skip
    # A refused commit leaves nothing behind that a later commit trips on.
    assert store.commit("wf-2", _history("wf-2")[1][0], expected_version=2, owner=None) == 3


def test_commit_many_takes_two_commits_of_one_workflow_in_order(store: Store) -> None:
    """The same workflow twice in a batch: the second is checked against the first's version."""
    _created(store)
    (first, e1), (second, e2) = _history("wf-1")[:2]
    outcomes = store.commit_many([Commit("wf-1", first, 1, e1), Commit("wf-1", second, 2, e2)])
    assert outcomes == [2, 3]
    loaded = store.load("wf-1")
    assert (loaded.state, loaded.version) == (second, 3)
    assert [e.seq for e in store.ledger("wf-1")] == [1, 2]
    [again] = store.commit_many([Commit("wf-1", first, 2, e1)])
    assert isinstance(again, ConcurrencyError)


def test_commit_is_visible_to_another_handle(open_store: StoreFactory) -> None:
    """What one handle commits, another handle (another process) loads at once."""
    writer, reader = open_store(), open_store()
    state, version = _replay(writer)
    loaded = reader.load("wf-1")
    assert (loaded.state, loaded.version) == (state, version)


def test_data_survives_closing_and_reopening(open_store: StoreFactory) -> None:
    """A closed store's workflows, ledger, artifacts and lease are all there when reopened."""
    first = open_store()
    state, version = _replay(first)
    first.add_artifact("wf-1", "plan", "plans/v1.md")
    first.acquire_lease("wf-1", "w1", 60)
    first.close()
    again = open_store()
    assert again.load("wf-1").state == state
    assert len(again.ledger("wf-1")) == 9
    assert [a.path for a in again.artifacts("wf-1")] == ["plans/v1.md"]
    lease = again.lease("wf-1")
    assert lease is not None
    assert lease.owner == "w1"
    assert version == 9


def test_closed_store_refuses_calls(open_store: StoreFactory) -> None:
    """After close (here via the context manager) every call raises StoreError."""
    with open_store() as store:
        _created(store)
    with pytest.raises(StoreError, match="closed"):
        store.load("wf-1")
    with pytest.raises(StoreError, match="closed"):
        list(store.scan_ledger())
    store.close()  # closing again is harmless


# -- listing -------------------------------------------------------------------------------


def test_list_summarises_latest_snapshots(store: Store) -> None:
    """list_workflows shows each workflow's status, phase, state, step, gate and version."""
    _created(store, "fresh")
    wid = "gated"
    state, version = _created(store, wid)
    for state, entries in _history(wid)[:5]:  # up to the plan gate, not yet answered
        version = store.commit(wid, state, expected_version=version, entries=entries, owner=None)
    summaries = {s.workflow_id: s for s in store.list_workflows()}
    gated = summaries["gated"]
    assert gated.status is WorkflowStatus.AWAITING_HUMAN
    assert gated.machine_state is MachineState.AWAITING_PLAN_APPROVAL
    assert gated.waiting_gate is Gate.PLAN
    assert gated.current_step is Step.PLAN_VALIDATION
    assert (gated.phase, gated.version) == (1, 6)
    assert gated.updated_at == state.updated_at
    fresh = summaries["fresh"]
    assert (fresh.status, fresh.machine_state, fresh.current_step, fresh.waiting_gate) == (
        WorkflowStatus.RUNNING,
        MachineState.NEW,
        None,
        None,
    )
    assert fresh.created_at == T0


def test_list_filters_by_status_and_orders_by_recency(store: Store) -> None:
    """A status filter returns only those workflows; the latest updated come first."""
    _created(store, "a")
    _replay(store, "b")  # ends running (a failed step awaits its retry)
    state = new_workflow("c", "r", "/ws", T0 + timedelta(days=1))
    store.create(state, WorkflowConfig())
    assert [s.workflow_id for s in store.list_workflows()] == ["c", "b", "a"]
    assert store.list_workflows(WorkflowStatus.AWAITING_HUMAN) == []
    assert [s.workflow_id for s in store.list_workflows(WorkflowStatus.RUNNING)] == [
        "c",
        "b",
        "a",
    ]


def test_list_of_an_empty_store_is_empty(store: Store) -> None:
    """A new store lists no workflows."""
    assert store.list_workflows() == []
    assert store.versions() == {}


def test_versions_follow_commits(store: Store) -> None:
    """Store.versions maps every workflow to its version, which each commit moves on."""
    _created(store, "a")
    state, version = _created(store, "b")
    assert store.versions() == {"a": 1, "b": 1}
    version = store.commit("b", state, expected_version=version, owner=None)
    assert store.versions() == {"a": 1, "b": 2}
    assert {s.workflow_id: s.version for s in store.list_workflows()} == store.versions()


def test_list_among_ids_keeps_the_order_and_the_filter(store: Store) -> None:
    """A listing by ids has only those, newest first; unknown ids are left out; none, none."""
    _created(store, "a")
    _replay(store, "b")  # ends running
    store.create(new_workflow("c", "r", "/ws", T0 + timedelta(days=1)), WorkflowConfig())
    assert [s.workflow_id for s in store.list_workflows(ids=["a", "c", "nope"])] == ["c", "a"]
    assert [s.workflow_id for s in store.list_workflows(ids=("b",))] == ["b"]
    assert store.list_workflows(ids=[]) == []
    assert store.list_workflows(WorkflowStatus.AWAITING_HUMAN, ids=["a", "b"]) == []
    running = store.list_workflows(WorkflowStatus.RUNNING, ids={"a", "b"})
    assert [s.workflow_id for s in running] == ["b", "a"]
    assert running == [s for s in store.list_workflows() if s.workflow_id in {"a", "b"}]
    quoted = 'it\'s "odd"]'  # ids travel as one JSON array: quotes and brackets survive
    store.create(new_workflow(quoted, "r", "/ws", T0), WorkflowConfig())
    assert [s.workflow_id for s in store.list_workflows(ids=[quoted])] == [quoted]


# -- commits that write only what changed ------------------------------------------------


def test_a_long_workflow_reloads_equal_after_every_commit(open_store: StoreFactory) -> None:
    """After each of 90 commits, another handle and the writer both load the state committed."""
    writer, reader = open_store(), open_store()
    _, version = _created(writer)
    history = long_history("wf-1", 90)
    for state, entries in history:
        version = writer.commit(
            "wf-1", state, expected_version=version, entries=entries, owner=None
        )
        for handle in (reader, writer):
            loaded = handle.load("wf-1")
            assert (loaded.state, loaded.version) == (state, version)
    final = history[-1][0]
    assert len(final.human_answers) >= 2
    assert any(r.status is StepStatus.FAILED for r in final.history)
    assert len(writer.ledger("wf-1")) == 90
    writer.close()
    assert open_store().load("wf-1").state == final


def test_a_step_record_that_changes_status_reloads_as_it_ended(open_store: StoreFactory) -> None:
    """A step committed running, then completed, loads completed with its result, in place."""
    writer, reader = open_store(), open_store()
    _, version = _created(writer)
    (started, decision), (done, result) = _history("wf-1")[:2]
    version = writer.commit("wf-1", started, expected_version=version, entries=decision, owner=None)
    assert [r.status for r in reader.load("wf-1").state.history] == [StepStatus.RUNNING]
    writer.commit("wf-1", done, expected_version=version, entries=result, owner=None)
    loaded = reader.load("wf-1").state
    assert loaded == done
    assert [r.status for r in loaded.history] == [StepStatus.COMPLETED]
    assert loaded.history[0].result == done.history[0].result


def test_handles_taking_turns_reload_what_the_other_committed(open_store: StoreFactory) -> None:
    """Two handles alternating commits (each loading first) never lose or repeat a record."""
    first, second, judge = open_store(), open_store(), open_store()
    _, version = _created(first)
    handles = (first, second)
    for n, (state, entries) in enumerate(long_history("wf-1", 30)):
        handle = handles[(n // 3) % 2]  # three commits each, then the other's turn
        assert handle.load("wf-1").version == version
        version = handle.commit(
            "wf-1", state, expected_version=version, entries=entries, owner=None
        )
        assert judge.load("wf-1").state == state


def test_a_commit_whose_lists_shrank_or_changed_reloads_equal(open_store: StoreFactory) -> None:
    """Committing an earlier state, or one with an old record replaced, stores it exactly."""
    store, reader = open_store(), open_store()
    _, version = _created(store)
    history = long_history("wf-1", 20)
    for state, entries in history:
        version = store.commit("wf-1", state, expected_version=version, entries=entries, owner=None)
    earlier = history[5][0]
    version = store.commit("wf-1", earlier, expected_version=version, owner=None)
    assert reader.load("wf-1").state == earlier
    last = history[-1][0]
    first = last.history[0].model_copy(update={"attempt": 9})
    changed = last.model_copy(update={"history": (first, *last.history[1:])})
    store.commit("wf-1", changed, expected_version=version, owner=None)
    assert reader.load("wf-1").state == changed


# -- ledger --------------------------------------------------------------------------------


def test_ledger_returns_every_kind_validated_with_contiguous_seq(store: Store) -> None:
    """Entries of every kind come back equal to what was appended, numbered 1..n."""
    _replay(store)
    expected = [entry for _, entries in _history("wf-1") for entry in entries]
    stored = store.load("wf-1")
    first = stored.state.decisions[0]
    shadow = ShadowEntry(
        ShadowRecord(
            decision_seq=first.seq,
            decided_at=T0,
            decider=ShadowDecider.LLM,
            outcome=ShadowOutcome.AGREED,
            state=first.state_before,
            route=first.route,
            applied=first.decision,
            decision=first.decision,
            llm=LLMCallInfo(model="m", prompt_tokens=10, completion_tokens=5, attempts=1),
        )
    )
    store.commit(
        "wf-1", stored.state, expected_version=stored.version, entries=[shadow], owner=None
    )
    expected.append(shadow)
    ledger = store.ledger("wf-1")
    assert [e.content for e in ledger] == expected
    assert [e.seq for e in ledger] == list(range(1, len(expected) + 1))
    assert {e.kind for e in ledger} == set(LedgerKind)
    assert all(e.workflow_id == "wf-1" for e in ledger)


def test_ledger_entries_of_one_commit_share_its_time(store: Store, clock: ManualClock) -> None:
    """recorded_at is the store clock's time at the commit that appended the entry."""
    _created(store)
    clock.advance(5)
    entries: list[LedgerEntryIn] = [EventEntry("a"), EventEntry("b", {"n": 1})]
    store.commit("wf-1", store.load("wf-1").state, expected_version=1, entries=entries, owner=None)
    assert [e.recorded_at for e in store.ledger("wf-1")] == [T0 + timedelta(seconds=5)] * 2


def test_ledger_filters_by_seq_and_kind(store: Store) -> None:
    """after_seq skips entries up to it; kinds keeps only the kinds asked for."""
    _replay(store)
    assert [e.seq for e in store.ledger("wf-1", after_seq=5)] == [6, 7, 8, 9]
    decisions = store.ledger("wf-1", kinds=[LedgerKind.DECISION])
    assert [e.seq for e in decisions] == [1, 3, 5, 7]
    assert all(isinstance(e.content, DecisionEntry) for e in decisions)
    answers = store.ledger("wf-1", after_seq=2, kinds={LedgerKind.HUMAN_ANSWER, LedgerKind.EVENT})
    assert [e.kind for e in answers] == [LedgerKind.HUMAN_ANSWER, LedgerKind.EVENT]
    assert store.ledger("wf-1", kinds=[]) == []


def test_scan_ledger_streams_every_workflows_entries_as_stored(store: Store) -> None:
    """scan_ledger: each workflow's entries in seq order, as ledger() decodes them, by kind."""
    if isinstance(store, SqlStore):
        store.scan_batch = 4  # batches that end inside a workflow and on its last entry
    _created(store, "wf-0")  # no entries: not in the scan
    for wid in ("wf-2", "wf-1"):
        _replay(store, wid)
    raw = list(store.scan_ledger())
    wids = [e.workflow_id for e in raw]
    assert sorted(set(wids)) == ["wf-1", "wf-2"]
    assert wids == sorted(wids, key=wids.index)  # each workflow's entries together
    by_workflow = {wid: [decode_entry(*e) for e in raw if e.workflow_id == wid] for wid in wids}
    assert by_workflow == {wid: store.ledger(wid) for wid in ("wf-1", "wf-2")}
    decisions = list(store.scan_ledger([LedgerKind.DECISION]))
    assert [(e.workflow_id, e.seq) for e in decisions] == [
        (e.workflow_id, e.seq) for e in raw if e.kind == LedgerKind.DECISION
    ]
    assert [e.seq for e in decisions if e.workflow_id == "wf-1"] == [1, 3, 5, 7]
    assert list(store.scan_ledger([])) == []


def test_scan_ledger_since_cuts_by_recorded_time(store: Store, clock: ManualClock) -> None:
    """``since`` keeps the entries recorded at or after it, in every workflow, by kind too."""
    _created(store, "wf-1")
    _created(store, "wf-2")
    versions = {"wf-1": 1, "wf-2": 1}
    for minute in range(3):
        clock.t = T0 + timedelta(minutes=minute)
        for wid in ("wf-1", "wf-2"):
            state = store.load(wid).state
            entries = [EventEntry("tick", {"minute": minute})]
            versions[wid] = store.commit(
                wid, state, expected_version=versions[wid], entries=entries, owner=None
            )
    cut = list(store.scan_ledger(since=T0 + timedelta(minutes=1)))
    assert [(e.workflow_id, e.seq) for e in cut] == [
        ("wf-1", 2),
        ("wf-1", 3),
        ("wf-2", 2),
        ("wf-2", 3),
    ]
    assert all(e.recorded_at >= ts(T0 + timedelta(minutes=1)) for e in cut)
    assert list(store.scan_ledger([LedgerKind.DECISION], since=T0)) == []
    assert len(list(store.scan_ledger(since=T0))) == 6
    assert list(store.scan_ledger(since=T0 + timedelta(minutes=3))) == []


def test_event_entries_keep_their_data(store: Store) -> None:
    """An event comes back with its name and its data, stored as {"event": name, ...}."""
    _created(store)
    event = EventEntry("resumed", {"by": "alice", "interrupted": [4], "note": None})
    store.commit("wf-1", store.load("wf-1").state, expected_version=1, entries=[event], owner=None)
    (entry,) = store.ledger("wf-1")
    assert entry.content == event


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (EventEntry(""), "non-empty name"),
        (EventEntry("x", {"event": "y"}), "no 'event' key"),
        (EventEntry("x", {"when": datetime(2026, 1, 1, tzinfo=UTC)}), "cannot be stored as JSON"),
        (EventEntry("x", {"score": float("nan")}), "cannot be stored as JSON"),
    ],
)
def test_unstorable_events_are_refused_before_anything_is_written(
    store: Store, event: EventEntry, problem: str
) -> None:
    """An event that could not be read back raises StoreError; the commit does not happen."""
    _created(store)
    state = store.load("wf-1").state
    with pytest.raises(StoreError, match=problem):
        store.commit("wf-1", state, expected_version=1, entries=[event], owner=None)
    assert store.load("wf-1").version == 1
    assert store.ledger("wf-1") == []


def test_a_running_step_is_not_a_step_result(store: Store) -> None:
    """A step_result entry for a running attempt raises StoreError and nothing is written."""
    _created(store)
    started, _ = _history("wf-1")[0]
    assert started.history[-1].status is StepStatus.RUNNING
    with pytest.raises(StoreError, match="still running"):
        store.commit(
            "wf-1",
            started,
            expected_version=1,
            entries=[StepResultEntry(started.history[-1])],
            owner=None,
        )
    assert store.load("wf-1").version == 1


def test_ledger_of_unknown_workflow_raises_and_of_new_one_is_empty(store: Store) -> None:
    """ledger() of an unknown id raises UnknownWorkflowError; of a new workflow returns []."""
    _created(store)
    assert store.ledger("wf-1") == []
    with pytest.raises(UnknownWorkflowError):
        store.ledger("nope")


def test_ledgers_are_numbered_per_workflow(store: Store) -> None:
    """Each workflow's ledger starts at seq 1, however the commits interleave."""
    _created(store, "a")
    _created(store, "b")
    versions = {"a": 1, "b": 1}
    for i in range(3):
        for wid in ("b", "a"):
            state = store.load(wid).state
            versions[wid] = store.commit(
                wid,
                state,
                expected_version=versions[wid],
                entries=[EventEntry("tick", {"i": i})],
                owner=None,
            )
    for wid in ("a", "b"):
        assert [e.seq for e in store.ledger(wid)] == [1, 2, 3]


def test_concurrent_writers_never_lose_or_reuse_a_seq(open_store: StoreFactory) -> None:
    """Threads with their own handles, retrying on conflict, leave 1..n with no gap."""
    _created(open_store())
    per_thread, threads = 15, 4
    handles = [open_store() for _ in range(threads)]
    errors: list[BaseException] = []

    def work(store: Store, n: int) -> None:
        try:
            done = 0
            while done < per_thread:
                loaded = store.load("wf-1")
                try:
                    store.commit(
                        "wf-1",
                        loaded.state,
                        expected_version=loaded.version,
                        entries=[EventEntry("tick", {"t": n})],
                        owner=None,
                    )
                except ConcurrencyError:
                    continue
                done += 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(h, n)) for n, h in enumerate(handles)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    ledger = open_store().ledger("wf-1")
    assert [e.seq for e in ledger] == list(range(1, per_thread * threads + 1))
    assert open_store().load("wf-1").version == 1 + per_thread * threads


# -- leases --------------------------------------------------------------------------------


def test_acquire_returns_the_lease_with_its_expiry(store: Store) -> None:
    """A lease names owner, this host and pid, and expires ttl seconds from the clock."""
    _created(store)
    lease = store.acquire_lease("wf-1", "w1", 30)
    assert lease == Lease(
        "wf-1", "w1", socket.gethostname(), os.getpid(), T0 + timedelta(seconds=30)
    )
    assert store.lease("wf-1") == lease


def test_live_lease_of_another_owner_is_refused_with_its_holder(open_store: StoreFactory) -> None:
    """A second owner gets ConcurrencyError naming holder, host, pid and expiry."""
    first, second = open_store(), open_store()
    _created(first)
    first.acquire_lease("wf-1", "w1", 30, host="build-07", pid=4242)
    with pytest.raises(
        ConcurrencyError,
        match=r"wf-1 is being run by w1 on build-07 \(pid 4242\) until 2026-03-01 12:00:30.*wait",
    ):
        second.acquire_lease("wf-1", "w2", 30)
    held = second.lease("wf-1")
    assert held is not None
    assert held.owner == "w1"


def test_owner_reacquiring_extends_its_lease(store: Store, clock: ManualClock) -> None:
    """The holder acquiring again gets a new expiry, not an error."""
    _created(store)
    store.acquire_lease("wf-1", "w1", 30)
    clock.advance(20)
    assert store.acquire_lease("wf-1", "w1", 30).expires_at == T0 + timedelta(seconds=50)


def test_expired_lease_is_taken_over(store: Store, clock: ManualClock) -> None:
    """Once a lease expires, another owner (even from another host) takes it."""
    _created(store)
    store.acquire_lease("wf-1", "w1", 30, host="build-07", pid=4242)
    clock.advance(30)
    assert store.acquire_lease("wf-1", "w2", 30).owner == "w2"


def test_lease_of_a_dead_local_process_is_taken_over_at_once(store: Store, dead_pid: int) -> None:
    """A live lease whose holder ran on this host and is gone is stale: resume need not wait."""
    _created(store)
    store.acquire_lease("wf-1", "killed", 3600, pid=dead_pid)
    assert store.acquire_lease("wf-1", "w2", 30).owner == "w2"


def test_a_lease_holder_notes_its_activity_and_the_note_goes_with_the_lease(
    open_store: StoreFactory, clock: ManualClock
) -> None:
    """Only the holder writes the note; renewals keep it, a new holder and a release drop it."""
    store, other = open_store(), open_store()
    _created(store)
    assert not store.note_activity("wf-1", "w1", "building")  # no lease: nothing written
    store.acquire_lease("wf-1", "w1", 30)
    clock.advance(1)
    assert store.note_activity("wf-1", "w1", "environment: installing numpy")
    held = other.lease("wf-1")
    assert held is not None
    assert (held.activity, held.activity_at) == (
        "environment: installing numpy",
        T0 + timedelta(seconds=1),
    )
    assert not other.note_activity("wf-1", "w2", "not mine")
    store.renew_lease("wf-1", "w1", 30)
    store.acquire_lease("wf-1", "w1", 30)  # the holder again: an extension
    renewed = other.lease("wf-1")
    assert renewed is not None
    assert renewed.activity == "environment: installing numpy"
    assert store.note_activity("wf-1", "w1", "x" * 2000)
    long = other.lease("wf-1")
    assert long is not None and long.activity is not None
    assert len(long.activity) == ACTIVITY_CHARS and long.activity.endswith("…")
    assert store.note_activity("wf-1", "w1", None)
    cleared = other.lease("wf-1")
    assert cleared is not None
    assert (cleared.activity, cleared.activity_at) == (None, None)
    store.note_activity("wf-1", "w1", "busy")
    clock.advance(30)
    taken = other.acquire_lease("wf-1", "w2", 30)
    assert taken.activity is None
    current = store.lease("wf-1")
    assert current is not None
    assert (current.owner, current.activity) == ("w2", None)
    other.note_activity("wf-1", "w2", "mine now")
    assert [(le.workflow_id, le.owner, le.activity) for le in store.leases()] == [
        ("wf-1", "w2", "mine now")
    ]
    other.release_lease("wf-1", "w2")
    assert store.lease("wf-1") is None
    assert store.leases() == []


def test_lease_of_a_process_on_another_host_waits_for_expiry(store: Store, dead_pid: int) -> None:
    """A pid cannot be checked on another host, so its live lease holds until it expires."""
    _created(store)
    store.acquire_lease("wf-1", "remote", 3600, host="build-07", pid=dead_pid)
    with pytest.raises(ConcurrencyError, match="remote on build-07"):
        store.acquire_lease("wf-1", "w2", 30)


def test_lease_of_a_live_local_process_holds(store: Store) -> None:
    """A holder on this host whose process runs (here: this one) keeps its lease."""
    _created(store)
    store.acquire_lease("wf-1", "w1", 30)
    with pytest.raises(ConcurrencyError, match="w1"):
        store.acquire_lease("wf-1", "w2", 30)


def test_renew_extends_and_refuses_a_non_holder(store: Store, clock: ManualClock) -> None:
    """renew_lease moves the expiry for the holder and raises ConcurrencyError for others."""
    _created(store)
    store.acquire_lease("wf-1", "w1", 30)
    clock.advance(25)
    assert store.renew_lease("wf-1", "w1", 30).expires_at == T0 + timedelta(seconds=55)
    with pytest.raises(ConcurrencyError, match=r"w2 no longer holds.*held by w1"):
        store.renew_lease("wf-1", "w2", 30)


def test_renew_of_an_expired_lease_nobody_took_succeeds(store: Store, clock: ManualClock) -> None:
    """A lease that lapsed but was not taken over is still its owner's to renew."""
    _created(store)
    store.acquire_lease("wf-1", "w1", 30)
    clock.advance(45)
    assert store.renew_lease("wf-1", "w1", 30).expires_at == T0 + timedelta(seconds=75)


def test_renew_after_a_takeover_is_refused(store: Store, clock: ManualClock) -> None:
    """A worker whose expired lease was taken over cannot renew it."""
    _created(store)
    store.acquire_lease("wf-1", "w1", 30)
    clock.advance(31)
    store.acquire_lease("wf-1", "w2", 30)
    with pytest.raises(ConcurrencyError, match="w1 no longer holds"):
        store.renew_lease("wf-1", "w1", 30)


def test_release_frees_the_workflow_only_for_the_holder(store: Store) -> None:
    """release_lease by a non-holder changes nothing; by the holder frees the workflow."""
    _created(store)
    store.acquire_lease("wf-1", "w1", 30)
    assert store.release_lease("wf-1", "w2") is False
    assert store.release_lease("wf-1", "w1") is True
    assert store.lease("wf-1") is None
    assert store.acquire_lease("wf-1", "w2", 30).owner == "w2"


def test_lease_calls_on_unknown_workflow_raise_unknown(store: Store) -> None:
    """acquire, renew and lease() of an unknown id raise UnknownWorkflowError."""
    with pytest.raises(UnknownWorkflowError):
        store.acquire_lease("nope", "w1", 30)
    with pytest.raises(UnknownWorkflowError):
        store.renew_lease("nope", "w1", 30)
    with pytest.raises(UnknownWorkflowError):
        store.lease("nope")


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
def test_lease_needs_a_positive_finite_ttl(store: Store, ttl: float) -> None:
    """A zero, negative or non-finite time-to-live raises StoreError."""
    _created(store)
    with pytest.raises(StoreError, match="time-to-live"):
        store.acquire_lease("wf-1", "w1", ttl)


def test_commit_with_owner_needs_its_live_lease(store: Store, clock: ManualClock) -> None:
    """A commit naming an owner succeeds under its lease, and fails without or after it."""
    _created(store)
    (s1, e1), (s2, e2) = _history("wf-1")[:2]
    with pytest.raises(ConcurrencyError, match="w1 holds no lease"):
        store.commit("wf-1", s1, expected_version=1, entries=e1, owner="w1")
    store.acquire_lease("wf-1", "w1", 30)
    assert store.commit("wf-1", s1, expected_version=1, entries=e1, owner="w1") == 2
    clock.advance(30)
    with pytest.raises(ConcurrencyError, match="lease of w1 expired"):
        store.commit("wf-1", s2, expected_version=2, entries=e2, owner="w1")
    store.acquire_lease("wf-1", "w2", 30)
    with pytest.raises(ConcurrencyError, match="held by w2"):
        store.commit("wf-1", s2, expected_version=2, entries=e2, owner="w1")
    assert store.commit("wf-1", s2, expected_version=2, entries=e2, owner="w2") == 3
    assert store.load("wf-1").state == s2
    assert [e.seq for e in store.ledger("wf-1")] == [1, 2]


# -- artifacts -----------------------------------------------------------------------------


def test_artifacts_are_listed_in_first_recorded_order(store: Store, clock: ManualClock) -> None:
    """Artifacts come back in order; recording a path again only updates its time."""
    _created(store)
    store.add_artifact("wf-1", "plan", "plans/v1.md")
    clock.advance(1)
    store.add_artifact("wf-1", "code", "src/prep.py")
    clock.advance(1)
    again = store.add_artifact("wf-1", "plan", "plans/v1.md")
    listed = store.artifacts("wf-1")
    assert [(a.kind, a.path) for a in listed] == [("plan", "plans/v1.md"), ("code", "src/prep.py")]
    assert listed[0].recorded_at == again.recorded_at == T0 + timedelta(seconds=2)


def test_a_commit_records_its_artifacts_with_it(store: Store, clock: ManualClock) -> None:
    """Artifacts given to commit are listed after it, in order, a repeated path once."""
    _created(store)
    store.add_artifact("wf-1", "plan_v1", "plans/v1.md")
    (first, entries), (second, more) = _history("wf-1")[:2]
    clock.advance(1)
    plan, code = ArtifactIn("plan_v1", "plans/v1.md"), ArtifactIn("code", "src/prep.py")
    store.commit(
        "wf-1", first, expected_version=1, entries=entries, owner=None,
        artifacts=[code, plan, code],
    )  # fmt: skip
    listed = store.artifacts("wf-1")
    assert [(a.kind, a.path) for a in listed] == [
        ("plan_v1", "plans/v1.md"),
        ("code", "src/prep.py"),
    ]
    assert {a.recorded_at for a in listed} == {T0 + timedelta(seconds=1)}
    outcomes = store.commit_many(
        [Commit("wf-1", second, 2, more, artifacts=(ArtifactIn("code", "src/more.py"),))]
    )
    assert outcomes == [3]
    assert [a.path for a in store.artifacts("wf-1")][-1] == "src/more.py"


def test_a_refused_commit_records_none_of_its_artifacts(store: Store, clock: ManualClock) -> None:
    """A stale version or a lost lease: the commit's artifacts are not recorded either."""
    for wid in ("wf-1", "wf-2"):
        _created(store, wid)
    step = _history("wf-1")[0]
    late = (ArtifactIn("code", "late.py"),)
    with pytest.raises(ConcurrencyError):
        store.commit("wf-1", step[0], expected_version=7, entries=step[1], owner=None,
                     artifacts=late)  # fmt: skip
    store.acquire_lease("wf-2", "w1", 30)
    clock.advance(31)
    store.acquire_lease("wf-2", "w2", 30)
    other = _history("wf-2")[0]
    with pytest.raises(ConcurrencyError, match="held by w2"):
        store.commit("wf-2", other[0], expected_version=1, entries=other[1], owner="w1",
                     artifacts=late)  # fmt: skip
    outcomes = store.commit_many(
        [
            Commit("wf-1", step[0], 1, step[1], artifacts=(ArtifactIn("code", "ok.py"),)),
            Commit("wf-2", other[0], 1, other[1], owner="w1", artifacts=late),
        ]
    )
    assert outcomes[0] == 2 and isinstance(outcomes[1], ConcurrencyError)
    assert [a.path for a in store.artifacts("wf-1")] == ["ok.py"]
    assert store.artifacts("wf-2") == []


def test_artifacts_of_unknown_workflow_raise_unknown(store: Store) -> None:
    """add_artifact and artifacts() of an unknown id raise UnknownWorkflowError."""
    with pytest.raises(UnknownWorkflowError):
        store.add_artifact("nope", "plan", "p.md")
    with pytest.raises(UnknownWorkflowError):
        store.artifacts("nope")
    _created(store)
    assert store.artifacts("wf-1") == []


# -- helpers every backend uses ------------------------------------------------------------


def test_snapshot_encoder_output_equals_model_dump_json() -> None:
    """The encoder's JSON, with and without cached records, parses equal to model_dump_json."""
    encoder = SnapshotEncoder()
    for state, _ in _history("wf-1") * 2:
        text = encoder.encode(state)
        assert json.loads(text) == json.loads(state.model_dump_json())
        assert WorkflowState.model_validate_json(text) == state


def test_snapshot_encoder_grows_to_hold_every_workflow_being_written() -> None:
    """Three workflows committed in turn with room for two: one rewrite, then only deltas."""
    encoder = SnapshotEncoder(2)
    versions: dict[str, int] = {}
    states = {wid: [state for state, _ in _history(wid)] for wid in ("wf-1", "wf-2", "wf-3")}
    for wid, history in states.items():
        encoder.wrote(encoder.delta(history[0], None), 1)
        versions[wid] = 1
    rewrites = []
    for step in range(1, min(map(len, states.values()))):
        for wid, history in states.items():
            delta = encoder.delta(history[step], versions[wid])
            rewrites.append(delta.rewrite)
            versions[wid] += 1
            encoder.wrote(delta, versions[wid])
    assert encoder.room == 4
    assert rewrites[0]  # wf-1 was evicted by the third create
    assert rewrites[1:] and not any(rewrites[1:])  # every later commit is a delta


def test_pid_alive_tells_running_from_gone(dead_pid: int) -> None:
    """pid_alive is True for this process and False for a reaped one or a bad pid."""
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid)
    assert not pid_alive(0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pid_alive_treats_an_unreaped_zombie_as_gone() -> None:
    """A killed child its parent has not reaped yet holds nothing: pid_alive is False."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.kill()
        for _ in range(200):  # wait until the kernel has made it a zombie
            stat = Path(f"/proc/{proc.pid}/stat").read_text()
            if stat.rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.01)
        assert not pid_alive(proc.pid)
    finally:
        proc.wait()


# -- SQLite specifics ----------------------------------------------------------------------
# These run once, not per backend: they pin where the SQLite file goes, its pragmas and
# what several processes do to it; an in-memory store has no file and lives in one process.


def test_default_data_dir_prefers_env_then_xdg_then_home() -> None:
    """ORCHESTRATOR_DATA_DIR wins, then an absolute XDG_DATA_HOME, then ~/.local/share."""
    env = {"ORCHESTRATOR_DATA_DIR": "/srv/orch", "XDG_DATA_HOME": "/xdg"}
    assert default_data_dir(env) == Path("/srv/orch")
    assert default_data_dir({"XDG_DATA_HOME": "/xdg"}) == Path("/xdg/hybrid-orchestrator")
    home = Path.home() / ".local" / "share" / "hybrid-orchestrator"
    assert default_data_dir({"XDG_DATA_HOME": "relative/dir"}) == home
    assert default_data_dir({"ORCHESTRATOR_DATA_DIR": ""}) == home


def test_sqlite_store_without_a_directory_uses_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_store() creates its database file under $ORCHESTRATOR_DATA_DIR (a file: SQLite)."""
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path / "orch"))
    with composition.open_store() as store:
        assert store.path == tmp_path / "orch" / DB_FILENAME  # type: ignore[attr-defined]
    assert (tmp_path / "orch" / DB_FILENAME).is_file()


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
def test_sqlite_durability_sets_wal_and_synchronous(
    tmp_path: Path, durability: str, synchronous: int
) -> None:
    """The file is in WAL mode; durability picks synchronous NORMAL (1) or FULL (2) (SQLite)."""
    with composition.open_store(tmp_path, durability=durability) as store:  # type: ignore[arg-type]
        conn = store._conn  # type: ignore[attr-defined]  # white-box: pragmas are per connection
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous
    with closing(sqlite3.connect(tmp_path / DB_FILENAME)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_rejects_an_unknown_durability(tmp_path: Path) -> None:
    """A durability other than normal or full raises ConfigError naming it (SQLite's knob)."""
    with pytest.raises(ConfigError, match="'fast'"):
        composition.open_store(tmp_path, durability="fast")  # type: ignore[arg-type]


_WORKER = """
import sys
from orchestrator.composition import open_store
from state.errors import ConcurrencyError
from state.store import EventEntry
with open_store(sys.argv[1], busy_timeout_s=30) as store:
    done = 0
    while done < int(sys.argv[2]):
        loaded = store.load("wf-1")
        try:
            store.commit("wf-1", loaded.state, expected_version=loaded.version,
                         entries=[EventEntry("tick", {"pid": sys.argv[3]})], owner=None)
        except ConcurrencyError:
            continue
        done += 1
"""


def test_sqlite_processes_commit_concurrently_without_lock_errors(tmp_path: Path) -> None:
    """Three processes committing at once all finish: no 'database is locked', no lost seq.

    SQLite only: an in-memory store cannot be shared between processes.
    """
    with composition.open_store(tmp_path) as store:
        _created(store)
    n, procs = 40, 3
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), str(n), str(i)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    with composition.open_store(tmp_path) as store:
        assert [e.seq for e in store.ledger("wf-1")] == list(range(1, n * procs + 1))
        assert store.load("wf-1").version == 1 + n * procs
