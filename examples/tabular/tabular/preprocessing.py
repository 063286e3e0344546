"""Preprocessing steps, each a function from a frame to a new frame, run in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

Step = Callable[[pd.DataFrame], pd.DataFrame]
"""One preprocessing step: it returns a new frame and leaves its input alone."""


def drop_constant_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the columns that hold a single value (they carry no information)."""
    keep = [c for c in frame.columns if frame[c].nunique(dropna=False) > 1]
    return frame[keep].copy()


def standardize(frame: pd.DataFrame) -> pd.DataFrame:
    """Scale each numeric column to mean 0 and standard deviation 1 (constant ones to 0)."""
    out = frame.copy()
    for column in out.select_dtypes("number").columns:
        std = out[column].std()
        centred = out[column] - out[column].mean()
        out[column] = centred / std if std and std > 0 else centred * 0.0
    return out


DEFAULT_STEPS: tuple[Step, ...] = (drop_constant_columns, standardize)
"""The steps :func:`preprocess` runs when none are given."""


def preprocess(frame: pd.DataFrame, steps: Sequence[Step] = DEFAULT_STEPS) -> pd.DataFrame:
    """Run ``steps`` over ``frame``, in order."""
    for step in steps:
        frame = step(frame)
    return frame
