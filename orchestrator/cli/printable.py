r"""Stored text made safe for a terminal: every display of stored text goes through here.

Requirements, rationales, comments and step errors come from users, models and generated
code. Printed raw, an ANSI escape could recolour or rewrite the terminal and a bidi override
could make text read differently from what it is, so each such character is shown as its
escape (``\\x1b``, ``\\u202e``) instead.
"""

from __future__ import annotations

import re

from state.validation import DISPLAY_UNSAFE

_LINE_BREAKS = re.compile("[\n\t]")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped, on one line unless ``keep_newlines``.

    Args:
        text: what to show (anything; it is converted with ``str``).
        keep_newlines: keep newlines and tabs (multi-line display); else they are escaped
            too, so a one-line field stays one line.
    """
    s = str(text)
    s = DISPLAY_UNSAFE.sub(_escape, s)
    if not keep_newlines:
        s = _LINE_BREAKS.sub(_escape, s)
    return s
