"""The terminal displays: the live status area, the plain lines, and the run's log file."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result
from rich.console import Console

from agents.base import StepAgents
from agents.planner import PlannerAgent
from agents.programmer import ProgrammerAgent
from agents.validator import ValidatorAgent
from orchestrator.cli import cli
from orchestrator.cli.display import LiveDisplay, ProgressDisplay
from orchestrator.composition import build_coordinator, open_store
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.logsetup import LogTally, logging_to_file
from orchestrator.running.runner import ProgressEvent, ProgressKind, WorkflowRunner
from prompt_templates.loader import TemplateLoader
from state.clock import SystemClock
from state.config import Coordinator, WorkflowConfig
from state.steps import Gate
from state.workflow import WorkflowState

from support.fake_openai import Content, FakeOpenAIServer
from support.world import GOOD_PLAN, World

BORDERLINE = {**GOOD_PLAN, "alignment_score": 9.1}  # near its threshold: the LLM is consulted
AGREE = {"action": "request_plan_approval", "rationale": "ok", "confidence": 0.9}


class Ticks:
    """A monotonic clock the test moves by hand, so elapsed times are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def terminal() -> Console:
    """A recording console that believes it is a colour terminal, wide enough for one line."""
    return Console(file=io.StringIO(), force_terminal=True, width=240, record=True)


def shown(console: Console, renderable: Any) -> str:
    """What ``renderable`` looks like on ``console``'s terminal, as plain text."""
    probe = Console(file=io.StringIO(), force_terminal=True, width=console.width, record=True)
    probe.print(renderable)
    return probe.export_text()


class Snapshots:
    """After each event the display has handled, keeps what its status area shows."""

    def __init__(self, display: LiveDisplay, ticks: Ticks) -> None:
        self.display = display
        self.ticks = ticks
        self.seen: list[tuple[str, str]] = []

    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "step_started":
            self.ticks.now += 65  # the step has been running for 1 min 5 s
        self.seen.append((event.kind, shown(self.display.console, self.display.renderable())))


def runner(tmp_path: Path, world: World, observers: list[Any]) -> WorkflowRunner:
    """A runner over a real SQLite store with the scripted model and the real agents."""
    model = ScriptedChatModel(responder=world)
    templates = TemplateLoader()
    agents = StepAgents(
        planner=PlannerAgent(model, templates),
        validator=ValidatorAgent(
            model, templates, sandbox=Sandbox(SandboxLimits(wall_timeout_s=60))
        ),
        programmer=ProgrammerAgent(model, templates),
    )
    store = open_store(tmp_path / "data")
    return WorkflowRunner(
        store,
        build_coordinator(model),
        agents,
        clock=SystemClock(),
        observers=observers,
    )


async def drive(tmp_path: Path, observers: list[Any]) -> WorkflowState:
    """Run a hybrid workflow whose plan is borderline (one LLM decision) to the plan gate."""
    service = runner(tmp_path, World(plan_reports=[BORDERLINE], decisions=[AGREE]), observers)
    config = WorkflowConfig(coordinator=Coordinator.HYBRID)
    wid = service.create("fill missing values", config, workspace_root=tmp_path / "ws").workflow_id
    try:
        return await service.run(wid)
    finally:
        service.store.close()


async def test_the_live_area_shows_step_spinner_elapsed_decisions_tokens_scores(
    tmp_path: Path,
) -> None:
    """While a step runs: its name, a spinner and elapsed time; then decisions, tokens, scores."""
    console, ticks = terminal(), Ticks()
    display = LiveDisplay(console, get_time=ticks)
    snaps = Snapshots(display, ticks)
    with display:
        state = await drive(tmp_path, [display, snaps])
    assert state.waiting_gate is Gate.PLAN
    kinds = [k for k, _ in snaps.seen]
    running = snaps.seen[kinds.index("step_started")][1]
    assert "step 1 initial planning (planner) attempt 1" in running
    assert "0:01:05" in running  # elapsed, from the display's clock
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]", running), running  # the spinner
    after_step = snaps.seen[kinds.index("step_finished")][1]
    assert "step 1 initial" not in after_step
    assert "deciding decision #2 " in after_step  # waiting on the next decision: a spinner too
    last = snaps.seen[-1][1]
    assert last.splitlines()[0].startswith("decisions ")  # nothing in flight at the gate
    c = state.counters
    assert f"LLM {c.llm_calls} calls, {c.prompt_tokens + c.completion_tokens:,} tokens" in last
    planner = c.llm_usage.planner
    assert f"planner {planner.calls}/{planner.tokens:,}" in last
    assert f"decision {c.llm_usage.decision.calls}/" in last
    sources = {r.source.value for r in state.decisions}
    assert "reconciled_agree" in sources or "llm" in sources
    assert f"decisions {len(state.decisions)} (" in last
    for source in sources:
        assert source in last.split("decisions", 1)[1].splitlines()[0]
    assert "last validation: step 2 attempt 1: alignment 9.1/" in last
    # The history scrolled above the area: finished steps and decisions, then the gate.
    history = console.export_text()
    assert "step 1 done" in history and "decision #1" in history
    assert "waiting for a human at the plan gate" in history


