"""Audit checks: worse-than-recorded in each metric's direction, tolerances, undefined values."""

from __future__ import annotations

import math

import pytest

from ethicsweep.analysis.audit import Check, compare


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
