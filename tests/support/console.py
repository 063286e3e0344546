"""Helpers for the web console's tests: stored workflows at a gate, a real server thread."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.web.server import ConsoleServer
from orchestrator.web.service import ConsoleService, RunLauncher
from state.clock import FixedClock
from state.config import WorkflowConfig
from state.examples import BAD_PLAN, plan_draft, plan_report
from state.store import Store
from state.workflow import WorkflowState

from builders import Driver
from support.fake_openai import FakeOpenAIServer


def plan_gate_state(workflow_id: str, workspace: Path, *, revised: bool = True) -> WorkflowState:
    """A workflow whose plan failed once, was revised, passed, and waits at the plan gate.

    ``revised=False``: it passed at once, so it reached the gate earlier.
    """
    d = Driver(workflow_id=workflow_id)
    d.run_step(plan_draft(1, "# plan v1"))
    if revised:
        d.run_step(BAD_PLAN)
        d.run_step(plan_draft(2, "# plan v2"))
    d.run_step(plan_report())
    state = d.decide()
    assert state.waiting_gate is not None, state.machine_state
    return state.model_copy(update={"workspace": str(workspace)})


def store_waiting(
    store: Store, workflow_id: str, root: Path, *, revised: bool = True
) -> WorkflowState:
    """Store a plan-gate workflow with a plan file in its workspace, recorded as artifact."""
    workspace = root / workflow_id
    (workspace / "plans").mkdir(parents=True, exist_ok=True)
    (workspace / "plans" / "plan_v2.md").write_text("# plan v2\n", encoding="utf-8")
    state = plan_gate_state(workflow_id, workspace, revised=revised)
    store.create(state, WorkflowConfig())
    store.add_artifact(workflow_id, "plan_v2", "plans/plan_v2.md")
    return state


def make_service(store: Store, root: Path, launcher: RunLauncher | None = None) -> ConsoleService:
    """A console service over ``store`` with a fixed clock and predictable new ids."""
    counter = iter(range(1, 1_000_000))
    return ConsoleService(
        store,
        # A day after the workflows' own clock: waiting times are positive.
        FixedClock(start=datetime(2026, 1, 2, tzinfo=UTC)),
        launcher=launcher,
        workspace_root=root,
        new_id=lambda: f"wf-web-{next(counter)}",
    )


def run_to_plan_gate(
    data: Path, llm: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, wid: str = "wf-web"
) -> None:
    """Run a new workflow with ``orchestrator run`` against ``llm`` to the plan gate."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    saved = structlog.get_config()
    try:
        result = CliRunner().invoke(
            cli,
            [
                "run",
                "-r",
                "fill missing values in a table",
                "--id",
                wid,
                "--coordinator",
                "programmatic",
                "--no-input",
                "--quiet",
                "--base-url",
                llm.base_url,
                "--model",
                "fake-model",
                "--data-dir",
                str(data),
            ],
            catch_exceptions=False,
        )
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 0, result.output


class ServerThread:
    """The console's real server (``ConsoleServer``) for ``app`` on a free loopback port.

    It runs in a daemon thread; ``stop`` (or leaving the ``with``) shuts it down as
    ``orchestrator serve`` does, ending the open event streams first.
    """

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._server = ConsoleServer(app, grace_s=1)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        while not self._server.started:  # startup, not a timing assertion
            if not self._thread.is_alive():
                raise RuntimeError("the console server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Shut the server down and wait for its thread (again: nothing happens)."""
        self._server.should_exit = True
        self._thread.join(timeout=15)
        if self._thread.is_alive():
            raise RuntimeError("the console server did not stop within 15 s")
        self._sock.close()
