"""What a project environment costs: built cold, then found in the cache by the next workflow.

Workflow A's first code validation runs on a copy of ``examples/tabular`` with an empty
environment cache: it builds the virtualenv from ``requirements.txt`` (pandas, pytest,
coverage; offline from ``.cache/wheels`` when ``scripts/install`` filled it, else through
pip's configured index) and then runs the default checks in it. Workflow B, on a second
copy with the same requirements, starts its first validation: the environment is a cache
hit, so only the checks run. Printed: the build alone, each first validation, and the cache
lookup alone.

    python -m bench.environments [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.execution.checks import run_validation_tools
from orchestrator.execution.environments import MARKER, project_environment
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.logsetup import configure_logging
from state.check_settings import EnvironmentSettings, ValidationSetup
from state.reports import ToolStatus

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tabular"
WHEELS = ROOT / ".cache" / "wheels"
PLAN = "- `tabular/loader.py`\n- `tabular/preprocessing.py`\n"


async def first_validation(workspace: Path, setup: ValidationSetup) -> tuple[float, str]:
    """Seconds for one workflow's first level-2 validation, and its checks' verdicts."""
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=300))
    started = time.perf_counter()
    run = await run_validation_tools(workspace, PLAN, sandbox, setup)
    elapsed = time.perf_counter() - started
    verdicts = ", ".join(f"{t.name} {t.status.value}" for t in run.tools)
    if any(t.status is not ToolStatus.PASSED for t in run.tools):
        print(f"warning: not every check passed: {verdicts}", file=sys.stderr)
    return elapsed, verdicts


async def main(keep: bool) -> None:
    """Time the cold build and the cache hit, and print both."""
    root = Path(tempfile.mkdtemp(prefix="bench-environments-"))
    offline = any(WHEELS.glob("pandas-*.whl"))
    settings = EnvironmentSettings(
        requirements="requirements.txt",
        find_links=str(WHEELS) if offline else None,
        offline=offline,
        cache_dir=str(root / "envs"),
    )
    setup = ValidationSetup(environment=settings)
    try:
        a, b = root / "workflow-a", root / "workflow-b"
        shutil.copytree(EXAMPLE, a)
        shutil.copytree(EXAMPLE, b)
        cold, verdicts = await first_validation(a, setup)
        env = await project_environment(settings, b)
        assert env is not None
        assert env.path is not None
        built_in = json.loads((env.path / MARKER).read_text())["built_in_s"]
        warm, _ = await first_validation(b, setup)
        started = time.perf_counter()
        hit = await project_environment(settings, b)
        lookup = time.perf_counter() - started
        assert hit is not None
        assert not hit.built
        source = f"offline from {WHEELS}" if offline else "through pip's configured index"
        print(f"example environment (pandas, pytest, coverage) built {source}")
        print(f"checks: {verdicts}")
        print(f"cold: environment build {built_in:.1f} s")
        print(f"cold: workflow A's first validation (build + checks) {cold:.1f} s")
        print(f"warm: workflow B's first validation (cache hit + checks) {warm:.1f} s")
        print(f"warm: cache lookup alone {lookup * 1000:.0f} ms")
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    configure_logging("console", "WARNING")
    asyncio.run(main(parser.parse_args().keep))
