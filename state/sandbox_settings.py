"""The sandbox section of a workflow's configuration: the limits generated code runs under.

In YAML::

    sandbox: {wall_seconds: 300, memory_mb: 4096, max_processes: 256}

The defaults are safe for a small data-science project: a few minutes of wall clock, 2 GiB of
address space per process, no network.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SandboxSettings(BaseModel):
    """Limits of every sandboxed run of a workflow (each deterministic tool is one run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_seconds: float = Field(
        120.0, gt=0, le=86_400, description="wall-clock seconds before the run is killed"
    )
    cpu_seconds: int = Field(120, gt=0, description="CPU seconds per process")
    memory_mb: int = Field(2048, gt=0, description="address space per process, in MiB")
    max_processes: int = Field(128, gt=0, description="processes and threads of the run")
    max_file_mb: int = Field(256, gt=0, description="largest file the code may write, in MiB")
    max_output_bytes: int = Field(
        64 * 1024, ge=1024, description="bytes kept of stdout and of stderr each"
    )
    network: bool = Field(False, description="allow network access")
