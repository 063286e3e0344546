"""A whole workflow on the real local model: SmolLM2-135M on llama.cpp, real agents and store.

The model is tiny and its plans, reviews and routing choices are often wrong. The test pins
what must hold whatever it writes: the runner reaches a terminal or waiting state within
the configured limits, every decision it took was legal where it was taken and is logged
with its source, and the recorded workflow is consistent with the rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator.composition import build_agents, build_coordinator, open_store
from orchestrator.deciding.actions import trigger_of
from orchestrator.execution.sandbox import SandboxLimits
from orchestrator.running.consistency import find_inconsistency
from orchestrator.running.runner import WorkflowRunner
from state.clock import SystemClock
from state.config import Coordinator, Limits, LLMSettings, WorkflowConfig
from state.steps import GATE_OF_STATE, TERMINAL_STATES
from state.store import LedgerKind, Store
from state.workflow import StepStatus

pytestmark = [pytest.mark.real_llm, pytest.mark.slow]

# Tight limits keep the run short: one revision, one refinement, a dozen decisions. Generous
# timeouts: the model is slow when the machine is shared, and this test pins legality, not speed.
CONFIG = WorkflowConfig(
    coordinator=Coordinator.HYBRID,
    limits=Limits(
        max_plan_revisions=1,
        max_code_refinements=1,
        max_decisions=12,
        max_step_retries=1,
        step_timeout_s=400,
    ),
    llm=LLMSettings(call_timeout_s=180, decision_deadline_s=400, max_attempts=1),
)
WAITING_OR_DONE = GATE_OF_STATE.keys() | TERMINAL_STATES


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "data") as s:
        yield s


async def test_whole_workflow_on_the_local_model_is_legal_and_logged(
    local_llm: Any, store: Store, tmp_path: Path
) -> None:
    """A whole workflow on SmolLM2 ends or waits, every decision legal, chained and logged."""
    async with local_llm.chat_model(timeout_s=180, deadline_s=400) as model:
        service = WorkflowRunner(
            store,
            build_coordinator(model),
            build_agents(model, compact=True, sandbox_limits=SandboxLimits(wall_timeout_s=120)),
            clock=SystemClock(),
            human=None,  # nobody at the gates: the runner must stop there and wait
        )
        created = service.create(
            "Write a Python function mean(xs) that returns the arithmetic mean of a list of "
            "numbers and raises ValueError on an empty list, with pytest tests.",
            CONFIG,
            workspace_root=tmp_path / "workspaces",
        )
        with capture_logs() as logs:
            final = await service.run(created.workflow_id)

    assert final.machine_state in WAITING_OR_DONE, final.machine_state
    assert find_inconsistency(final, CONFIG) is None
    records = final.decisions
    assert 1 <= len(records) <= CONFIG.limits.max_decisions + 1  # + the limit's escalation
    for before, after in pairwise(records):
        assert before.state_after == after.state_before, (before.seq, after.seq)
    for rec in records:
        # Legal where it was taken: the machine offered it, and the coordinator recorded it.
        assert trigger_of(rec.decision) in rec.legal_actions, (rec.seq, rec.decision)
        if rec.llm is not None and rec.llm.attempts == 0:
            # Not asked: a forced move (one legal action), recorded as such.
            assert rec.llm.outcome == "not_needed" and len(rec.legal_actions) == 1
        elif rec.llm is not None:
            assert rec.llm.model and rec.llm.outcome != "not_needed"

    made = [e for e in logs if e["event"] == "decision.made"]
    assert [e["seq"] for e in made] == [r.seq for r in records]
    assert [e["source"] for e in made] == [r.source.value for r in records]

    # The agents really ran on the model: a plan was written and its step recorded.
    steps = final.history
    assert steps and steps[0].status in (StepStatus.COMPLETED, StepStatus.FAILED)
    assert all(s.status is not StepStatus.RUNNING for s in steps)
    decisions = store.ledger(created.workflow_id, kinds={LedgerKind.DECISION})
    assert len(decisions) == len(records)
