"""Turning bad input into one line a user can act on.

Pydantic validation errors, files that are not UTF-8 text, and text carrying control
characters (terminal escapes, bidi overrides) are each described by what is wrong and where.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AllowInfNan, ConfigDict, Strict, ValidationError

from state.errors import OrchestratorError

# Configuration models: unknown keys refused, immutable, no infinities or NaN.
STRICT_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
# Strict scalars: an int is accepted where a float is wanted, nothing else is converted.
Float = Annotated[float, Strict(), AllowInfNan(False)]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]

# Characters refused in text a user gives: C0 controls other than tab, newline and the
# carriage return of a Windows line end (NUL, BEL, ESC starting ANSI sequences, a lone CR
# that rewrites a terminal line), DEL, the C1 controls, and the bidi marks, embeddings,
# overrides and isolates that make text read differently from what it is.
_UNSAFE = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
CONTROL_CHARS = re.compile(f"[{_UNSAFE}]|\r(?!\n)")
"""What ``check_text`` refuses."""
DISPLAY_UNSAFE = re.compile(f"[{_UNSAFE}\r]")
"""What display code escapes in stored text (every carriage return included)."""


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
        parts.append(f"field '{loc}': {err['msg']}{_given(err)}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more problem(s)")
    return "; ".join(parts)


def _given(err: Any) -> str:
    """`` (got X)`` for a short scalar input, so ``true`` given for a number is visible."""
    value = err.get("input")
    if err.get("type") == "missing" or not isinstance(value, bool | int | float | str):
        return ""
    shown = repr(value)
    return f" (got {shown})" if len(shown) <= 40 else ""


def decode_utf8(data: bytes, source: str, what: str, error: type[OrchestratorError]) -> str:
    """``data`` as text, or an error naming the file and the first byte that is not UTF-8.

    A UTF-8 byte-order mark is dropped (editors on Windows write one).

    Args:
        data: the file's bytes.
        source: the file's name, for the message.
        what: what the file holds ("configuration", "state snapshot", "requirements").
        error: the error class to raise.

    Raises:
        error: the bytes are not UTF-8.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{source}: the {what} is not UTF-8 text (byte offset {exc.start}: "
            f"0x{data[exc.start]:02x}); save it as UTF-8 and try again"
        ) from exc


def read_utf8(path: Path, what: str, error: type[OrchestratorError]) -> str:
    """Read a UTF-8 text file, with one-line errors for a missing, unreadable or binary file.

    Args:
        path: the file.
        what: what it holds, for the message.
        error: the error class to raise.

    Raises:
        error: the file cannot be read or is not UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    return decode_utf8(data, str(path), what, error)


def find_control_char(text: str) -> tuple[int, str] | None:
    """The index and character of the first control character in ``text``, or None."""
    match = CONTROL_CHARS.search(text)
    return None if match is None else (match.start(), match.group())


def check_text(
    text: str,
    what: str,
    error: type[OrchestratorError],
    *,
    max_chars: int | None = None,
    limit_hint: str = "shorten it",
) -> str:
    """Refuse text that is too long or carries control characters, saying where.

    Args:
        text: what a user gave.
        what: what it is, for the message ("requirements", "--comment").
        error: the error class to raise.
        max_chars: the most characters allowed, if limited.
        limit_hint: what to do about too long a text.

    Returns:
        ``text``, unchanged.

    Raises:
        error: naming the length and the limit, or the character and its line and column.
    """
    if max_chars is not None and len(text) > max_chars:
        raise error(
            f"{what}: {len(text)} characters, more than the limit of {max_chars}; {limit_hint}"
        )
    found = find_control_char(text)
    if found is not None:
        index, ch = found
        line = text.count("\n", 0, index) + 1
        column = index - (text.rfind("\n", 0, index) + 1) + 1
        raise error(
            f"{what}: control character U+{ord(ch):04X} at line {line}, column {column} "
            f"(character {index}); remove it and try again"
        )
    return text
