"""Bootstrap intervals of group rates against the normal approximation and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ethicsweep.objectives.metrics import bootstrap_group_rates


def test_intervals_match_the_normal_approximation_of_a_proportion() -> None:
    # Group A: 400 rows, 40% selected; group B: 600 rows, 70% selected. With whole-sample
    # resampling a group's rate is a ratio estimate whose standard error is close to
    # sqrt(p(1-p)/n): the 95% interval is about p +- 1.96 * that.
    rng = np.random.default_rng(1)
    codes = np.repeat([0, 1], [400, 600])
    y_pred = np.concatenate([np.repeat([1, 0], [160, 240]), np.repeat([1, 0], [420, 180])])
    y_true = rng.integers(0, 2, 1000)
    table = bootstrap_group_rates(y_true, y_pred, codes, ("A", "B"), replicates=4000, seed=0)
    for group, p, n in (("A", 0.4, 400), ("B", 0.7, 600)):
        row = table[(table["group"] == group) & (table["rate"] == "selection_rate")].iloc[0]
        half = 1.96 * math.sqrt(p * (1 - p) / n)
        assert row["low"] == pytest.approx(p - half, abs=0.01)
        assert row["high"] == pytest.approx(p + half, abs=0.01)


def test_a_rate_undefined_in_every_replicate_has_nan_bounds() -> None:
    # group B has no positives: its TPR is undefined in every replicate; its FPR is all ones.
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_true = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 0, 0, 1, 1, 1, 1, 1])
    table = bootstrap_group_rates(y_true, y_pred, codes, ("A", "B"), replicates=50, seed=0).set_index(["group", "rate"])
    assert math.isnan(table.loc[("B", "tpr"), "low"]) and math.isnan(table.loc[("B", "tpr"), "high"])
    assert table.loc[("B", "fpr"), "low"] == 1.0 and table.loc[("B", "fpr"), "high"] == 1.0
    assert set(table.index.get_level_values("rate")) == {"selection_rate", "tpr", "fpr", "accuracy"}


def test_the_same_seed_gives_the_same_intervals() -> None:
    rng = np.random.default_rng(2)
    codes, y_true, y_pred = rng.integers(0, 3, 300), rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    first = bootstrap_group_rates(y_true, y_pred, codes, ("a", "b", "c"), replicates=100, seed=7)
    again = bootstrap_group_rates(y_true, y_pred, codes, ("a", "b", "c"), replicates=100, seed=7)
    assert first.equals(again)
