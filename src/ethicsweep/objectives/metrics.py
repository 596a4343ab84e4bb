"""Exact, non-differentiable metrics of a binary classifier on one split.

Every group metric is built on one object, :class:`GroupRates` (counts and rates per
group); the gaps are thin named wrappers over :meth:`GroupRates.gap`. Semantics follow
DESIGN.md: a group smaller than ``min_group_size`` is left out of the gaps; a group whose
rate is undefined (no rows, no positives, no negatives) is left out of that gap, never
counted as 0; a gap over fewer than two defined groups is NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from sklearn import metrics as skm

Direction = Literal["max", "min"]

#: Every metric :func:`evaluate` reports, with the direction in which it is better.
METRIC_DIRECTIONS: dict[str, Direction] = {
    "accuracy": "max",
    "balanced_accuracy": "max",
    "roc_auc": "max",
    "log_loss": "min",
    "dp_gap": "min",
    "eopp_gap": "min",
    "eo_gap": "min",
    "error_gap": "min",
    "worst_group_accuracy": "max",
    "harm": "min",
    "confident_error_rate": "min",
    "coverage": "max",
    "selective_risk": "min",
    "ece": "min",
    "leakage": "min",
    "epsilon": "min",
    "mia_auc": "min",
    "mia_advantage": "min",
    "mia_tpr_at_1pct_fpr": "min",
}

#: Metrics computed across groups: undefined unless a split holds two groups large enough.
GROUP_METRICS = ("dp_gap", "eopp_gap", "eo_gap", "error_gap", "worst_group_accuracy")

RATES = ("selection_rate", "tpr", "fpr", "error_rate", "accuracy")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


@dataclass(frozen=True)
class GroupRates:
    """Counts and rates per group. A rate is NaN where it is undefined for that group.

    ``included`` marks the groups with at least ``min_group_size`` rows; only they enter
    gaps and worst-group metrics.
    """

    names: tuple[str, ...]
    count: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    selection_rate: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    error_rate: np.ndarray
    accuracy: np.ndarray
    included: np.ndarray
    min_group_size: int

    @classmethod
    def compute(
        cls,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        groups: np.ndarray,
        names: tuple[str, ...] | list[str] | None = None,
        min_group_size: int = 30,
    ) -> GroupRates:
        """Per-group rates of hard predictions ``y_pred`` (0/1) against ``y_true`` (0/1).

        ``groups`` holds a label per row; with ``names`` given, it holds integer codes into
        ``names`` instead, and groups with no rows are listed with a count of 0.
        """
        y_true = np.asarray(y_true).astype(np.int64).ravel()
        y_pred = np.asarray(y_pred).astype(np.int64).ravel()
        groups = np.asarray(groups).ravel()
        if not (len(y_true) == len(y_pred) == len(groups)):
            raise ValueError(f"y_true, y_pred and groups differ in length: {len(y_true)}, {len(y_pred)}, {len(groups)}")
        if names is None:
            uniques, codes = np.unique(groups, return_inverse=True)
            names = tuple(str(u) for u in uniques)
        else:
            codes, names = groups.astype(np.int64), tuple(names)
        k = len(names)

        def per_group(mask: np.ndarray) -> np.ndarray:
            return np.bincount(codes[mask], minlength=k).astype(np.float64)

        everyone = np.ones_like(y_true, dtype=bool)
        count, positives = per_group(everyone), per_group(y_true == 1)
        negatives = count - positives
        selected = per_group(y_pred == 1)
        true_pos = per_group((y_pred == 1) & (y_true == 1))
        false_pos = per_group((y_pred == 1) & (y_true == 0))
        errors = per_group(y_pred != y_true)
        error_rate = _ratio(errors, count)
        return cls(
            names=names,
            count=count.astype(np.int64),
            positives=positives.astype(np.int64),
            negatives=negatives.astype(np.int64),
            selection_rate=_ratio(selected, count),
            tpr=_ratio(true_pos, positives),
            fpr=_ratio(false_pos, negatives),
            error_rate=error_rate,
            accuracy=1.0 - error_rate,
            included=count >= min_group_size,
            min_group_size=min_group_size,
        )

    def defined(self, rate: str) -> np.ndarray:
        """Mask of included groups where ``rate`` is defined."""
        return self.included & ~np.isnan(getattr(self, rate))

    def gap(self, rate: str) -> float:
        """max − min of ``rate`` over included groups where it is defined; NaN if fewer than two."""
        if rate not in RATES:
            raise ValueError(f"unknown rate {rate!r}; allowed: {', '.join(RATES)}")
        values = getattr(self, rate)[self.defined(rate)]
        return float(values.max() - values.min()) if len(values) >= 2 else float("nan")

    @property
    def left_out(self) -> tuple[str, ...]:
        """Groups with fewer than ``min_group_size`` rows (left out of every gap)."""
        return tuple(n for n, inc in zip(self.names, self.included) if not inc)

    def table(self) -> pd.DataFrame:
        """One row per group: counts, rates and whether it enters the gaps."""
        frame = pd.DataFrame({"group": self.names, "count": self.count, "positives": self.positives})
        for rate in RATES:
            frame[rate] = getattr(self, rate)
        frame["included"] = self.included
        return frame


def dp_gap(rates: GroupRates) -> float:
    """Demographic-parity gap: spread of selection rates."""
    return rates.gap("selection_rate")


def eopp_gap(rates: GroupRates) -> float:
    """Equal-opportunity gap: spread of true-positive rates (groups with positives only)."""
    return rates.gap("tpr")


def eo_gap(rates: GroupRates) -> float:
    """Equalized-odds gap: the larger of the TPR and FPR spreads; NaN if either is undefined."""
    tpr_gap, fpr_gap = rates.gap("tpr"), rates.gap("fpr")
    return float("nan") if np.isnan(tpr_gap) or np.isnan(fpr_gap) else max(tpr_gap, fpr_gap)


def error_gap(rates: GroupRates) -> float:
    """Spread of group error rates."""
    return rates.gap("error_rate")


def worst_group_accuracy(rates: GroupRates) -> float:
    """Lowest accuracy among included groups; NaN when no group is included."""
    values = rates.accuracy[rates.defined("accuracy")]
    return float(values.min()) if len(values) else float("nan")


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width bins of [0, 1] on the predicted class's confidence.

    The predicted class is 1[p >= threshold]; its confidence is p for class 1, 1 − p for
    class 0. A confidence of exactly 1.0 falls in the last bin.
    ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b|.
    """
    y_true, proba = np.asarray(y_true).ravel(), np.asarray(proba, dtype=np.float64).ravel()
    y_pred = proba >= threshold
    confidence = np.where(y_pred, proba, 1 - proba)
    correct = (y_pred == (y_true == 1)).astype(np.float64)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    filled = counts > 0
    accuracy = np.bincount(index, weights=correct, minlength=bins)[filled] / counts[filled]
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)[filled] / counts[filled]
    return float(np.sum(counts[filled] / len(proba) * np.abs(accuracy - mean_confidence)))


