"""Kill real workflow processes with SIGKILL at each boundary, then resume them.

The LLM is a loopback OpenAI-compatible server in this test process (the scripted world),
so a step can be made slow enough to kill the process in the middle of it.
"""

from __future__ import annotations

import json
import os
import pty
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.composition import open_store
from orchestrator.running.consistency import find_inconsistency
from state.steps import Gate
from state.store import DecisionEntry, LedgerKind
from state.workflow import StepStatus

from support.fake_openai import Content, Delay, FakeOpenAIServer, Reply
from support.world import GOOD_PLAN, World

pytestmark = pytest.mark.slow

CONFIG = "coordinator: programmatic\n"


class SlowWorld:
    """The scripted world, with chosen purposes answered slowly (to kill mid-call)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.slow: dict[str, float] = {}
        self.calls: Counter[str] = Counter()

    def __call__(self, body: dict[str, Any]) -> Reply:
        text = self.world.http_responder(body).text
        purpose = self.world.requests[-1].purpose
        self.calls[purpose] += 1
        delay = self.slow.get(purpose)
        return Delay(delay, Content(text)) if delay else Content(text)


@pytest.fixture
def world() -> SlowWorld:
    return SlowWorld(World(plan_reports=[GOOD_PLAN]))


@pytest.fixture
def server(world: SlowWorld) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=world) as srv:
        yield srv


@pytest.fixture
def env(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, str]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
        "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
        "NO_COLOR": "1",
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def start_run(env: dict[str, str], tmp_path: Path, wid: str = "wf-kill") -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli(
            "run",
            "--requirements",
            "fill missing values",
            "--id",
            wid,
            "--no-input",
            "--config",
            str(tmp_path / "config.yaml"),
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen[str], marker: str, timeout: float = 60.0) -> str:
    """Read the process's progress (stderr) until it contains ``marker``.

    Raw reads from the file descriptor: a buffered reader could hold the marker line back
    while ``select`` reports nothing new.
    """
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            if marker.encode() in seen:
                return seen.decode(errors="replace")
    kill(proc)
    raise AssertionError(f"never saw {marker!r}; output:\n{seen.decode(errors='replace')}")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes its pipes


def resume(env: dict[str, str], wid: str = "wf-kill") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("resume", wid, "--no-input"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_invariants(tmp_path: Path, wid: str = "wf-kill") -> Any:
    """Nothing lost, nothing run twice, everything consistent."""
    with open_store(tmp_path / "data") as store:
        stored = store.load(wid)
        ledger = store.ledger(wid)
    state = stored.state
    assert find_inconsistency(state, stored.config) is None
    decisions = [e.content.record for e in ledger if isinstance(e.content, DecisionEntry)]
    assert [d.seq for d in decisions] == list(range(1, len(state.decisions) + 1))
    assert decisions == list(state.decisions)  # the ledger and the snapshot agree
    # A step that completed never ran again (retries only follow failures).
    for prev, rec in zip(state.history, state.history[1:], strict=False):
        if rec.step is prev.step and prev.status is StepStatus.COMPLETED:
            assert rec.step.value in (3, 6), f"step {rec.step} ran again after completing"
    return state, ledger


def test_kill_during_an_agent_call(env: dict[str, str], tmp_path: Path, world: SlowWorld) -> None:
    """Killed mid-call: the resumed run records the interruption, retries it, and goes on."""
    world.slow["step1_initial_planner"] = 30.0
    proc = start_run(env, tmp_path)
    wait_for(proc, "step 1 initial planning")
    time.sleep(0.5)  # inside the slow LLM call
    kill(proc)
    world.slow.clear()
    done = resume(env)
    assert done.returncode == 0, done.stderr
    assert "interrupted" in done.stderr
    state, ledger = check_invariants(tmp_path)
    assert state.waiting_gate is Gate.PLAN
    first = state.history[0]
    assert first.status is StepStatus.FAILED and first.error is not None
    assert first.error.type == "interrupted"
    assert state.decisions[1].decision.action.value == "retry_step"
    events = [e.content.event for e in ledger if e.kind is LedgerKind.EVENT]
    # The interrupted step is retried with backoff, whose wait is recorded.
    assert events == ["step_interrupted", "step_backoff"]


def test_kill_right_after_a_decision_commit(
    env: dict[str, str], tmp_path: Path, world: SlowWorld
) -> None:
    """Killed as soon as decision #2 is committed: it is kept, not taken twice."""
    world.slow["step2_plan_validator"] = 30.0
    proc = start_run(env, tmp_path)
    wait_for(proc, "decision #2")
    kill(proc)
    with open_store(tmp_path / "data") as store:
        assert len(store.load("wf-kill").state.decisions) == 2
    world.slow.clear()
    done = resume(env)
    assert done.returncode == 0, done.stderr
    state, _ = check_invariants(tmp_path)
    assert state.waiting_gate is Gate.PLAN
    assert state.decisions[1].decision.step is not None and state.decisions[1].decision.step == 2
    assert world.calls["step1_initial_planner"] == 1  # the completed step 1 never ran again


