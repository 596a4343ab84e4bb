"""Audit checks: worse-than-recorded in each metric's direction, tolerances, undefined values,
and bootstrap intervals against sampling noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ethicsweep.analysis.audit import Check, bootstrap_intervals, compare


def test_worse_is_lower_for_metrics_to_maximize_and_higher_for_those_to_minimize():
    checks = {c.metric: c for c in compare({"accuracy": 0.80, "dp_gap": 0.10}, {"accuracy": 0.85, "dp_gap": 0.04}, 0.02, {})}
    assert checks["accuracy"].worse_by == pytest.approx(0.05) and checks["accuracy"].breach
    assert checks["dp_gap"].worse_by == pytest.approx(0.06) and checks["dp_gap"].breach


def test_improvements_and_changes_within_tolerance_pass():
    checks = compare({"accuracy": 0.90, "dp_gap": 0.05}, {"accuracy": 0.85, "dp_gap": 0.04}, 0.02, {})
    assert [c.worse_by for c in checks] == pytest.approx([-0.05, 0.01]) and not any(c.breach for c in checks)


def test_a_tolerance_per_metric_overrides_the_default():
    (check,) = compare({"dp_gap": 0.05}, {"dp_gap": 0.04}, 0.02, {"dp_gap": 0.005})
    assert check.tolerance == 0.005 and check.breach


def test_only_metrics_both_recorded_and_observed_are_checked_in_metric_order():
    checks = compare({"ece": 0.1, "accuracy": 0.8, "leakage": 0.3}, {"accuracy": 0.8, "ece": 0.1, "epsilon": 1.0}, 0.02, {})
    assert [c.metric for c in checks] == ["accuracy", "ece"]


def test_undefined_now_but_defined_before_breaches_and_undefined_before_never_does():
    assert Check("eo_gap", 0.05, math.nan, math.nan, 0.02).breach
    assert not Check("eo_gap", math.nan, 0.9, math.nan, 0.02).breach


def test_bootstrap_intervals_of_a_proportion_match_the_normal_approximation() -> None:
    # accuracy of 1000 rows, 800 right: 95% interval about 0.8 +- 1.96 sqrt(0.8 * 0.2 / 1000) = 0.8 +- 0.0248
    right = np.r_[np.ones(800), np.zeros(200)]
    intervals = bootstrap_intervals(lambda rows: {"accuracy": right[rows].mean(), "undefined": math.nan}, 1000, replicates=2000)
    low, high = intervals["accuracy"]
    assert low == pytest.approx(0.8 - 0.0248, abs=0.004) and high == pytest.approx(0.8 + 0.0248, abs=0.004)
    assert all(math.isnan(v) for v in intervals["undefined"])


def test_a_breach_inside_the_interval_is_marked_as_possible_noise() -> None:
    (check,) = compare({"accuracy": 0.80}, {"accuracy": 0.83}, 0.02, {}, {"accuracy": (0.77, 0.835)})
    assert check.breach and check.within_noise
    (check,) = compare({"accuracy": 0.80}, {"accuracy": 0.83}, 0.02, {}, {"accuracy": (0.78, 0.82)})
    assert check.breach and not check.within_noise
