"""``orchestrator store migrate`` and ``--store``: moving workflows between backends.

The source is a real SQLite store filled the way the runner fills one (every ledger kind,
several commits at different times, artifacts recorded twice); the targets are the
session's PostgreSQL server (skipped, saying why, without one) and the in-memory store,
which the in-process CLI runner shares with the test through its name. The last tests pin
how ``--store`` and ``ORCHESTRATOR_STORE`` choose the store for every command, down to a
whole run, answer and resume on PostgreSQL against the loopback fake LLM.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from orchestrator import composition
from orchestrator.cli import cli
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.running.updates import complete_step, new_workflow
from state.clock import FixedClock
from state.config import Gates, WorkflowConfig
from state.errors import ConcurrencyError
from state.queue import QueueStatus, work_queue
from state.reports import PlanDraft
from state.store import DecisionEntry, EventEntry, LedgerEntryIn, StepResultEntry, Store
from state.store_copy import copy_store

from support.fake_openai import FakeOpenAIServer
from support.world import GOOD_PLAN, World

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


class StepClock:
    """A clock a test moves by hand, so that every commit has a time of its own."""

    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return (self.t - T0).total_seconds()


def _fill(data_dir: Path) -> None:
    """Two workflows with decisions, a step result, events, empty commits and artifacts."""
    clock = StepClock()
    engine = DecisionPipeline(WorkflowMachine(), FixedClock(T0))
    with composition.open_store(data_dir, clock=clock) as store:
        for n, wid in enumerate(("wf-a", "wf-b")):
            config = WorkflowConfig(gates=Gates(code_review=n == 1))
            state = new_workflow(wid, f"requirements {n}", "/ws", T0)
            version = store.create(state, config)
            clock.t += timedelta(seconds=7)
            state, record = engine.decide_by_rule(state, config)
            version = store.commit(
                wid, state, expected_version=version, entries=[DecisionEntry(record)], owner=None
            )
            clock.t += timedelta(seconds=5)
            state = complete_step(state, PlanDraft(version=1, markdown="# Plan"), clock.t)
            entries: list[LedgerEntryIn] = [
                StepResultEntry(state.history[-1]),
                EventEntry("note", {"n": n}),
            ]
            version = store.commit(
                wid, state, expected_version=version, entries=entries, owner=None
            )
            clock.t += timedelta(seconds=3)
            version = store.commit(wid, state, expected_version=version, owner=None)  # no entries
            store.add_artifact(wid, "plan", f"/ws/{wid}/plan_v1.md")
            clock.t += timedelta(seconds=1)
            store.add_artifact(wid, "code", f"/ws/{wid}/step.py")
            store.add_artifact(wid, "plan", f"/ws/{wid}/plan_v1.md")  # again: keeps its place


def _queue_some(data_dir: Path) -> None:
    """wf-a ready (submitted, not yet driven), wf-b parked at its gate with a note."""
    with composition.open_store(data_dir) as store:
        queue = work_queue(store)
        assert queue is not None
        queue.enqueue("wf-a")
        queue.enqueue("wf-b")
        wakeups = {e.workflow_id: e.wakeups for e in queue.queued()}
        queue.settle("wf-b", wakeups["wf-b"], finished=False, note="waits at the plan gate")


def _queue_view(store: Store) -> list[tuple[str, QueueStatus, str | None]]:
    queue = work_queue(store)
    assert queue is not None
    return sorted((e.workflow_id, e.status, e.note) for e in queue.queued())


def _assert_same(source: Store, copy: Store) -> None:
    assert copy.list_workflows() == source.list_workflows()
    for summary in source.list_workflows():
        wid = summary.workflow_id
        ours, theirs = source.load(wid), copy.load(wid)
        assert (theirs.state, theirs.config, theirs.version) == (
            ours.state,
            ours.config,
            ours.version,
        )
        assert copy.ledger(wid) == source.ledger(wid)
        assert copy.artifacts(wid) == source.artifacts(wid)


def _invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def test_migrate_copies_sqlite_into_postgres_and_checks_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """Store migrate --from sqlite:/// --to postgresql:// keeps versions, ledger, snapshots."""
    _fill(tmp_path)
    result = _invoke("store", "migrate", "--from", f"sqlite://{tmp_path}", "--to", postgres_url)
    assert result.exit_code == 0, result.output
    assert "copied and checked 2 workflow(s)" in result.output
    assert "wf-a: version 4, 3 ledger entries, 2 artifacts" in result.output
    with (
        composition.open_store(tmp_path) as source,
        composition.open_store(postgres_url) as copy,
    ):
        _assert_same(source, copy)
        assert [e.seq for e in copy.ledger("wf-b")] == [1, 2, 3]


def test_migrate_copies_sqlite_into_memory(tmp_path: Path) -> None:
    """The same copy into the in-memory store, which the in-process CLI shares by name."""
    _fill(tmp_path)
    target = f"memory://migrate-{uuid.uuid4().hex}"
    result = _invoke("store", "migrate", "--from", str(tmp_path), "--to", target)
    assert result.exit_code == 0, result.output
    with composition.open_store(tmp_path) as source, composition.open_store(target) as copy:
        _assert_same(source, copy)