def test_kill_while_waiting_at_a_gate(env: dict[str, str], tmp_path: Path) -> None:
    """Killed at an interactive gate prompt: answered later from another process, it goes on."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cli(
            "run",
            "--requirements",
            "fill missing values",
            "--id",
            "wf-kill",
            "--config",
            str(tmp_path / "config.yaml"),
        ),
        env=env,
        stdin=slave,
        stderr=slave,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    os.close(slave)
    buf = b""
    deadline = time.monotonic() + 60
    while b"[a]pprove" not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                buf += os.read(master, 4096)
            except OSError:
                break
    assert b"[a]pprove" in buf, buf.decode(errors="replace")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    os.close(master)
    state, _ = check_invariants(tmp_path)
    assert state.waiting_gate is Gate.PLAN
    answered = subprocess.run(
        cli("approve", "wf-kill", "--as", "erin", "--comment", "ok"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answered.returncode == 0, answered.stderr
    done = resume(env)
    assert done.returncode == 0, done.stderr
    state, _ = check_invariants(tmp_path)
    assert state.waiting_gate is Gate.FINAL  # plan approved, code written and validated
    assert state.human_answers[0].by == "erin"


def test_kill_at_random_points(env: dict[str, str], tmp_path: Path, world: SlowWorld) -> None:
    """Whenever the process dies, resuming reaches the same gate with nothing lost."""
    rng = random.Random(7)
    for i in range(4):
        wid = f"wf-random-{i}"
        world.slow = {"step2_plan_validator": 0.3, "step1_initial_planner": 0.3}
        proc = start_run(env, tmp_path, wid)
        wait_for(proc, "decision #1")
        time.sleep(rng.uniform(0.0, 1.0))
        kill(proc)
        world.slow.clear()
        done = resume(env, wid)
        assert done.returncode == 0, done.stderr
        state, _ = check_invariants(tmp_path, wid)
        assert state.waiting_gate is Gate.PLAN


def test_two_resumers_one_proceeds(env: dict[str, str], tmp_path: Path, world: SlowWorld) -> None:
    """Two processes resuming one workflow: one runs, the other is refused clearly."""
    world.slow["step1_initial_planner"] = 30.0
    first = start_run(env, tmp_path)
    wait_for(first, "step 1 initial planning")
    second = resume(env)
    assert second.returncode == 1
    assert "being run by" in second.stderr and "Traceback" not in second.stderr
    kill(first)
    world.slow.clear()
    assert resume(env).returncode == 0  # the dead holder's lease is taken over at once


def test_export_is_the_whole_ledger(env: dict[str, str], tmp_path: Path) -> None:
    """Export prints every ledger entry as one JSON object per line."""
    proc = start_run(env, tmp_path)
    _, run_err = proc.communicate(timeout=60)
    assert proc.returncode == 0, run_err
    out = subprocess.run(
        cli("export", "wf-kill"), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert {e["kind"] for e in lines} == {"decision", "step_result"}
