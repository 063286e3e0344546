"""Per-state routing: ``routing:`` sets the coordinator of one machine state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.composition import build_coordinator
from orchestrator.llm.protocol import LLMRequest
from orchestrator.llm.scripted import ScriptedChatModel
from state.clock import FixedClock
from state.config import Coordinator, dump_config, load_config, parse_config
from state.decision import DecisionSource, Routing
from state.errors import ConfigError
from state.steps import MachineState

from builders import Driver, plan_draft, plan_report


def first_legal(request: LLMRequest) -> dict[str, Any]:
    """A decision naming the first action the schema allows."""
    assert request.json_schema is not None
    action = request.json_schema["properties"]["action"]["enum"][0]
    return {"action": action, "rationale": "first", "confidence": 0.95}


def test_routing_reads_states_and_modes_from_yaml(tmp_path: Path) -> None:
    """A ``routing:`` block is read from YAML, and written back to an equal config."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "routing:\n  plan_validation: programmatic\n  code_validation: llm\n", encoding="utf-8"
    )
    config = load_config(path)
    assert config.routing == {
        MachineState.PLAN_VALIDATION: Coordinator.PROGRAMMATIC,
        MachineState.CODE_VALIDATION: Coordinator.LLM,
    }
    assert config.coordinator_for(MachineState.CODE_VALIDATION) == (Coordinator.LLM, True)
    assert config.coordinator_for(MachineState.NEW) == (Coordinator.HYBRID, False)
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config), encoding="utf-8")
    assert load_config(again) == config


@pytest.mark.parametrize(
    ("routing", "words"),
    [
        ({"plan_validaton": "llm"}, ["'plan_validaton' is not a machine state", "plan_validation"]),
        ({"plan_validation": "rules"}, ["'rules' is not a coordinator", "programmatic"]),
        ({"plan_validation": "script"}, ["coordinator_script"]),
        ("llm", ["routing"]),
    ],
)
def test_bad_routing_is_refused_with_the_valid_values(routing: object, words: list[str]) -> None:
    """An unknown state or mode is refused, naming the valid ones; a script needs its file."""
    with pytest.raises(ConfigError) as err:
        parse_config({"routing": routing})
    for word in words:
        assert word in str(err.value)


def test_shadow_true_is_short_for_enabled() -> None:
    """``shadow: true`` switches shadow mode on with the default call budget."""
    config = parse_config({"shadow": True})
    assert config.shadow.enabled and config.shadow.max_calls == 20
    assert parse_config({"shadow": {"enabled": True, "max_calls": 3}}).shadow.max_calls == 3
    with pytest.raises(ConfigError):
        parse_config({"shadow": "yes"})


async def test_a_state_routed_to_the_llm_asks_it_on_a_standard_state() -> None:
    """``plan_validation: llm`` asks the LLM there although the route is standard."""
    config = parse_config({"routing": {"plan_validation": "llm"}})
    d = Driver(config)
    d.run_step(plan_draft())
    d.run_step(plan_report())
    model = ScriptedChatModel(responder=first_legal)
    _, rec = await build_coordinator(model, clock=FixedClock()).decide(d.state, config)
    assert len(model.calls) == 1
    assert rec.source is DecisionSource.LLM
    assert rec.routing == Routing(coordinator="llm", per_state=True)


async def test_a_state_routed_to_the_rules_never_asks_the_llm() -> None:
    """``plan_validation: programmatic`` keeps the LLM out of an anomalous (complex) report."""
    config = parse_config({"coordinator": "llm", "routing": {"plan_validation": "programmatic"}})
    d = Driver(config)
    d.run_step(plan_draft())
    d.run_step(plan_report(s=None, markdown="no score"))
    model = ScriptedChatModel()  # any call fails the test
    _, rec = await build_coordinator(model, clock=FixedClock()).decide(d.state, config)
    assert rec.source is DecisionSource.PROGRAMMATIC
    assert rec.routing == Routing(coordinator="programmatic", per_state=True)
    # Elsewhere the workflow-wide coordinator applies, and the record says so.
    fresh = Driver(config)
    _, first = await build_coordinator(
        ScriptedChatModel(responder=first_legal), clock=FixedClock()
    ).decide(fresh.state, config)
    assert first.routing == Routing(coordinator="llm", per_state=False)


def test_decisions_by_rule_record_their_routing() -> None:
    """The rules' path records the routing that applied too."""
    d = Driver(parse_config({"routing": {"new": "programmatic"}}))
    d.decide()
    assert d.state.decisions[-1].routing == Routing(coordinator="programmatic", per_state=True)
