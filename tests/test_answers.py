"""What a human can say: reject ends the workflow at once; accept takes unconverged work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import cli
from orchestrator.composition import build_coordinator, open_store
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.runner import answer_workflow
from state.clock import FixedClock
from state.config import Coordinator, Gates, WorkflowConfig
from state.decision import ActionKind, DecisionSource
from state.errors import HumanAnswerError
from state.reports import CodeChange, PlanDraft
from state.steps import Gate, MachineState, WorkflowStatus
from state.store import LedgerKind, Store
from state.workflow import HumanAnswerKind

from builders import BAD_CODE, BAD_PLAN, Driver

PLAN = PlanDraft(version=1, markdown="# plan")
CODE = CodeChange(files=("prep.py",))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "data") as s:
        yield s


def at_plan_gate() -> Driver:
    d = Driver()
    d.to_plan_gate()
    return d


def plan_escalated(config: WorkflowConfig | None = None) -> Driver:
    """A workflow escalated because its plan did not converge within the revision limit."""
    d = Driver(config)
    d.run_step(PLAN)
    d.run_step(BAD_PLAN)
    for _ in range(d.config.limits.max_plan_revisions):
        d.run_step(PLAN)
        d.run_step(BAD_PLAN)
    d.decide()
    assert d.state.machine_state is MachineState.ESCALATED
    return d


def code_escalated(config: WorkflowConfig | None = None) -> Driver:
    """A workflow escalated because its code did not converge within the refinement limit."""
    d = Driver(config)
    d.to_phase2()
    d.run_step(BAD_CODE)
    for _ in range(d.config.limits.max_code_refinements):
        d.run_step(CODE)
        d.run_step(BAD_CODE)
    d.decide()
    assert d.state.machine_state is MachineState.ESCALATED
    return d


def stored(store: Store, d: Driver) -> str:
    store.create(d.state, d.config)
    return d.state.workflow_id


def test_reject_ends_the_workflow_in_the_same_commit(store: Store) -> None:
    """Recording a rejection also applies it: rejected, with its decision, one commit."""
    wid = stored(store, at_plan_gate())
    version = store.load(wid).version
    state = answer_workflow(
        store, FixedClock(), wid, Gate.PLAN, HumanAnswerKind.REJECT, by="bob", comment="no"
    )
    loaded = store.load(wid)
    assert state.status is WorkflowStatus.REJECTED
    assert loaded.state == state and loaded.version == version + 1
    rec = state.decisions[-1]
    assert rec.decision.action is ActionKind.REJECT and rec.source is DecisionSource.HUMAN
    kinds = [e.kind for e in store.ledger(wid)][-2:]
    assert kinds == [LedgerKind.HUMAN_ANSWER, LedgerKind.DECISION]


def test_other_answers_wait_for_resume(store: Store) -> None:
    """An approval is recorded and nothing else: the workflow still waits at its gate."""
    wid = stored(store, at_plan_gate())
    state = answer_workflow(store, FixedClock(), wid, None, HumanAnswerKind.APPROVE, by="dana")
    assert state.machine_state is MachineState.AWAITING_PLAN_APPROVAL
    assert state.pending_answer is not None


@pytest.mark.parametrize("mode", list(Coordinator))
async def test_accept_is_decided_by_the_machine_in_every_mode(
    mode: Coordinator, tmp_path: Path
) -> None:
    """An accepted escalation is the machine's move for the human; no LLM or script is asked."""
    script = tmp_path / "decide.py"
    script.write_text("def decide(ctx):\n    raise RuntimeError('must not be asked')\n")
    config = WorkflowConfig(coordinator=mode, coordinator_script=str(script))
    d = plan_escalated(config)
    d.answer(HumanAnswerKind.ACCEPT)
    model = ScriptedChatModel()  # no replies: any call would fail
    state, rec = await build_coordinator(model, clock=FixedClock()).decide(d.state, d.config)
    assert model.calls == []
    assert rec.source is DecisionSource.HUMAN and rec.llm is None
    assert rec.decision.action is ActionKind.TRANSITION_PHASE
    assert "overriding convergence" in rec.decision.rationale
    assert state.machine_state is MachineState.IMPLEMENTATION


