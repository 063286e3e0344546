"""Load the shared peers benchmark (../shared/bench/peers.py) so every bench reuses its trace."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType


def load_peers() -> ModuleType:
    """Import ``peers.py`` from ``$ORCHESTRATOR_SHARED/bench`` or ``../shared/bench``."""
    root = Path(
        os.environ.get("ORCHESTRATOR_SHARED", Path(__file__).resolve().parents[2] / "shared")
    )
    path = root / "bench" / "peers.py"
    if not path.exists():
        raise SystemExit(
            f"cannot find the shared peers benchmark at {path}; set ORCHESTRATOR_SHARED"
        )
    spec = importlib.util.spec_from_file_location("peers", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
