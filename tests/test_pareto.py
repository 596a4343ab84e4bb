"""Non-dominated ranks against a brute-force definition."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ethicsweep.analysis import front_ranks


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def test_front_matches_brute_force_on_random_points() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"acc": rng.uniform(0.7, 0.9, 60), "gap": rng.uniform(0, 0.2, 60)})
    ranks = front_ranks(frame, [("acc", "max"), ("gap", "min")])
    points = np.column_stack([-frame["acc"], frame["gap"]])
    on_front = [not any(dominates(points[j], points[i]) for j in range(60)) for i in range(60)]
    assert list(ranks == 0) == on_front


def test_hand_example_with_ties_nan_and_infeasible() -> None:
    # acc max, gap min.  A(0.9, 0.2)  B(0.8, 0.1)  C(0.8, 0.1) tie with B  D(0.7, 0.3) dominated by all
    # E(NaN) cannot be ranked; F(0.95, 0.0) dominates everything but is infeasible.
    frame = pd.DataFrame(
        {"acc": [0.9, 0.8, 0.8, 0.7, np.nan, 0.95], "gap": [0.2, 0.1, 0.1, 0.3, 0.1, 0.0]}
    )
    feasible = np.array([True, True, True, True, True, False])
    ranks = front_ranks(frame, [("acc", "max"), ("gap", "min")], feasible=feasible)
    assert list(ranks) == [0, 0, 0, 1, -1, -1]
