"""Fast construction and copying of frozen state models on the decision hot path.

pydantic's ``model_construct`` and ``model_copy`` are general (defaults, aliases, a private
copy of the fields-set per instance); on the hot path we build records whose every field we
supply and copy frozen models with a few fields replaced. Both helpers produce objects equal
to what ``model_validate`` would build from the same values (a test pins this), and share the
fields-set between instances: frozen models never mutate it.

``builder(cls)`` makes records kept for a workflow's life (decisions, human answers): it
stores the fields as attributes, one by one in declaration order, through a function
generated once per class, and CPython then keeps them as the class's shared-key inline
values: a decision record takes about 210 bytes instead of about 550 with a dict of its own,
and thousands of resident workflows are mostly their decision histories.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel

from state.decision import (
    Decision,
    DecisionRecord,
    DecisionSource,
    LLMCallInfo,
    Route,
    Routing,
    Signal,
)
from state.steps import Gate, MachineState
from state.workflow import HumanAnswer, HumanAnswerKind

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__
_new = object.__new__  # what a pydantic model's __new__ is (BaseModel defines none)
_FIELD_SETS: dict[type[BaseModel], set[str]] = {}
_BUILDERS: dict[type[BaseModel], Callable[..., Any]] = {}
_FIELD_ORDER: dict[type[BaseModel], tuple[str, ...]] = {}


def _all_fields(cls: type[BaseModel]) -> set[str]:
    fs = _FIELD_SETS.get(cls)
    if fs is None:
        fs = _FIELD_SETS[cls] = set(cls.model_fields)
    return fs


def _field_order(cls: type[BaseModel]) -> tuple[str, ...]:
    order = _FIELD_ORDER.get(cls)
    if order is None:
        order = _FIELD_ORDER[cls] = tuple(cls.model_fields)
    return order


def builder(cls: type[M]) -> Callable[..., M]:
    """A function taking every field of ``cls`` by keyword and returning an instance.

    No validation: the values must be what the fields declare (callers on the hot path
    pass values they built or checked). A missing or unknown field raises ``TypeError``.
    """
    made = _BUILDERS.get(cls)
    if made is None:
        names = tuple(cls.model_fields)
        bad = [n for n in names if not n.isidentifier() or keyword.iskeyword(n)]
        if bad:
            raise TypeError(f"builder({cls.__name__}): fields {bad} are not identifiers")
        stores = "".join(f"    _set(_o, {n!r}, {n})\n" for n in names)
        source = (
            f"def build_{cls.__name__}(*, {', '.join(names)}):\n"
            "    _o = _new(_cls)\n"
            f"{stores}"
            "    _set(_o, '__pydantic_fields_set__', _fields)\n"
            "    _set(_o, '__pydantic_extra__', None)\n"
            "    _set(_o, '__pydantic_private__', None)\n"
            "    return _o\n"
        )
        namespace: dict[str, Any] = {
            "_new": object.__new__,
            "_cls": cls,
            "_set": _set,
            "_fields": _all_fields(cls),
        }
        exec(source, namespace)  # noqa: S102 -- generated from the model's own field names
        made = _BUILDERS[cls] = namespace[f"build_{cls.__name__}"]
    return made


def build(cls: type[M], **values: Any) -> M:
    """An instance of ``cls`` from trusted values for every one of its fields (no validation).

    The values become the instance's own dict: the fastest way to make an object that is
    soon replaced (a running step's record). Records kept for the workflow's life are made
    by ``builder(cls)``, which is slower to call but half the size.

    Raises:
        TypeError: a field is missing, unknown or out of order (a programming error).
    """
    # The values become the instance's __dict__, whose order is the JSON's field order: they
    # must come in declaration order (checking is cheaper than reordering on the hot path).
    if tuple(values) != _field_order(cls):
        fields = _all_fields(cls)
        missing = sorted(fields - values.keys())
        extra = sorted(values.keys() - fields)
        raise TypeError(
            f"build({cls.__name__}): pass every field in declaration order "
            f"{_field_order(cls)}; missing {missing}, unknown {extra}"
        )
    obj = _new(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", _FIELD_SETS.get(cls) or _all_fields(cls))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def replace(obj: M, **update: Any) -> M:
    """A copy of the frozen model ``obj`` with ``update`` applied (no validation)."""
    cls = type(obj)
    fields = _FIELD_SETS.get(cls) or _all_fields(cls)
    if not update.keys() <= fields:
        unknown = sorted(update.keys() - fields)
        raise TypeError(f"replace({cls.__name__}): unknown field(s) {unknown}")
    new = _new(cls)
    _set(new, "__dict__", {**obj.__dict__, **update})
    # Every field of a state model has a value; "which were set explicitly" only matters to
    # exclude_unset dumps, which this project never makes. Sharing one set saves ~0.7 KB per
    # object across thousands of resident workflows.
    _set(new, "__pydantic_fields_set__", fields)
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None)
    return new


# The generated constructors, typed: mypy checks every call's fields against these
# signatures, and a test checks that each signature lists exactly its model's fields.


class DecisionRecordBuilder(Protocol):
    """The signature of ``builder(DecisionRecord)``."""

    def __call__(
        self,
        *,
        seq: int,
        decided_at: datetime,
        decision: Decision,
        source: DecisionSource,
        route: Route,
        signals: tuple[Signal, ...],
        legal_actions: tuple[str, ...],
        programmatic_alternative: Decision | None,
        conflict_reason: str | None,
        state_before: MachineState,
        state_after: MachineState,
        llm: LLMCallInfo | None,
        routing: Routing | None,
    ) -> DecisionRecord:
        """A record with these fields, built without validation (see ``builder``)."""
        ...


class HumanAnswerBuilder(Protocol):
    """The signature of ``builder(HumanAnswer)``."""

    def __call__(
        self,
        *,
        gate: Gate,
        answer: HumanAnswerKind,
        changes: tuple[str, ...],
        comment: str | None,
        by: str,
        at: datetime,
        after_decision: int,
    ) -> HumanAnswer:
        """An answer with these fields, built without validation (see ``builder``)."""
        ...


new_decision_record = cast(DecisionRecordBuilder, builder(DecisionRecord))
new_human_answer = cast(HumanAnswerBuilder, builder(HumanAnswer))

TYPED_BUILDERS: dict[type[BaseModel], type[Any]] = {
    DecisionRecord: DecisionRecordBuilder,
    HumanAnswer: HumanAnswerBuilder,
}
