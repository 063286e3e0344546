"""Digging the JSON object out of a model's answer, when the server did not enforce one."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCED = re.compile(r"```[a-zA-Z]*\s*\n(.*?)```", re.S)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``: all of it, else a fenced block, else the first ``{...}``.

    Args:
        text: a model's answer.

    Returns:
        The first JSON object found (not validated against any schema), or None.
    """
    candidates = [text.strip()]
    candidates += [m.group(1) for m in _FENCED.finditer(text)]
    for candidate in candidates:
        found = _loads_object(candidate)
        if found is not None:
            return found
    for start in (i for i, char in enumerate(text) if char == "{"):
        end = _balanced_end(text, start)
        if end is not None:
            found = _loads_object(text[start:end])
            if found is not None:
                return found
    return None


def _loads_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed as JSON when it is an object, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _balanced_end(text: str, start: int) -> int | None:
    """The index after the brace closing the one at ``start``, skipping braces in strings."""
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None
