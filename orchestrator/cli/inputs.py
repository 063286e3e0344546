"""Reading the CLI's inputs: state snapshots and configs, with errors that name the problem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from state.config import WorkflowConfig, load_config
from state.errors import StateError
from state.workflow import WorkflowState, parse_state


def read_state(path: str) -> WorkflowState:
    """Read a state snapshot from a JSON file (``-`` for stdin).

    Raises:
        StateError: unreadable, not JSON, or invalid (naming the field).
    """
    source = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StateError(f"{source}: cannot read the state snapshot ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    return parse_state(data, source)


def read_config(path: str | None) -> WorkflowConfig:
    """The config at ``path``, or the defaults."""
    return load_config(path) if path else WorkflowConfig()
