"""Shared fixtures: a small frame like the ones the loader returns."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def frame() -> pd.DataFrame:
    """Four records with a constant column and a text column."""
    return pd.DataFrame(
        {
            "age": [30.0, 40.0, 50.0, 60.0],
            "height_cm": [160.0, 170.0, 180.0, 190.0],
            "country": ["NL", "NL", "NL", "NL"],
            "city": ["Delft", "Leiden", "Delft", "Utrecht"],
        },
        index=pd.Index([1, 2, 3, 4], name="id"),
    )
