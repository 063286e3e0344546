"""The local wheel cache scripts/install fills, and project environments built from it offline.

Tests have no network: a project environment is built with ``--no-index --find-links`` from
``.cache/wheels`` of the checkout. Where that cache lacks what a test needs, the test skips
with one line saying to run scripts/install (in CI it fails: ``support.tiers``).
"""

from __future__ import annotations

from pathlib import Path

from state.check_settings import EnvironmentSettings

from support.tiers import tier_missing

ROOT = Path(__file__).resolve().parent.parent.parent
WHEELS = ROOT / ".cache" / "wheels"
EXAMPLE = ROOT / "examples" / "tabular"


def require_wheels(*names: str) -> Path:
    """The wheel cache, or skip the test when it lacks a wheel of one of ``names``."""
    have = {p.name.split("-")[0].lower().replace("_", "-") for p in WHEELS.glob("*.whl")}
    missing = [n for n in names if n.lower().replace("_", "-") not in have]
    if missing:
        tier_missing(
            f"no wheel of {', '.join(missing)} in {WHEELS}: run scripts/install to fill the "
            "local wheel cache"
        )
    return WHEELS


def offline(cache_dir: Path, **settings: object) -> EnvironmentSettings:
    """Environment settings that build offline from the wheel cache into ``cache_dir``."""
    return EnvironmentSettings.model_validate(
        {"find_links": str(WHEELS), "offline": True, "cache_dir": str(cache_dir), **settings}
    )
