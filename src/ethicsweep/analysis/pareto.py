"""Pareto fronts over trial tables: non-dominated sorting and hypervolume (pymoo).

The hypervolume of a set of points is the volume (area, for two objectives) dominated by
them and bounded by a reference point — the worst value of each objective that still
counts. Points not strictly better than the reference in every objective add nothing.
Default reference values (a spec's ``objectives[].reference`` overrides them):

- ``accuracy``: the majority-class rate of the split scored (what a constant predictor
  gets); ``balanced_accuracy`` and ``roc_auc``: 0.5; ``worst_group_accuracy``: 0;
- the gaps (``dp_gap``, ``eopp_gap``, ``eo_gap``, ``error_gap``): 0.2;
- ``coverage``: 0; ``mia_auc``: 1; ``mia_advantage`` and ``mia_tpr_at_1pct_fpr``: 1;
  ``leakage``: 1;
- any other metric: the worst value among the points being compared (the nadir), which
  depends on those points: state a reference to compare hypervolumes across sweeps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

FIXED_REFERENCE = {
    "balanced_accuracy": 0.5, "roc_auc": 0.5, "worst_group_accuracy": 0.0,
    "dp_gap": 0.2, "eopp_gap": 0.2, "eo_gap": 0.2, "error_gap": 0.2,
    "coverage": 0.0, "mia_auc": 1.0, "mia_advantage": 1.0, "mia_tpr_at_1pct_fpr": 1.0, "leakage": 1.0,
}  # fmt: skip


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


def reference_point(
    objectives: list[tuple[str, str]], majority_rate: float, points: np.ndarray, given: dict[str, float] | None = None
) -> np.ndarray:
    """The reference point in minimization form (see the module docstring). ``objectives``:
    (metric, direction); ``majority_rate``: the share of the majority class on the split;
    ``points``: the compared points, in minimization form (for the nadir fallback);
    ``given``: reference values stated in the spec, by metric."""
    given = given or {}
    reference = []
    for i, (metric, mode) in enumerate(objectives):
        if metric in given:
            value = given[metric]
        elif metric == "accuracy":
            value = majority_rate
        elif metric in FIXED_REFERENCE:
            value = FIXED_REFERENCE[metric]
        else:
            column = points[:, i][np.isfinite(points[:, i])] if len(points) else np.empty(0)
            reference.append(float(column.max()) if len(column) else 0.0)
            continue
        reference.append(-value if mode == "max" else value)
    return np.array(reference, dtype=np.float64)


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of ``points`` (minimization form; rows with a non-finite value are left
    out) against ``reference``; 0 when no point is better than it in every objective."""
    points = np.asarray(points, dtype=np.float64)
    points = points[np.isfinite(points).all(axis=1)] if len(points) else points
    if not len(points):
        return 0.0
    return float(HV(ref_point=reference)(points))
