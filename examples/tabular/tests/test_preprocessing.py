"""Each preprocessing step returns a new frame and does what its name says."""

from __future__ import annotations

import pandas as pd

from tabular.preprocessing import drop_constant_columns, preprocess, standardize


def test_constant_columns_are_dropped(frame: pd.DataFrame) -> None:
    """The country column holds one value and goes; the input is untouched."""
    out = drop_constant_columns(frame)
    assert "country" not in out.columns
    assert "country" in frame.columns


def test_standardize_centres_and_scales(frame: pd.DataFrame) -> None:
    """Numeric columns get mean 0 and standard deviation 1; text is left alone."""
    out = standardize(frame)
    assert abs(out["age"].mean()) < 1e-9
    assert abs(out["age"].std() - 1.0) < 1e-9
    assert list(out["city"]) == list(frame["city"])


def test_standardize_maps_a_constant_column_to_zero() -> None:
    """A column with no spread becomes zeros instead of NaN."""
    out = standardize(pd.DataFrame({"x": [2.0, 2.0, 2.0]}))
    assert list(out["x"]) == [0.0, 0.0, 0.0]


def test_preprocess_runs_the_steps_in_order(frame: pd.DataFrame) -> None:
    """The default steps drop the constant column, then standardize."""
    out = preprocess(frame)
    assert list(out.columns) == ["age", "height_cm", "city"]
    assert abs(out["height_cm"].mean()) < 1e-9
    assert preprocess(frame, steps=()).equals(frame)