async def test_the_live_area_counts_warnings_and_names_the_log(tmp_path: Path) -> None:
    """Warnings logged during the run show as one line with the log file, not their text."""
    console = terminal()
    with logging_to_file(tmp_path / "logs" / "wf.log") as tally:
        display = LiveDisplay(console, tally=tally)
        with display:
            structlog.get_logger().warning("llm.output.bad", detail="line one\nline two")
            structlog.get_logger().warning("llm.output.bad", detail="again")
            await drive(tmp_path, [display])
        area = shown(console, display.renderable())
    assert f"2 warnings, see {tmp_path / 'logs' / 'wf.log'}" in area
    assert "line one" not in console.export_text() and "line one" not in area


async def test_the_plain_display_prints_one_line_per_event(tmp_path: Path) -> None:
    """Without a terminal: the step and decision markers other tools read, no cursor codes."""
    out = io.StringIO()
    state = await drive(tmp_path, [ProgressDisplay(Console(file=out, highlight=False))])
    text = out.getvalue()
    assert "step 1 initial planning (planner) attempt 1 ..." in text
    assert "decision #1 " in text and f"decision #{len(state.decisions)} " in text
    assert "step 2 done: alignment 9.1/" in text
    assert "\x1b" not in text


async def test_an_environment_build_shows_under_the_running_step(tmp_path: Path) -> None:
    """Its latest line stands under the spinner until the step ends; plain lines print each."""
    state = await drive(tmp_path, [])
    config, rec = WorkflowConfig(), state.history[0]
    console = terminal()
    display = LiveDisplay(console, get_time=Ticks())
    out = io.StringIO()
    plain = ProgressDisplay(Console(file=out, highlight=False))

    def event(kind: ProgressKind, detail: str | None = None) -> ProgressEvent:
        return ProgressEvent(kind, state, config, step=rec, detail=detail)

    with display:
        for e in (
            event(ProgressKind.STEP_STARTED),
            event(ProgressKind.STEP_PROGRESS, "building the project environment from r.txt"),
            event(ProgressKind.STEP_PROGRESS, "Collecting pandas [red]x[/red]"),
        ):
            display.on_event(e)
            plain.on_event(e)
        area = shown(console, display.renderable())
        display.on_event(event(ProgressKind.STEP_FINISHED))
        after = shown(console, display.renderable())
    assert "step 1 initial planning (planner) attempt 1" in area
    assert "Collecting pandas [red]x[/red]" in area  # the latest line, markup left as text
    assert "building the project" not in area
    assert "Collecting pandas" not in after
    text = out.getvalue()
    assert "step 1 building the project environment from r.txt" in text
    assert "step 1 Collecting pandas [red]x[/red]" in text


def test_logging_to_file_keeps_warnings_off_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inside the block events go to the file (created on first use) and are counted."""
    path = tmp_path / "logs" / "wf.log"
    with logging_to_file(path, "json") as tally:
        assert not path.exists()  # nothing logged yet: no file
        structlog.get_logger().info("below.the.level")
        structlog.get_logger().warning("multi.line", detail="a\nb")
        structlog.get_logger().error("worse")
    assert tally.warnings == 2
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [e["event"] for e in events] == ["multi.line", "worse"]
    assert events[0]["detail"] == "a\nb"
    assert capsys.readouterr() == ("", "")
    assert (path.parent.stat().st_mode & 0o077) == 0  # the folder is private like the data dir


def truncating(world: World) -> Any:
    """The world's answers, each reported cut off at the token limit (logged warnings)."""

    def reply(body: dict[str, Any]) -> Content:
        return Content(world.http_responder(body).text, finish_reason="length")

    return reply


def run_cli(tmp_path: Path, *extra: str) -> tuple[Result, Path]:
    world = World(plan_reports=[GOOD_PLAN])
    with FakeOpenAIServer(responder=truncating(world)) as srv:
        env = {
            "OPENAI_BASE_URL": srv.base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
            "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
        }
        args = ["run", "-r", "fill missing values", "--id", "wf-log", "--no-input", *extra]
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result, tmp_path / "data" / "logs" / "wf-log.log"


def test_run_puts_warnings_in_the_log_file_and_one_line_on_screen(tmp_path: Path) -> None:
    """run: the warnings are in DATA_DIR/logs/ID.log; stderr has progress and one summary."""
    result, log = run_cli(tmp_path, "--coordinator", "programmatic")
    assert result.exit_code == 0, result.output
    logged = log.read_text(encoding="utf-8").splitlines()
    assert "llm.output.invalid" in logged[0]  # the truncated answers, with their raw text
    n = sum("[warning" in line for line in logged)
    assert n == len(logged) > 1  # one line per event, all of them warnings
    assert "llm.output.invalid" not in result.stderr and "raw text" not in result.stderr
    assert f"{n} warnings, see {log}" in result.stderr
    assert "step 1 initial planning" in result.stderr  # plain progress, not a terminal


def test_quiet_run_stays_quiet_and_still_logs(tmp_path: Path) -> None:
    """Run --quiet: no progress and no summary line; the log file has the warnings."""
    result, log = run_cli(tmp_path, "--coordinator", "programmatic", "--quiet")
    assert result.exit_code == 0, result.output
    assert "llm.output.invalid" in log.read_text(encoding="utf-8")
    assert "warning" not in result.stderr and "step 1" not in result.stderr


def test_a_tally_without_warnings_says_nothing(tmp_path: Path) -> None:
    """No warnings: no summary line and no log file."""
    tally = LogTally(tmp_path / "x.log")
    display = LiveDisplay(terminal(), tally=tally)
    assert "warning" not in shown(display.console, display.renderable())
    assert not tally.path.exists()
