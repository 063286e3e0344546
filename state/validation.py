"""Turning pydantic validation errors into one line a user can act on."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """Name the failing fields and their problems in one line.

    Args:
        exc: the pydantic error.
        limit: how many problems to list before summarising the rest.
    """
    parts: list[str] = []
    errors = exc.errors(include_url=False)
    for err in errors[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"field '{loc}': {err['msg']}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more problem(s)")
    return "; ".join(parts)
