"""Reading and checking the CLI's inputs before anything is stored or started.

State snapshots, configs and requirements files must be UTF-8; workflow ids must be safe
as a directory name; requirements and answers must be free of control characters. Each
refusal is one error naming the file, field or id, what is wrong and what to do.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from orchestrator.deciding.script_decider import load_script
from state.config import Coordinator, WorkflowConfig, load_config
from state.errors import ConfigError, HumanAnswerError, StateError
from state.validation import check_text, decode_utf8, read_utf8
from state.workflow import WorkflowState, parse_state

# An id names the workspace directory DATA_DIR/workspaces/ID: no separators, no leading dot,
# nothing a shell or a file system treats specially.
WORKFLOW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ID_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or a digit"


def check_workflow_id(workflow_id: str) -> str:
    """Refuse an id that is not safe as a directory name (``../x``, ``/tmp/x``, ``a b``).

    Raises:
        ConfigError: naming the id and the allowed characters.
    """
    if WORKFLOW_ID.fullmatch(workflow_id) is None:
        raise ConfigError(
            f"workflow id {workflow_id!r} is not allowed: an id is {ID_RULE}; "
            "choose another (or leave --id out for a generated one)"
        )
    return workflow_id


def read_state(path: str) -> WorkflowState:
    """Read a state snapshot from a JSON file (``-`` for stdin).

    Raises:
        StateError: unreadable, not UTF-8, not JSON, or invalid (naming the field).
    """
    if path == "-":
        source = "stdin"
        text = decode_utf8(sys.stdin.buffer.read(), source, "state snapshot", StateError)
    else:
        source = path
        text = read_utf8(Path(path), "state snapshot", StateError)
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


def read_requirements(text: str | None, path: Path | None, config: WorkflowConfig) -> str:
    """The requirement from ``--requirements`` or ``--requirements-file``, checked.

    Raises:
        ConfigError: the file is not UTF-8, the text is empty, longer than the config's
            ``requirements_max_chars``, or carries control characters.
    """
    source = "--requirements"
    if path is not None:
        source = str(path)
        text = read_utf8(path, "requirements", ConfigError)
    assert text is not None
    limit = config.requirements_max_chars
    check_text(
        text,
        f"requirements ({source})",
        ConfigError,
        max_chars=limit,
        limit_hint="shorten them, or raise requirements_max_chars in the config",
    )
    if not text.strip():
        raise ConfigError(f"requirements ({source}): the requirement is empty; say what to build")
    return text.strip()


def check_answer_text(label: str, text: str | None) -> None:
    """Refuse a human answer's text (comment, change, name) carrying control characters.

    Raises:
        HumanAnswerError: naming the option and the character's position.
    """
    if text is not None:
        check_text(text, label, HumanAnswerError)


def check_runnable(config: WorkflowConfig) -> None:
    """Everything about ``config`` that can be known before a workflow is stored or resumed.

    Today: a ``script`` coordinator's file exists, imports and defines ``decide``.

    Raises:
        ConfigError: naming the file and the problem.
    """
    if config.coordinator is Coordinator.SCRIPT:
        if not config.coordinator_script:
            raise ConfigError(
                "coordinator 'script' needs coordinator_script: PATH.py in the --config file"
            )
        try:
            load_script(config.coordinator_script)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}; fix coordinator_script in the config (a relative path is read from "
                "the config file's directory)"
            ) from exc
