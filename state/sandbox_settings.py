"""The sandbox section of a workflow's configuration: the limits generated code runs under.

In YAML::

    sandbox: {wall_seconds: 300, memory_mb: 4096, max_processes: 256}

The defaults are safe for a small data-science project: a few minutes of wall clock, 2 GiB of
address space per process, no network.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from state.validation import STRICT_FROZEN, Bool, Float, Int


class SandboxSettings(BaseModel):
    """Limits of every sandboxed run of a workflow (each deterministic tool is one run)."""

    model_config = STRICT_FROZEN

    wall_seconds: Float = Field(
        120.0, gt=0, le=86_400, description="wall-clock seconds before the run is killed"
    )
    cpu_seconds: Int = Field(120, gt=0, description="CPU seconds per process")
    memory_mb: Int = Field(2048, gt=0, description="address space per process, in MiB")
    max_processes: Int = Field(128, gt=0, description="processes and threads of the run")
    max_file_mb: Int = Field(256, gt=0, description="largest file the code may write, in MiB")
    max_output_bytes: Int = Field(
        64 * 1024, ge=1024, description="bytes kept of stdout and of stderr each"
    )
    network: Bool = Field(False, description="allow network access")
