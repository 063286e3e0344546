"""``state.build``: fast construction and copying give exactly what ``model_validate`` gives."""

from __future__ import annotations

import gc
import inspect
import tracemalloc
from datetime import UTC, datetime
from typing import Any, get_type_hints

import pytest
from pydantic import BaseModel, ValidationError

from state.build import TYPED_BUILDERS, build, builder, replace
from state.decision import (
    ActionKind,
    Decision,
    DecisionRecord,
    DecisionSource,
    LLMCallInfo,
    Route,
    Routing,
    Signal,
)
from state.reports import PlanDraft
from state.steps import Agent, MachineState, Step
from state.usage import Usage
from state.workflow import IterationCounters, StepError, StepRecord, StepStatus, WorkflowState

from builders import BAD_PLAN, Driver, code_report

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fields_of(obj: BaseModel) -> dict[str, Any]:
    """Every field of ``obj`` with its value, in declaration order."""
    return {name: getattr(obj, name) for name in type(obj).model_fields}


def driven_state() -> WorkflowState:
    """A realistic state: a plan revised once, its validation running, decisions recorded."""
    d = Driver()
    d.run_step(PlanDraft(version=1, markdown="# plan"))
    d.run_step(BAD_PLAN)
    d.run_step(PlanDraft(version=2, markdown="# plan v2"))
    return d.decide()


LLM_RECORD_VALUES: dict[str, Any] = {
    "seq": 3,
    "decided_at": T0,
    "decision": Decision(
        action=ActionKind.INVOKE_AGENT,
        step=Step.PLAN_REVISION,
        agent=Agent.PLANNER,
        templates=("step3_revision_planner",),
        change_requests=("add a data-quality section",),
        rationale="the plan misses validation of nulls",
        confidence=0.82,
    ),
    "source": DecisionSource.LLM_OVERRIDE,
    "route": Route.BORDERLINE,
    "signals": (Signal(name="near_threshold", route=Route.BORDERLINE, detail="a 8.9 vs 9"),),
    "legal_actions": ("invoke_step3", "escalate"),
    "programmatic_alternative": Decision(action=ActionKind.ESCALATE, rationale="limit"),
    "conflict_reason": "the LLM sees a fixable gap",
    "state_before": MachineState.PLAN_VALIDATION,
    "state_after": MachineState.PLAN_REVISION,
    "llm": LLMCallInfo(model="smollm2", prompt_tokens=120, completion_tokens=30, attempts=1),
    "routing": Routing(coordinator="hybrid", per_state=True),
}

BUILD_CASES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (DecisionRecord, LLM_RECORD_VALUES),
    (DecisionRecord, fields_of(driven_state().decisions[-1])),
    (StepRecord, fields_of(driven_state().history[1])),  # a completed step with its report
    (
        StepRecord,
        {
            "step": Step.CODE_VALIDATION,
            "attempt": 2,
            "status": StepStatus.FAILED,
            "decision_seq": 7,
            "started_at": T0,
            "finished_at": T0,
            "result": None,
            "error": StepError(type="timeout", message="slow", attempts=2),
            "change_requests": (),
            "llm_usage": Usage(calls=3, prompt_tokens=40, completion_tokens=9, cost_usd=0.01),
        },
    ),
    (IterationCounters, fields_of(IterationCounters(plan_revisions=2, llm_calls=5))),
    (WorkflowState, fields_of(driven_state())),
]
BUILD_IDS = ["llm-record", "driven-record", "step-with-report", "failed-step", "counters", "state"]


@pytest.mark.parametrize(("cls", "values"), BUILD_CASES, ids=BUILD_IDS)
def test_build_equals_model_validate(cls: type[BaseModel], values: dict[str, Any]) -> None:
    """``build`` gives an object equal to ``model_validate`` of the same values."""
    built = build(cls, **values)
    validated = cls.model_validate(values)
    assert type(built) is cls
    assert built == validated
    assert built.model_dump() == validated.model_dump()
    assert built.model_fields_set == validated.model_fields_set
    assert hash(built) == hash(validated)


@pytest.mark.parametrize(("cls", "values"), BUILD_CASES, ids=BUILD_IDS)
def test_build_serializes_like_model_validate(cls: type[BaseModel], values: dict[str, Any]) -> None:
    """``build`` and ``model_validate`` of the same values give the same JSON text."""
    built = build(cls, **values)
    text = built.model_dump_json()
    assert text == cls.model_validate(values).model_dump_json()
    assert cls.model_validate_json(text) == built


def test_build_refuses_fields_out_of_declaration_order() -> None:
    """Fields passed out of order are refused, since they would reorder the JSON."""
    values = fields_of(StepError(type="timeout", message="slow", attempts=2, retryable=False))
    shuffled = dict(reversed(values.items()))
    with pytest.raises(TypeError, match="declaration order"):
        build(StepError, **shuffled)


@pytest.mark.parametrize(("cls", "values"), BUILD_CASES, ids=BUILD_IDS)
def test_builder_equals_model_validate(cls: type[BaseModel], values: dict[str, Any]) -> None:
    """A generated builder, called with keywords in any order, gives what validation gives."""
    built = builder(cls)(**dict(reversed(values.items())))
    validated = cls.model_validate(values)
    assert type(built) is cls and built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_fields_set == validated.model_fields_set
    assert hash(built) == hash(validated)
    assert cls.model_validate_json(built.model_dump_json()) == built


