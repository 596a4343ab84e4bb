"""Sensitive groups: each distinct combination of the sensitive columns' values is one group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ethicsweep.errors import DataError

#: A numeric sensitive column with more distinct values than this counts as continuous and
#: must be given ``bins``.
MAX_DISCRETE_VALUES = 10
MISSING = "missing"


@dataclass(frozen=True)
class Groups:
    """Group membership of every row.

    ``codes[i]`` indexes ``names``; names read like ``race=Black & sex=Female``. Only
    combinations that occur in the data are groups (an empty intersectional cell is none).
    """

    codes: np.ndarray
    names: tuple[str, ...]


def _column_values(frame: pd.DataFrame, column: str, bins: list[float] | None, missing: Literal["error", "own_group"]) -> pd.Series:
    if column not in frame.columns:
        raise DataError(f"data.sensitive: column {column!r} is not in the data; columns: {', '.join(map(str, frame.columns))}")
    values = frame[column]
    if bins is not None:
        if not pd.api.types.is_numeric_dtype(values):
            raise DataError(f"data.bins.{column}: column {column!r} is not numeric (dtype {values.dtype}); bins apply to numeric columns only")
        binned = pd.cut(values, bins=bins, right=False)
        outside = binned.isna() & values.notna()
        if outside.any():
            raise DataError(
                f"data.bins.{column}: value {values[outside].iloc[0].item()} lies outside the bins "
                f"[{bins[0]:g}, {bins[-1]:g}); widen the first or last edge"
            )
        values = binned.astype(str).where(binned.notna(), None)
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        distinct = values.nunique(dropna=True)
        if distinct > MAX_DISCRETE_VALUES:
            raise DataError(
                f"data.sensitive: column {column!r} is continuous ({distinct} distinct values); "
                f"give data.bins.{column} as a list of edges, e.g. [0, 25, 45, 200]"
            )
    n_missing = int(pd.isna(values).sum())
    if n_missing:
        if missing == "error":
            raise DataError(
                f"data.sensitive: column {column!r} has {n_missing} missing values; "
                "remove those rows or set data.missing: own_group"
            )
        values = values.astype(object).where(values.notna(), MISSING)
    return values.astype(str)


def encode_groups(
    frame: pd.DataFrame,
    sensitive: list[str],
    bins: dict[str, list[float]] | None = None,
    missing: Literal["error", "own_group"] = "error",
) -> Groups:
    """Encode the intersectional group of every row of ``frame``.

    Raises :class:`DataError` for an absent column, a continuous column without bins,
    a value outside the bins, or a missing value when ``missing="error"``.
    """
    bins = bins or {}
    parts = [
        (column + "=" + _column_values(frame, column, bins.get(column), missing)).to_numpy()
        for column in sensitive
    ]
    labels = parts[0] if len(parts) == 1 else np.array([" & ".join(row) for row in zip(*parts)])
    names, codes = np.unique(labels, return_inverse=True)
    return Groups(codes=codes.astype(np.int64), names=tuple(str(n) for n in names))
