"""Fast construction and copying of frozen state models on the decision hot path.

pydantic's ``model_construct`` and ``model_copy`` are general (defaults, aliases, a private
copy of the fields-set per instance); on the hot path we build records whose every field we
supply and copy frozen models with a few fields replaced. Both helpers produce objects equal
to what ``model_validate`` would build from the same values (a test pins this), and share the
fields-set between instances: frozen models never mutate it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__
_FIELD_SETS: dict[type[BaseModel], set[str]] = {}
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


def build(cls: type[M], **values: Any) -> M:
    """An instance of ``cls`` from trusted values for every one of its fields (no validation).

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
    fields = _all_fields(cls)
    obj = cls.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", fields)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def replace(obj: M, **update: Any) -> M:
    """A copy of the frozen model ``obj`` with ``update`` applied (no validation)."""
    cls = type(obj)
    if not update.keys() <= _all_fields(cls):
        unknown = sorted(update.keys() - _all_fields(cls))
        raise TypeError(f"replace({cls.__name__}): unknown field(s) {unknown}")
    values = obj.__dict__.copy()
    values.update(update)
    new = cls.__new__(cls)
    _set(new, "__dict__", values)
    # Every field of a state model has a value; "which were set explicitly" only matters to
    # exclude_unset dumps, which this project never makes. Sharing one set saves ~0.7 KB per
    # object across thousands of resident workflows.
    _set(new, "__pydantic_fields_set__", _all_fields(cls))
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None)
    return new