@pytest.mark.parametrize(
    ("final", "after"),
    [(True, MachineState.AWAITING_FINAL_APPROVAL), (False, MachineState.COMPLETED)],
)
def test_accepted_code_goes_to_the_final_gate_or_completes(
    final: bool, after: MachineState
) -> None:
    """Unconverged code that a human accepts goes to the final gate, or completes without it."""
    d = code_escalated(WorkflowConfig(gates=Gates(final=final)))
    d.answer(HumanAnswerKind.ACCEPT)
    assert d.decide().machine_state is after


def test_accept_is_refused_outside_an_escalation(store: Store) -> None:
    """Accept at the plan gate records nothing and says what to answer instead."""
    wid = stored(store, at_plan_gate())
    with pytest.raises(HumanAnswerError, match="approve, reject or request-changes"):
        answer_workflow(store, FixedClock(), wid, None, HumanAnswerKind.ACCEPT, by="eve")
    assert store.load(wid).state.human_answers == ()


def _cli(data: Path, *args: str) -> Result:
    env = {"ORCHESTRATOR_DATA_DIR": str(data)}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_accept_at_an_escalation(tmp_path: Path) -> None:
    """Orchestrator accept records the answer at the escalation gate."""
    data = tmp_path / "data"
    with open_store(data) as s:
        wid = stored(s, plan_escalated())
    result = _cli(data, "accept", wid, "--comment", "good enough", "--as", "ann")
    assert result.exit_code == 0, result.output
    assert "accept recorded at the escalation gate by ann" in result.output
    with open_store(data) as s:
        answer = s.load(wid).state.human_answers[-1]
    assert answer.answer is HumanAnswerKind.ACCEPT and answer.comment == "good enough"


def test_cli_accept_elsewhere_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Accept at the plan gate: one line on stderr, exit 2, nothing recorded."""
    data = tmp_path / "data"
    with open_store(data) as s:
        wid = stored(s, at_plan_gate())
    result = CliRunner().invoke(
        cli, ["accept", wid], env={"ORCHESTRATOR_DATA_DIR": str(data)}, catch_exceptions=False
    )
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "accept answers an escalation only" in result.stderr


def test_cli_reject_says_the_workflow_ended(tmp_path: Path) -> None:
    """Orchestrator reject ends the workflow without a resume."""
    data = tmp_path / "data"
    with open_store(data) as s:
        wid = stored(s, at_plan_gate())
    result = _cli(data, "reject", wid, "--comment", "wrong scope")
    assert result.exit_code == 0, result.output
    assert f"{wid} rejected" in result.output
    with open_store(data) as s:
        assert s.load(wid).state.status is WorkflowStatus.REJECTED


def _ask_in_terminal(d: Driver, gate: Gate, typed: str) -> tuple[object, str]:
    """What ``TerminalHuman`` returns, and what it printed, when ``typed`` is entered."""
    from orchestrator.cli.display import TerminalHuman  # noqa: PLC0415 -- the CLI layer

    runner = CliRunner()
    with runner.isolation(input=typed) as streams:
        answer = TerminalHuman("ana")._ask(d.state, gate)
    return answer, streams[1].getvalue().decode()


def test_the_terminal_offers_accept_at_an_escalation() -> None:
    """At an escalation with work to accept, the interactive prompt offers and records accept."""
    d = plan_escalated()
    answer, shown = _ask_in_terminal(d, Gate.ESCALATION, "p\nlooks fine\n")
    assert "acce[p]t as it stands" in shown
    assert answer is not None
    assert answer.answer is HumanAnswerKind.ACCEPT  # type: ignore[attr-defined]
    assert answer.comment == "looks fine"  # type: ignore[attr-defined]


def test_the_terminal_does_not_offer_accept_at_other_gates() -> None:
    """At the plan gate accept is neither offered nor taken (the prompt refuses 'p')."""
    d = at_plan_gate()
    answer, shown = _ask_in_terminal(d, Gate.PLAN, "p\nl\n")
    assert "acce[p]t" not in shown
    assert answer is None  # 'p' was refused, then 'l' (later) was taken
