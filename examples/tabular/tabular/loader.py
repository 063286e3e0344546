"""Loading the measurements table from CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

NUMERIC_COLUMNS = ("age", "height_cm", "weight_kg")
"""Columns read as numbers; an empty or unparsable cell becomes a missing value."""


def load_measurements(path: str | Path) -> pd.DataFrame:
    """Read the measurements CSV, with the numeric columns as floats.

    Args:
        path: a CSV file with an ``id`` column, the numeric columns and a ``city`` column.

    Returns:
        One row per record, indexed by ``id``.

    Raises:
        ValueError: a required column is missing.
    """
    frame = pd.read_csv(path)
    missing = [c for c in ("id", *NUMERIC_COLUMNS, "city") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame.set_index("id")
