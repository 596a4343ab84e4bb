"""Non-dominated ranks against a brute-force definition; hypervolume and reference points by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ethicsweep.analysis import front_ranks, hypervolume, minimization_form, reference_point


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


def test_hypervolume_of_a_staircase_by_hand() -> None:
    # minimization form; reference (4, 4). Slabs left to right: x in [1,2) height 4-3=1,
    # [2,3) height 4-2=2, [3,4) height 4-1=3: area 1 + 2 + 3 = 6. The dominated point
    # (3, 3) and the point (5, 0) beyond the reference add nothing; a NaN row is left out.
    points = np.array([[1, 3], [2, 2], [3, 1], [3, 3], [5, 0], [np.nan, 1]], dtype=float)
    assert hypervolume(points, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(np.empty((0, 2)), np.array([4.0, 4.0])) == 0.0
    assert hypervolume(np.array([[4.0, 1.0]]), np.array([4.0, 4.0])) == 0.0  # not strictly better


def test_hypervolume_of_accuracy_and_gap_against_the_default_reference() -> None:
    # accuracy (max) 0.85 at gap 0.15 and 0.80 at gap 0.02; majority rate 0.76, gap reference 0.2.
    # Rectangles: (0.85-0.76) x (0.2-0.15) = 0.0045, plus (0.80-0.76) x (0.15-0.02) = 0.0052.
    frame = pd.DataFrame({"accuracy": [0.85, 0.80], "dp_gap": [0.15, 0.02]})
    objectives = [("accuracy", "max"), ("dp_gap", "min")]
    points = minimization_form(frame, objectives)
    reference = reference_point(objectives, 0.76, points)
    assert list(reference) == pytest.approx([-0.76, 0.2])
    assert hypervolume(points, reference) == pytest.approx(0.0045 + 0.0052)


def test_reference_point_given_values_and_the_nadir_fallback() -> None:
    objectives = [("accuracy", "max"), ("harm", "min"), ("coverage", "max")]
    points = np.array([[-0.8, 0.3, -0.9], [-0.7, 0.5, -0.6]])
    assert list(reference_point(objectives, 0.7, points)) == pytest.approx([-0.7, 0.5, -0.0])
    given = reference_point(objectives, 0.7, points, {"accuracy": 0.5, "harm": 1.0})
    assert list(given) == pytest.approx([-0.5, 1.0, -0.0])


def test_broken_constraints_by_hand() -> None:
    from ethicsweep.analysis.sweep import broken_constraints
    from ethicsweep.rules import Rule

    trials = pd.DataFrame({"val/epsilon": [2.0, 5.0, np.nan], "val/accuracy": [0.85, 0.86, 0.9]})
    rules = [Rule.parse("epsilon <= 3", "val"), Rule.parse("accuracy > 0.85", "val")]
    # row 0: epsilon holds, accuracy 0.85 is not > 0.85; row 1: epsilon broken; row 2: NaN epsilon breaks
    assert broken_constraints(trials, rules) == ["val/accuracy > 0.85", "val/epsilon <= 3", "val/epsilon <= 3"]
    assert broken_constraints(trials, []) == ["", "", ""]
