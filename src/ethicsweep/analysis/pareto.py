"""Pareto fronts over trial tables (non-dominated sorting from pymoo)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def minimization_form(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> np.ndarray:
    """Objective columns as a matrix where lower is better (``max`` columns negated)."""
    columns = [frame[column].to_numpy(dtype=np.float64) * (-1.0 if mode == "max" else 1.0) for column, mode in objectives]
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def front_ranks(frame: pd.DataFrame, objectives: list[tuple[str, str]], feasible: np.ndarray | None = None) -> np.ndarray:
    """Non-dominated rank of each row (0 = the Pareto front), or -1 for a row that cannot be
    ranked: infeasible, or with a missing, NaN or infinite objective.

    Rows with equal objective values share a rank.
    """
    points = minimization_form(frame, objectives)
    rankable = np.isfinite(points).all(axis=1)
    if feasible is not None:
        rankable &= np.asarray(feasible, dtype=bool)
    ranks = np.full(len(frame), -1, dtype=np.int64)
    if rankable.any():
        _, rank = NonDominatedSorting().do(points[rankable], return_rank=True)
        ranks[rankable] = rank
    return ranks
