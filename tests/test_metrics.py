"""Exact metrics: every expected value is worked out by hand in a comment, or computed
with scikit-learn on the same inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from ethicsweep.objectives.metrics import (
    GroupRates,
    dp_gap,
    eo_gap,
    eopp_gap,
    error_gap,
    evaluate,
    worst_group_accuracy,
)

GAPS = ("dp_gap", "eopp_gap", "eo_gap", "error_gap")


def two_groups():
    """Group a: y=[1,1,0,0,0], ŷ=[1,0,1,0,0]; group b: y=[1,1,1,0,0], ŷ=[1,1,1,1,0]."""
    y = np.array([1, 1, 0, 0, 0, 1, 1, 1, 0, 0])
    yhat = np.array([1, 0, 1, 0, 0, 1, 1, 1, 1, 0])
    g = np.array(["a"] * 5 + ["b"] * 5)
    return y, yhat, g


def three_groups():
    """a: y=[1,0,0] ŷ=[1,1,1]; b: y=[1,0,0] ŷ=[1,0,0]; c: y=[1,1,0,0] ŷ=[0,1,0,1]."""
    y = np.array([1, 0, 0, 1, 0, 0, 1, 1, 0, 0])
    yhat = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0, 1])
    g = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 4)
    return y, yhat, g


# --------------------------------------------------------------------------- GroupRates


def test_group_rates_counts_two_groups():
    y, yhat, g = two_groups()
    r = GroupRates.compute(y, yhat, g, min_group_size=1)
    assert r.names == ("a", "b")
    assert r.count.tolist() == [5, 5]
    assert r.positives.tolist() == [2, 3]
    assert r.negatives.tolist() == [3, 2]


def test_group_rates_values_two_groups():
    y, yhat, g = two_groups()
    r = GroupRates.compute(y, yhat, g, min_group_size=1)
    # a: SR = 2/5; TPR = 1/2 (one of two positives selected); FPR = 1/3; errors: rows 2,3 -> 2/5
    # b: SR = 4/5; TPR = 3/3; FPR = 1/2; errors: row 9 -> 1/5
    np.testing.assert_allclose(r.selection_rate, [0.4, 0.8])
    np.testing.assert_allclose(r.tpr, [0.5, 1.0])
    np.testing.assert_allclose(r.fpr, [1 / 3, 0.5])
    np.testing.assert_allclose(r.error_rate, [0.4, 0.2])
    np.testing.assert_allclose(r.accuracy, [0.6, 0.8])


def test_gaps_two_groups():
    y, yhat, g = two_groups()
    r = GroupRates.compute(y, yhat, g, min_group_size=1)
    assert dp_gap(r) == pytest.approx(0.8 - 0.4)
    assert eopp_gap(r) == pytest.approx(1.0 - 0.5)
    # FPR gap = 1/2 - 1/3 = 1/6 < TPR gap 1/2 -> eo_gap = 1/2
    assert eo_gap(r) == pytest.approx(0.5)
    assert error_gap(r) == pytest.approx(0.4 - 0.2)
    assert worst_group_accuracy(r) == pytest.approx(0.6)


def test_gaps_three_groups_fpr_dominates_eo():
    y, yhat, g = three_groups()
    r = GroupRates.compute(y, yhat, g, min_group_size=1)
    # SR: a 3/3, b 1/3, c 2/4  -> dp_gap = 1 - 1/3 = 2/3
    # TPR: a 1/1, b 1/1, c 1/2 -> eopp_gap = 1/2
    # FPR: a 2/2, b 0/2, c 1/2 -> FPR gap = 1 -> eo_gap = max(1/2, 1) = 1
    # error rate: a 2/3, b 0/3, c 2/4 -> error_gap = 2/3; accuracy min = 1/3 (group a)
    assert dp_gap(r) == pytest.approx(2 / 3)
    assert eopp_gap(r) == pytest.approx(0.5)
    assert eo_gap(r) == pytest.approx(1.0)
    assert error_gap(r) == pytest.approx(2 / 3)
    assert worst_group_accuracy(r) == pytest.approx(1 / 3)


def test_group_without_positives_left_out_of_eopp_gap_not_zero():
    # a: y=[0,0,0] ŷ=[1,0,0]: no positives, TPR undefined, FPR 1/3
    # b: y=[1,1,0] ŷ=[1,0,0]: TPR 1/2, FPR 0
    # c: y=[1,1,0,0] ŷ=[1,1,1,0]: TPR 1, FPR 1/2
    y = np.array([0, 0, 0, 1, 1, 0, 1, 1, 0, 0])
    yhat = np.array([1, 0, 0, 1, 0, 0, 1, 1, 1, 0])
    g = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 4)
    r = GroupRates.compute(y, yhat, g, min_group_size=1)
    assert math.isnan(r.tpr[0])
    # over b, c only: 1 - 1/2 = 1/2 (counting a as 0 would give 1)
    assert eopp_gap(r) == pytest.approx(0.5)
    # FPR over a, b, c: 1/2 - 0 = 1/2 -> eo_gap = max(1/2, 1/2)
    assert eo_gap(r) == pytest.approx(0.5)


def test_group_without_negatives_left_out_of_fpr_gap():
    # a: y=[1,1,1] ŷ=[1,1,0]: no negatives, FPR undefined, TPR 2/3
    # b: y=[1,0,0] ŷ=[1,1,0]: TPR 1, FPR 1/2
    # c: y=[1,0,0,0] ŷ=[1,1,1,1]: TPR 1, FPR 1
    y = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0])
    yhat = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 1])
    g = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 4)
    r = GroupRates.compute(y, yhat, g, min_group_size=1)
    assert math.isnan(r.fpr[0])
    assert r.gap("fpr") == pytest.approx(1.0 - 0.5)  # b, c only (a as 0 would give 1)
    assert eopp_gap(r) == pytest.approx(1.0 - 2 / 3)
    assert eo_gap(r) == pytest.approx(0.5)  # max(1/3, 1/2)


def test_eo_gap_nan_when_tpr_gap_undefined():
    # a: y=[0,0] ŷ=[1,0] (no positives); b: y=[1,0] ŷ=[1,1]
    # TPR defined for b only -> TPR gap NaN; FPR gap = 1 - 1/2 defined, but eo_gap is NaN
    y = np.array([0, 0, 1, 0])
    yhat = np.array([1, 0, 1, 1])
    g = np.array(["a", "a", "b", "b"])
    r = GroupRates.compute(y, yhat, g, min_group_size=1)
    assert math.isnan(eopp_gap(r))
    assert r.gap("fpr") == pytest.approx(0.5)
    assert math.isnan(eo_gap(r))


def test_single_group_all_gaps_nan():
    y = np.array([1, 0, 1, 0, 1])
    yhat = np.array([1, 0, 0, 0, 1])
    r = GroupRates.compute(y, yhat, np.zeros(5, int), min_group_size=1)
    for gap in (dp_gap, eopp_gap, eo_gap, error_gap):
        assert math.isnan(gap(r))
    # worst_group_accuracy is not a gap: one group, accuracy 4/5
    assert worst_group_accuracy(r) == pytest.approx(0.8)


def test_single_group_flagged_in_report():
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.9, 0.1, 0.2, 0.3, 0.8])
    report = evaluate(y, p, np.array(["x"] * 5), min_group_size=1)
    for name in GAPS:
        assert math.isnan(report.values[name])
        assert name in report.undefined
    assert any(all(name in note for name in GAPS) for note in report.notes)
    assert "accuracy" not in report.undefined


def test_small_group_left_out_and_listed():
    # a (3 rows): y=[1,0,0] ŷ=[1,0,0] -> SR 1/3, acc 1
    # b (4 rows): y=[1,1,0,0] ŷ=[1,1,1,0] -> SR 3/4, acc 3/4
    # c (2 rows): y=[1,0] ŷ=[0,1] -> SR 1/2, acc 0  (below min_group_size=3)
    y = np.array([1, 0, 0, 1, 1, 0, 0, 1, 0])
    yhat = np.array([1, 0, 0, 1, 1, 1, 0, 0, 1])
    g = np.array(["a"] * 3 + ["b"] * 4 + ["c"] * 2)
    r = GroupRates.compute(y, yhat, g, min_group_size=3)
    assert r.included.tolist() == [True, True, False]
    assert r.left_out == ("c",)
    assert dp_gap(r) == pytest.approx(3 / 4 - 1 / 3)
    assert error_gap(r) == pytest.approx(1 / 4 - 0)  # c's error 1.0 not counted
    assert worst_group_accuracy(r) == pytest.approx(3 / 4)  # c's accuracy 0 not counted


def test_small_group_listed_in_report_notes():
    y = np.array([1, 0, 0, 1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.9])
    g = np.array(["a"] * 3 + ["b"] * 4 + ["tiny"] * 2)
    report = evaluate(y, p, g, min_group_size=3)
    assert report.rates.left_out == ("tiny",)
    assert any("tiny" in note for note in report.notes)


def test_default_min_group_size_is_30():
    # 29 rows in one group, 30 in the other: only the second enters the gaps
    y = np.r_[np.ones(29, int), np.ones(30, int)]
    yhat = y.copy()
    g = np.array(["small"] * 29 + ["big"] * 30)
    r = GroupRates.compute(y, yhat, g)
    assert r.left_out == ("small",)
    assert math.isnan(dp_gap(r))


def test_threshold_p_equal_t_is_positive():
    # t = 0.5: p = [0.5, 0.4999, 0.7, 0.3] -> ŷ = [1, 0, 1, 0]; y = [1, 1, 1, 0] -> accuracy 3/4
    y = np.array([1, 1, 1, 0])
    p = np.array([0.5, 0.4999, 0.7, 0.3])
    report = evaluate(y, p, np.array(["a", "a", "b", "b"]), min_group_size=1)
    assert report.values["accuracy"] == pytest.approx(0.75)
    # SR a = 1/2, SR b = 1/2
    np.testing.assert_allclose(report.rates.selection_rate, [0.5, 0.5])


def test_threshold_non_default():
    # t = 0.3: p = [0.3, 0.29, 0.6, 0.1] -> ŷ = [1, 0, 1, 0]; y = [0, 0, 1, 0] -> accuracy 3/4
    y = np.array([0, 0, 1, 0])
    p = np.array([0.3, 0.29, 0.6, 0.1])
    report = evaluate(y, p, np.array(["a", "a", "b", "b"]), threshold=0.3, min_group_size=1)
    assert report.values["accuracy"] == pytest.approx(0.75)
    np.testing.assert_allclose(report.rates.selection_rate, [0.5, 0.5])


def test_codes_with_names_keeps_empty_group():
    # codes into ("a", "b", "c"); "b" has no rows
    # a: y=[1,0] ŷ=[1,1] -> SR 1; c: y=[1,0] ŷ=[0,0] -> SR 0
    y = np.array([1, 0, 1, 0])
    yhat = np.array([1, 1, 0, 0])
    codes = np.array([0, 0, 2, 2])
    r = GroupRates.compute(y, yhat, codes, names=("a", "b", "c"), min_group_size=1)
    assert r.names == ("a", "b", "c")
    assert r.count.tolist() == [2, 0, 2]
    assert math.isnan(r.selection_rate[1]) and math.isnan(r.accuracy[1])
    assert "b" in r.left_out
    assert dp_gap(r) == pytest.approx(1.0)
    # a: y=[1,0] ŷ=[1,1] -> acc 1/2; c: y=[1,0] ŷ=[0,0] -> acc 1/2; empty b not a 0
    assert worst_group_accuracy(r) == pytest.approx(0.5)


def test_empty_named_group_not_counted_even_with_min_group_size_zero():
    y = np.array([1, 0, 1, 0])
    yhat = np.array([1, 1, 1, 0])
    r = GroupRates.compute(y, yhat, np.array([0, 0, 2, 2]), names=("a", "b", "c"), min_group_size=0)
    # a: SR 1, acc 1/2; c: SR 1/2, acc 1. Empty b must not enter as 0.
    assert dp_gap(r) == pytest.approx(0.5)
    assert worst_group_accuracy(r) == pytest.approx(0.5)


def test_group_labels_sorted_into_names():
    r = GroupRates.compute([1, 0, 1], [1, 0, 0], np.array(["z", "m", "z"]), min_group_size=1)
    assert r.names == ("m", "z")
    assert r.count.tolist() == [1, 2]


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        GroupRates.compute([1, 0], [1, 0, 1], ["a", "a", "b"])


def test_unknown_rate_raises():
    y, yhat, g = two_groups()
    with pytest.raises(ValueError, match="unknown rate"):
        GroupRates.compute(y, yhat, g).gap("precision")


def test_worst_group_accuracy_nan_when_no_group_included():
    r = GroupRates.compute([1, 0], [1, 0], ["a", "b"], min_group_size=5)
    assert math.isnan(worst_group_accuracy(r))


# --------------------------------------------------------------------------- evaluate


Y12 = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1])
P12 = np.array([0.9, 0.2, 0.55, 0.4, 0.6, 0.1, 0.8, 0.35, 0.5, 0.45, 0.05, 0.7])
G12 = np.array(["a", "a", "a", "a", "b", "b", "b", "b", "c", "c", "c", "c"])


def test_evaluate_accuracy_by_hand():
    # ŷ = 1[p >= .5] = [1,0,1,0,1,0,1,0,1,0,0,1]; wrong at rows 3 (y1 ŷ0) and 4 (y0 ŷ1) -> 10/12
    report = evaluate(Y12, P12, G12, min_group_size=1)
    assert report.values["accuracy"] == pytest.approx(10 / 12)


def test_evaluate_matches_sklearn():
    report = evaluate(Y12, P12, G12, min_group_size=1)
    yhat = (P12 >= 0.5).astype(int)
    assert report.values["accuracy"] == pytest.approx(skm.accuracy_score(Y12, yhat))
    assert report.values["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y12, yhat))
    assert report.values["roc_auc"] == pytest.approx(skm.roc_auc_score(Y12, P12))
    assert report.values["log_loss"] == pytest.approx(skm.log_loss(Y12, P12))


def test_evaluate_log_loss_by_formula():
    report = evaluate(Y12, P12, G12, min_group_size=1)
    expected = -np.mean(Y12 * np.log(P12) + (1 - Y12) * np.log(1 - P12))
    assert report.values["log_loss"] == pytest.approx(expected)


def test_evaluate_group_gaps_by_hand():
    report = evaluate(Y12, P12, G12, min_group_size=1)
    # ŷ per group: a [1,0,1,0], b [1,0,1,0], c [1,0,0,1]; SR all 1/2 -> dp_gap 0
    # TPR: a 2/3 (y=[1,0,1,1]), b 1/1, c 2/2 -> eopp 1/3;  FPR: a 0/1, b 1/3, c 0/2 -> 1/3
    # errors: a 1/4, b 1/4, c 0 -> error_gap 1/4; worst accuracy 3/4
    assert report.values["dp_gap"] == pytest.approx(0.0)
    assert report.values["eopp_gap"] == pytest.approx(1 / 3)
    assert report.values["eo_gap"] == pytest.approx(1 / 3)
    assert report.values["error_gap"] == pytest.approx(0.25)
    assert report.values["worst_group_accuracy"] == pytest.approx(0.75)
    assert report.undefined == ()
    assert report.notes == ()


def test_evaluate_reports_every_metric():
    report = evaluate(Y12, P12, G12, min_group_size=1)
    assert set(report.values) == {
        "accuracy", "balanced_accuracy", "roc_auc", "log_loss",
        "dp_gap", "eopp_gap", "eo_gap", "error_gap", "worst_group_accuracy",
        "harm", "confident_error_rate", "coverage", "selective_risk", "ece",
    }  # fmt: skip


def test_evaluate_roc_auc_nan_with_one_class():
    y = np.ones(6, int)
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.7, 0.2])
    report = evaluate(y, p, np.array(["a"] * 3 + ["b"] * 3), min_group_size=1)
    assert math.isnan(report.values["roc_auc"])
    assert "roc_auc" in report.undefined
    assert report.values["accuracy"] == pytest.approx(4 / 6)  # p >= .5 at 4 of 6 rows


def test_evaluate_balanced_accuracy_one_class_as_sklearn():
    """DESIGN.md: balanced_accuracy "as scikit-learn defines them". With one class in y_true,
    scikit-learn still returns a number (the recall of that class, here 4/6)."""
    y = np.ones(6, int)
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.7, 0.2])
    yhat = (p >= 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.balanced_accuracy_score(y, yhat)
    report = evaluate(y, p, np.array(["a"] * 3 + ["b"] * 3), min_group_size=1)
    assert report.values["balanced_accuracy"] == pytest.approx(expected)


def test_evaluate_log_loss_extreme_probability_as_sklearn():
    """DESIGN.md: log_loss "as scikit-learn defines them". A probability of exactly 0 for a
    positive row is clipped by scikit-learn at float64 eps, not at 1e-15."""
    y = np.array([1, 0, 1, 0])
    p = np.array([0.0, 0.5, 0.5, 0.5])
    report = evaluate(y, p, np.array(["a", "a", "b", "b"]), min_group_size=1)
    assert report.values["log_loss"] == pytest.approx(skm.log_loss(y, p))


def test_evaluate_accepts_codes_and_names():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.2, 0.1])
    report = evaluate(y, p, np.array([0, 0, 2, 2]), names=("a", "b", "c"), min_group_size=1)
    # a: ŷ=[1,1] SR 1; c: ŷ=[0,0] SR 0; b empty, left out
    assert report.values["dp_gap"] == pytest.approx(1.0)
    assert "b" in report.rates.left_out
