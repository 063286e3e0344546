"""Logging configuration, called only by entry points (the CLI, benchmarks, tests)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]

_WARNING_LEVELS = frozenset({"warning", "error", "critical", "exception"})


def _renderer(fmt: LogFormat) -> structlog.types.Processor:
    return (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )


def _processors(fmt: LogFormat) -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _renderer(fmt),
    ]


def _filtering(level: str) -> type[structlog.types.BindableLogger]:
    return structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()])


def configure_logging(
    fmt: LogFormat = "console", level: str = "WARNING", stream: TextIO | None = None
) -> None:
    """Route structlog events to ``stream`` (stderr) as JSON lines or console lines."""
    structlog.configure(
        processors=_processors(fmt),
        wrapper_class=_filtering(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


class LogTally:
    """Where a run's log goes and how many warnings (or worse) it has received so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warnings = 0
        self._lock = threading.Lock()
        self._file: TextIO | None = None

    def count(
        self, _logger: object, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor: count the event if it is a warning or worse."""
        if event_dict.get("level") in _WARNING_LEVELS:
            with self._lock:
                self.warnings += 1
        return event_dict

    def write(self, line: str) -> None:
        """Append one rendered event, creating the file (and a private folder) on first use.

        Created lazily so a run that logs nothing leaves no file behind.
        """
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                self._file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file if it was opened."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _FileLogger:
    """A structlog logger writing every rendered line to a ``LogTally``'s file."""

    def __init__(self, tally: LogTally) -> None:
        self._tally = tally

    def msg(self, message: str) -> None:
        """Write ``message``."""
        self._tally.write(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


@contextlib.contextmanager
def logging_to_file(
    path: Path, fmt: LogFormat = "console", level: str = "WARNING"
) -> Iterator[LogTally]:
    """Send structlog events to ``path`` instead of the terminal while the block runs.

    The terminal then shows a one-line summary from the yielded tally rather than
    multi-line warnings torn through the progress display. The previous configuration is
    restored on exit.
    """
    tally = LogTally(path)
    previous = structlog.get_config()
    processors = _processors(fmt)
    processors.insert(-1, tally.count)  # counted after the level is added, before rendering
    structlog.configure(
        processors=processors,
        wrapper_class=_filtering(level),
        logger_factory=lambda *_args: _FileLogger(tally),
        cache_logger_on_first_use=False,
    )
    try:
        yield tally
    finally:
        structlog.configure(**previous)
        tally.close()
