"""The limits of one sandboxed run, and the rlimits they become in the supervisor."""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from typing import Literal

from state.errors import ConfigError
from state.sandbox_settings import SandboxSettings

LimitHit = Literal["wall_timeout", "cpu", "memory", "processes", "file_size"]
"""Which limit ended a run."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    Attributes:
        wall_timeout_s: wall-clock seconds before the whole process tree is killed.
        cpu_s: CPU seconds per process (RLIMIT_CPU).
        memory_mb: address space per process in MiB (RLIMIT_AS).
        max_processes: processes and threads of the run (RLIMIT_NPROC).
        max_file_mb: largest file the code may write, in MiB (RLIMIT_FSIZE).
        max_output_bytes: bytes kept of stdout and of stderr each (the head and the tail).
        network: allow network access (no network namespace) when True.
    """

    wall_timeout_s: float = 120.0
    cpu_s: int = 120
    memory_mb: int = 2048
    max_processes: int = 128
    max_file_mb: int = 256
    max_output_bytes: int = 64 * 1024
    network: bool = False

    def __post_init__(self) -> None:
        """Reject limits that cannot be applied."""
        for name in ("wall_timeout_s", "cpu_s", "memory_mb", "max_processes", "max_file_mb"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"sandbox limit {name} must be positive, got "
                    f"{getattr(self, name)!r}; fix the workflow's sandbox limits"
                )
        if self.max_output_bytes < 1024:
            raise ConfigError(
                f"sandbox limit max_output_bytes must be at least 1024, got "
                f"{self.max_output_bytes}; fix the workflow's sandbox limits"
            )

    @classmethod
    def from_settings(cls, settings: SandboxSettings) -> SandboxLimits:
        """The limits a workflow's ``sandbox:`` configuration section asks for."""
        return cls(
            wall_timeout_s=settings.wall_seconds,
            cpu_s=settings.cpu_seconds,
            memory_mb=settings.memory_mb,
            max_processes=settings.max_processes,
            max_file_mb=settings.max_file_mb,
            max_output_bytes=settings.max_output_bytes,
            network=settings.network,
        )

    def describe(self, hit: LimitHit) -> str:
        """How a run that hit ``hit`` is reported, e.g. ``killed: memory limit 512 MB exceeded``."""
        what = {
            "wall_timeout": f"wall-clock limit {self.wall_timeout_s:g} s",
            "cpu": f"CPU limit {self.cpu_s} s",
            "memory": f"memory limit {self.memory_mb} MB",
            "processes": f"process limit {self.max_processes}",
            "file_size": f"file size limit {self.max_file_mb} MB",
        }[hit]
        return f"killed: {what} exceeded"


def rlimits(limits: SandboxLimits, *, own_uid: bool) -> list[tuple[str, int, int]]:
    """The rlimits for the command, capped by our own hard limits.

    Args:
        limits: the run's limits.
        own_uid: the run has a uid (or user namespace) of its own, so RLIMIT_NPROC counts
            its processes alone; otherwise the processes our user already runs are added.
    """
    mib = 1024 * 1024
    nproc = limits.max_processes
    if not own_uid:
        nproc += _own_process_count()  # the count is per user: leave room for what runs
    wanted = [
        ("RLIMIT_CPU", limits.cpu_s, limits.cpu_s + 1),
        ("RLIMIT_AS", limits.memory_mb * mib, limits.memory_mb * mib),
        ("RLIMIT_NPROC", nproc, nproc),
        ("RLIMIT_FSIZE", limits.max_file_mb * mib, limits.max_file_mb * mib),
        ("RLIMIT_CORE", 0, 0),
    ]
    capped = []
    for name, soft, hard in wanted:
        _, ours = resource.getrlimit(getattr(resource, name))
        if ours == resource.RLIM_INFINITY:
            capped.append((name, soft, hard))
        else:
            capped.append((name, min(soft, ours), min(hard, ours)))
    return capped


def _own_process_count() -> int:
    """How many processes our real uid has (for RLIMIT_NPROC without a uid of our own)."""
    count = 0
    uid = str(os.getuid())
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry.name}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            count += line.split()[1] == uid
                            break
    return count
