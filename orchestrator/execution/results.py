"""How a sandboxed run ended: the result, the limit it hit, and its bounded output."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.execution.limits import LimitHit, SandboxLimits

COLLECT_MAX_BYTES = 16 * 1024 * 1024
"""The most bytes read back of one collected file or report."""

_MEMORY_RE = re.compile(
    r"^\S*MemoryError\b|Cannot allocate memory|std::bad_alloc|[Oo]ut of memory|Unable to allocate",
    re.MULTILINE,
)
_PROCESSES_RE = re.compile(
    r"^\S*BlockingIOError: \[Errno 11\]|can't start new thread|"
    r"fork: (?:retry: )?Resource temporarily unavailable",
    re.MULTILINE,
)
_FILE_SIZE_RE = re.compile(r"File too large")


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How one sandboxed run ended.

    Attributes:
        argv: the command that ran.
        exit_code: its exit status, or None when a signal ended it.
        signal: the signal that ended it, or None.
        stdout: what it printed (head and tail, with a note where bytes were dropped).
        stderr: the same for stderr.
        duration_s: wall-clock seconds.
        limit_hit: the limit that ended the run, or None.
        network_isolated: whether the run had no network (a new network namespace).
        isolation: the mechanisms that applied, e.g. ``("pid_namespace", "uid_drop", ...)``.
        cpu_s: CPU seconds of the command and the descendants it waited for, when known.
        workdir: the workspace copy when the run kept it (see ``Sandbox.discard``).
        collected: the files asked for with ``collect`` that the run left, by relative path.
        reports: what the command wrote to each report descriptor asked for with
            ``reports`` (empty bytes when it wrote nothing), by report name.
        notes: protections that did not apply on this machine, and why.
        message: how a limit ended the run, e.g. ``killed: memory limit 512 MB exceeded``;
            empty when no limit was hit.
    """

    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    duration_s: float
    limit_hit: LimitHit | None
    network_isolated: bool
    isolation: tuple[str, ...] = ()
    cpu_s: float | None = None
    workdir: Path | None = None
    collected: Mapping[str, bytes] = field(default_factory=dict)
    reports: Mapping[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0 within every limit."""
        return self.exit_code == 0 and self.limit_hit is None


def classify(
    limits: SandboxLimits,
    *,
    timed_out: bool,
    exit_code: int | None,
    signum: int | None,
    cpu_s: float | None,
    output: str,
) -> LimitHit | None:
    """Name the limit that ended a run, from how it ended and what it printed last.

    Args:
        output: the tail of what the run printed; test runners print tracebacks to stdout,
            so both streams are searched (stderr last).
    """
    if timed_out:
        return "wall_timeout"
    if signum == signal.SIGXCPU or (
        signum == signal.SIGKILL and cpu_s is not None and cpu_s >= limits.cpu_s - 0.05
    ):
        return "cpu"  # the soft limit sends SIGXCPU, the hard one (a second later) SIGKILL
    if signum == signal.SIGXFSZ:
        return "file_size"
    if exit_code == 0 and signum is None:
        return None
    if _MEMORY_RE.search(output):
        return "memory"
    if _PROCESSES_RE.search(output):
        return "processes"
    if _FILE_SIZE_RE.search(output):
        return "file_size"
    return None


class Capture:
    """Keeps the head and the tail of a stream, counting what it dropped."""

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 4
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def feed(self, chunk: bytes) -> None:
        """Add bytes read from the stream."""
        self._total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        if len(self._tail) > self._tail_limit:
            del self._tail[: len(self._tail) - self._tail_limit]

    def text(self) -> str:
        """The kept text, with a note where bytes were dropped."""
        dropped = self._total - len(self._head) - len(self._tail)
        head = self._head.decode(errors="replace")
        tail = self._tail.decode(errors="replace")
        if dropped == 0:
            return (self._head + self._tail).decode(errors="replace")
        return f"{head}\n[... {dropped} bytes truncated ...]\n{tail}"


def tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``."""
    return text if len(text) <= limit else "..." + text[-limit:]


def read_status(fd: int) -> dict[str, Any]:
    """Read the supervisor's JSON lines from the status pipe (all writers have exited).

    Lines carrying a ``note`` are gathered into ``notes``; other keys are merged.
    """
    os.set_blocking(fd, False)
    data = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    status: dict[str, Any] = {"notes": []}
    for line in data.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, dict):
                if "note" in item:
                    status["notes"].append(str(item["note"]))
                else:
                    status.update(item)
    return status


def read_collected(work: Path, name: str) -> bytes | None:
    """Read a file the run left, refusing symlinks and anything outside the copy."""
    path = work / name
    if not path.parent.resolve().is_relative_to(work.resolve()):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return handle.read(COLLECT_MAX_BYTES)