def harm(
    y_true: np.ndarray,
    decisions: np.ndarray,
    groups: np.ndarray,
    matrices: np.ndarray,
    group_weights: np.ndarray,
    context: np.ndarray | None = None,
) -> float:
    """Mean over rows of group_weight[g] · C_ctx[y, decision]; decisions 0, 1 or 2 (abstain).

    ``matrices`` has shape (n_contexts, 2, 3); without ``context``, or with a single matrix,
    every row uses matrix 0.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    matrices = np.asarray(matrices)
    context = np.zeros_like(y_true) if context is None or len(matrices) == 1 else np.asarray(context).astype(np.int64)
    costs = matrices[context, y_true, np.asarray(decisions).astype(np.int64)]
    return float(np.mean(np.asarray(group_weights)[np.asarray(groups).astype(np.int64)] * costs))


@dataclass(frozen=True)
class MetricReport:
    """All metrics of one model on one split, with the per-group table they came from."""

    values: dict[str, float]
    rates: GroupRates
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def undefined(self) -> tuple[str, ...]:
        """Metrics that came out NaN (never to be read as fair)."""
        return tuple(k for k, v in self.values.items() if np.isnan(v))


DEFAULT_COSTS = np.array([[[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]]])


def evaluate(
    y_true: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray,
    names: tuple[str, ...] | list[str] | None = None,
    threshold: float = 0.5,
    min_group_size: int = 30,
    *,
    abstain: np.ndarray | None = None,
    context: np.ndarray | None = None,
    cost_matrices: np.ndarray | None = None,
    cost_group_weights: np.ndarray | None = None,
    confidence_threshold: float = 0.9,
) -> MetricReport:
    """Every metric in :data:`METRIC_DIRECTIONS` from predicted probabilities P(y=1).

    ``y_hat = 1[proba >= threshold]``; ``abstain`` marks rows the model routes to a person
    (none by default). Accuracy, the group rates and ECE are over every row's ``y_hat``;
    ``coverage`` is the share not abstained, ``selective_risk`` the error rate on those
    (NaN when none is covered), ``harm`` the mean cost of the decisions taken (abstain
    included) under ``cost_matrices`` (shape (n_contexts, 2, 3), default: 1 per error,
    0.5 per abstention) scaled by ``cost_group_weights`` (default 1).
    ``confident_error_rate`` is the share of rows decided wrongly (not abstained) with
    max(p, 1 − p) >= ``confidence_threshold``. ``roc_auc`` is NaN when ``y_true`` has one
    class. ``groups`` holds labels, or codes into ``names`` when ``names`` is given.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    proba = np.asarray(proba, dtype=np.float64).ravel()
    y_pred = (proba >= threshold).astype(np.int64)
    rates = GroupRates.compute(y_true, y_pred, groups, names, min_group_size)
    covered = np.ones_like(y_true, dtype=bool) if abstain is None else ~np.asarray(abstain, dtype=bool).ravel()
    wrong = y_pred != y_true
    both_classes = len(np.unique(y_true)) == 2
    with warnings.catch_warnings():  # one class: scikit-learn warns, and still defines the value
        warnings.simplefilter("ignore", UserWarning)
        balanced_accuracy = float(skm.balanced_accuracy_score(y_true, y_pred))
    codes = np.unique(np.asarray(groups).ravel(), return_inverse=True)[1] if names is None else np.asarray(groups)
    n_groups = len(rates.names)
    values = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced_accuracy,
        "roc_auc": float(skm.roc_auc_score(y_true, proba)) if both_classes else float("nan"),
        "log_loss": float(skm.log_loss(y_true, proba, labels=[0, 1])),
        "dp_gap": dp_gap(rates),
        "eopp_gap": eopp_gap(rates),
        "eo_gap": eo_gap(rates),
        "error_gap": error_gap(rates),
        "worst_group_accuracy": worst_group_accuracy(rates),
        "harm": harm(
            y_true,
            np.where(covered, y_pred, 2),
            codes,
            DEFAULT_COSTS if cost_matrices is None else cost_matrices,
            np.ones(n_groups) if cost_group_weights is None else cost_group_weights,
            context,
        ),
        "confident_error_rate": float(np.mean(covered & wrong & (np.maximum(proba, 1 - proba) >= confidence_threshold))),
        "coverage": float(np.mean(covered)),
        "selective_risk": float(np.mean(wrong[covered])) if covered.any() else float("nan"),
        "ece": expected_calibration_error(y_true, proba, threshold),
    }
    notes = []
    if rates.left_out:
        notes.append(f"left out of gaps (fewer than {min_group_size} rows): {', '.join(rates.left_out)}")
    undefined = [k for k, v in values.items() if np.isnan(v)]
    if undefined:
        notes.append(f"undefined (fewer than two defined groups, one class, or nothing covered): {', '.join(undefined)}")
    return MetricReport(values=values, rates=rates, notes=tuple(notes))


