"""Tiers that scripts/install provides: skipped on a developer's machine, required in CI.

PostgreSQL, Chromium and the wheel cache of the tabular example are installed by
``scripts/install``. On a machine without them a test of those tiers skips with one line
saying what is missing; in CI (``CI`` set, as ``.ci/run`` runs) the same absence fails the
test, so a broken install step cannot turn into a green run that tested less.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether the suite runs in CI (``CI`` set to anything but empty, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def tier_missing(reason: str, *, module: bool = False) -> NoReturn:
    """Skip for ``reason``, or fail in CI, where scripts/install must have provided the tier."""
    if in_ci():
        pytest.fail(f"{reason}; in CI scripts/install must provide it", pytrace=False)
    pytest.skip(reason, allow_module_level=module)
