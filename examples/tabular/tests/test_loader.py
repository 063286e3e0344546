"""The loader reads numbers as floats and refuses a table without its columns."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tabular.loader import load_measurements

DATA = Path(__file__).resolve().parent.parent / "data" / "measurements.csv"


def test_numeric_columns_are_floats_with_missing_cells() -> None:
    """Empty and unparsable cells become NaN; the index is the id."""
    frame = load_measurements(DATA)
    assert list(frame.index[:2]) == [1, 2]
    assert str(frame["age"].dtype) == "float64"
    assert frame["age"].isna().sum() == 2
    assert math.isnan(frame.loc[4, "weight_kg"])
    assert frame.loc[1, "city"] == "Delft"


def test_missing_column_is_refused(tmp_path: Path) -> None:
    """A CSV without the weight column names it."""
    path = tmp_path / "bad.csv"
    path.write_text("id,age,height_cm,city\n1,30,170,Delft\n", encoding="utf-8")
    with pytest.raises(ValueError, match="weight_kg"):
        load_measurements(path)