def test_builder_refuses_a_missing_or_unknown_field() -> None:
    """Calling a builder without a field, or with one the model lacks, is a TypeError."""
    values = dict(LLM_RECORD_VALUES)
    del values["conflict_reason"]
    with pytest.raises(TypeError, match="conflict_reason"):
        builder(DecisionRecord)(**values)
    with pytest.raises(TypeError, match="sequence"):
        builder(DecisionRecord)(**LLM_RECORD_VALUES, sequence=3)


def test_builder_records_are_compact() -> None:
    """A builder's record keeps its fields as shared-key attributes, not a dict of its own."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    make = builder(DecisionRecord)
    built = [make(**LLM_RECORD_VALUES) for _ in range(1000)]
    compact = (tracemalloc.get_traced_memory()[0] - base) / len(built)
    tracemalloc.stop()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    dicts = [DecisionRecord.model_validate(LLM_RECORD_VALUES) for _ in range(1000)]
    validated = (tracemalloc.get_traced_memory()[0] - base) / len(dicts)
    tracemalloc.stop()
    assert compact < 0.6 * validated, (compact, validated)
    # Reading the whole record (equality, JSON) still works on the compact form.
    assert built[0] == dicts[0] and built[0].model_dump_json() == dicts[0].model_dump_json()


def test_replace_refuses_an_unknown_field() -> None:
    """A misspelt field in an update is an error, not silently dropped."""
    err = StepError(type="timeout", message="slow")
    with pytest.raises(TypeError, match="unknown field"):
        replace(err, mesage="typo")


@pytest.mark.parametrize(
    ("obj", "update"),
    [
        pytest.param(
            driven_state(),
            {"machine_state": MachineState.ESCALATED, "updated_at": T0},
            id="state",
        ),
        pytest.param(
            driven_state(),
            {"counters": IterationCounters(plan_revisions=1, llm_calls=3), "phase": 1},
            id="state-nested",
        ),
        pytest.param(
            driven_state().history[-1],
            {"status": StepStatus.COMPLETED, "finished_at": T0, "result": BAD_PLAN},
            id="step-record",
        ),
        pytest.param(
            build(DecisionRecord, **LLM_RECORD_VALUES),
            {"seq": 4, "llm": None, "conflict_reason": None},
            id="built-record",
        ),
        pytest.param(IterationCounters(), {}, id="no-update"),
    ],
)
def test_replace_equals_model_validate(obj: BaseModel, update: dict[str, Any]) -> None:
    """``replace`` gives what ``model_validate`` of the updated fields gives, JSON included."""
    before = obj.model_dump_json()
    new = replace(obj, **update)
    validated = type(obj).model_validate({**fields_of(obj), **update})
    assert new is not obj
    assert new == validated
    assert new.model_dump_json() == validated.model_dump_json()
    assert new.model_fields_set == validated.model_fields_set
    assert obj.model_dump_json() == before  # the original is untouched


def test_replace_of_a_report_inside_a_state_round_trips() -> None:
    """A state updated by ``replace`` with a new step record reads back from its JSON equal."""
    state = driven_state()
    running = state.history[-1]
    done = replace(running, status=StepStatus.COMPLETED, finished_at=T0, result=code_report())
    new = replace(state, history=(*state.history[:-1], done), last_completed_step=running.step)
    assert WorkflowState.model_validate_json(new.model_dump_json()) == new


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: build(DecisionRecord, **LLM_RECORD_VALUES), id="built"),
        pytest.param(lambda: builder(DecisionRecord)(**LLM_RECORD_VALUES), id="builder"),
        pytest.param(lambda: replace(driven_state().decisions[0], seq=1), id="replaced"),
    ],
)
def test_built_and_replaced_objects_stay_frozen(make: Any) -> None:
    """Assigning a field of a built or replaced object raises, as on any frozen model."""
    obj = make()
    with pytest.raises(ValidationError, match="frozen"):
        obj.seq = 9
    assert obj.seq != 9


def test_replace_does_not_share_the_field_dict() -> None:
    """The copy has its own field values: the original keeps its values after ``replace``."""
    state = driven_state()
    new = replace(state, phase=2)
    assert (state.phase, new.phase) == (1, 2)
    assert new.__dict__ is not state.__dict__


def test_build_refuses_a_missing_field() -> None:
    """``build`` without every field raises TypeError naming the missing one."""
    values = dict(LLM_RECORD_VALUES)
    del values["conflict_reason"]
    with pytest.raises(TypeError, match=r"missing \['conflict_reason'\]"):
        build(DecisionRecord, **values)


def test_build_refuses_an_unknown_field() -> None:
    """``build`` with a field the model does not have raises TypeError naming it."""
    with pytest.raises(TypeError, match=r"unknown \['sequence'\]"):
        build(DecisionRecord, **LLM_RECORD_VALUES, sequence=3)


def test_build_refuses_a_misspelt_field() -> None:
    """A misspelt field is both missing and unknown, and both are named."""
    values = dict(LLM_RECORD_VALUES)
    values["stat_after"] = values.pop("state_after")
    with pytest.raises(TypeError, match=r"missing \['state_after'\], unknown \['stat_after'\]"):
        build(DecisionRecord, **values)


@pytest.mark.parametrize("cls", list(TYPED_BUILDERS))
def test_typed_builder_signatures_list_the_models_fields(cls: type[BaseModel]) -> None:
    """Each typed builder takes exactly its model's fields, keyword-only, with their types."""
    protocol = TYPED_BUILDERS[cls]
    params = list(inspect.signature(protocol.__call__).parameters.values())[1:]  # no self
    assert [p.name for p in params] == list(cls.model_fields)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    hints = get_type_hints(protocol.__call__)
    assert hints.pop("return") is cls
    assert hints == {name: f.annotation for name, f in cls.model_fields.items()}