BOOTSTRAP_RATES = ("selection_rate", "tpr", "fpr", "accuracy")


def bootstrap_group_rates(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    codes: np.ndarray,
    names: tuple[str, ...],
    replicates: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Percentile bootstrap intervals of each group's selection rate, TPR, FPR and accuracy.

    Every replicate resamples all rows with replacement (so group sizes vary, as they
    would in a new sample); a rate undefined in a replicate (no rows, positives or
    negatives of that group) is left out of that rate's percentiles. One row per group
    and rate: ``group``, ``rate``, ``low``, ``high``; NaN bounds when no replicate defines it.
    """
    y_true = np.asarray(y_true).astype(np.float64).ravel()
    y_pred = np.asarray(y_pred).astype(np.float64).ravel()
    one_hot = np.zeros((len(y_true), len(names)))
    one_hot[np.arange(len(y_true)), np.asarray(codes, dtype=np.int64)] = 1.0
    weights = np.random.default_rng(seed).multinomial(len(y_true), np.full(len(y_true), 1 / len(y_true)), size=replicates)
    total = weights @ one_hot
    positives, negatives = weights @ (one_hot * y_true[:, None]), weights @ (one_hot * (1 - y_true)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {
            "selection_rate": (weights @ (one_hot * y_pred[:, None])) / total,
            "tpr": (weights @ (one_hot * (y_pred * y_true)[:, None])) / positives,
            "fpr": (weights @ (one_hot * (y_pred * (1 - y_true))[:, None])) / negatives,
            "accuracy": (weights @ (one_hot * (y_pred == y_true)[:, None])) / total,
        }
    tail = (1 - level) / 2 * 100
    rows = []
    for g, name in enumerate(names):
        for rate in BOOTSTRAP_RATES:
            values = rates[rate][:, g]
            values = values[np.isfinite(values)]
            low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
            rows.append({"group": name, "rate": rate, "low": float(low), "high": float(high)})
    return pd.DataFrame(rows)