@pytest.mark.parametrize("backend", ["memory", "postgres"])
def test_migrate_copies_the_work_queue(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A ready workflow stays claimable on the target, a parked one keeps its note."""
    _fill(tmp_path)
    _queue_some(tmp_path)
    target = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else f"memory://migrate-{uuid.uuid4().hex}"
    )
    result = _invoke("store", "migrate", "--from", str(tmp_path), "--to", target)
    assert result.exit_code == 0, result.output
    assert "wf-a: version 4, 3 ledger entries, 2 artifacts, queued ready" in result.output
    assert "wf-b: version 4, 3 ledger entries, 2 artifacts, queued parked" in result.output
    with composition.open_store(tmp_path) as source, composition.open_store(target) as copy:
        expected = [
            ("wf-a", QueueStatus.READY, None),
            ("wf-b", QueueStatus.PARKED, "waits at the plan gate"),
        ]
        assert _queue_view(source) == expected
        assert _queue_view(copy) == expected
        queue = work_queue(copy)
        assert queue is not None
        assert [c.workflow_id for c in queue.claim("worker-1", 60, 10)] == ["wf-a"]


def test_migrate_refuses_a_target_that_holds_the_workflows(tmp_path: Path) -> None:
    """A second migrate into the same store copies nothing and says why in one line (exit 1)."""
    _fill(tmp_path)
    target = f"memory://migrate-{uuid.uuid4().hex}"
    assert _invoke("store", "migrate", "--from", str(tmp_path), "--to", target).exit_code == 0
    again = _invoke("store", "migrate", "--from", str(tmp_path), "--to", target)
    assert again.exit_code == 1
    assert len(again.output.strip().splitlines()) == 1
    assert "already holds 2 of the workflows to copy (wf-a, wf-b); nothing was copied" in (
        again.output
    )


def test_migrate_refuses_a_workflow_that_runs(tmp_path: Path) -> None:
    """A workflow with a live lease is not copied, nor is anything else."""
    _fill(tmp_path)
    with composition.open_store(tmp_path) as source:
        source.acquire_lease("wf-b", "worker-1", 3600)
        target = f"memory://migrate-{uuid.uuid4().hex}"
        with pytest.raises(ConcurrencyError, match="wf-b is being run by worker-1"):
            copy_store(source, lambda clock: composition.open_store(target, clock=clock))
        with composition.open_store(target) as copy:
            assert copy.list_workflows() == []


def test_store_option_and_env_pick_the_store_for_every_command(
    tmp_path: Path, postgres_url: str
) -> None:
    """List reads --store, then ORCHESTRATOR_STORE when no data dir is set; both flags clash."""
    _fill(tmp_path)
    assert _invoke("store", "migrate", "--from", str(tmp_path), "--to", postgres_url).exit_code == 0
    empty = tmp_path / "empty"
    env = {"ORCHESTRATOR_DATA_DIR": str(empty)}
    by_flag = _invoke("list", "--store", postgres_url, env=env)
    assert by_flag.exit_code == 0, by_flag.output
    assert "wf-a" in by_flag.output and "wf-b" in by_flag.output
    by_env = _invoke("list", env={"ORCHESTRATOR_STORE": postgres_url, "ORCHESTRATOR_DATA_DIR": ""})
    assert by_env.exit_code == 0, by_env.output
    assert "wf-a" in by_env.output
    data_dir_wins = _invoke(
        "list", "--data-dir", str(empty), env={"ORCHESTRATOR_STORE": postgres_url}
    )
    assert "wf-a" not in data_dir_wins.output
    both = _invoke("list", "--store", postgres_url, "--data-dir", str(empty))
    assert both.exit_code == 2
    assert "both --store and --data-dir" in both.output


def test_an_unreachable_store_is_one_line_on_stderr(tmp_path: Path) -> None:
    """A --store URL with no server behind it fails at once with one line, no pool chatter."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "list",
            "--store",
            f"postgresql://postgres@/orch?host={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot connect to the PostgreSQL database orch" in lines[0]
    assert "No such file or directory" in lines[0]


def test_a_workflow_runs_is_answered_and_resumes_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    """run, approve and resume work on ORCHESTRATOR_STORE's PostgreSQL store, as on SQLite."""
    world = World(plan_reports=[GOOD_PLAN])
    saved = structlog.get_config()  # the CLI configures structlog for its own stream
    try:
        with FakeOpenAIServer(responder=world.http_responder) as server:
            env = {
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_MODEL": "fake-model",
                "ORCHESTRATOR_STORE": postgres_url,
                "ORCHESTRATOR_DATA_DIR": "",
                "XDG_DATA_HOME": str(tmp_path),  # workspaces go under the default data dir
            }
            ran = _invoke(
                "run", "--requirements", "fill missing values", "--id", "wf-pg",
                "--coordinator", "programmatic", "--no-input", "--quiet", env=env,
            )  # fmt: skip
            assert ran.exit_code == 0, ran.output
            assert "wf-pg waits at the plan gate" in ran.output
            approved = _invoke("approve", "wf-pg", "--gate", "plan", "--as", "fatima", env=env)
            assert approved.exit_code == 0, approved.output
            resumed = _invoke("resume", "wf-pg", "--no-input", "--quiet", env=env)
            assert resumed.exit_code == 0, resumed.output
            assert "waits at the final gate" in resumed.output
    finally:
        structlog.configure(**saved)
    with composition.open_store(postgres_url) as store:
        stored = store.load("wf-pg")
        assert stored.state.waiting_gate is not None
        assert stored.state.waiting_gate.value == "final"
        kinds = [e.kind.value for e in store.ledger("wf-pg")]
        assert "human_answer" in kinds and kinds.count("decision") == len(stored.state.decisions)
        assert store.lease("wf-pg") is None  # released when the run stopped at the gate
    assert not (tmp_path / "hybrid-orchestrator" / "orchestrator.db").exists()
