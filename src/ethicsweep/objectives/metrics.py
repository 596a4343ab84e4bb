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
}

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


def evaluate(
    y_true: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray,
    names: tuple[str, ...] | list[str] | None = None,
    threshold: float = 0.5,
    min_group_size: int = 30,
) -> MetricReport:
    """Every metric in :data:`METRIC_DIRECTIONS` from predicted probabilities P(y=1).

    ``y_hat = 1[proba >= threshold]``. ``roc_auc`` is NaN when ``y_true`` has one class.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    proba = np.asarray(proba, dtype=np.float64).ravel()
    y_pred = (proba >= threshold).astype(np.int64)
    rates = GroupRates.compute(y_true, y_pred, groups, names, min_group_size)
    both_classes = len(np.unique(y_true)) == 2
    with warnings.catch_warnings():  # one class: scikit-learn warns, and still defines the value
        warnings.simplefilter("ignore", UserWarning)
        balanced_accuracy = float(skm.balanced_accuracy_score(y_true, y_pred))
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
    }
    notes = []
    if rates.left_out:
        notes.append(f"left out of gaps (fewer than {min_group_size} rows): {', '.join(rates.left_out)}")
    undefined = [k for k, v in values.items() if np.isnan(v)]
    if undefined:
        notes.append(f"undefined (fewer than two defined groups or one class): {', '.join(undefined)}")
    return MetricReport(values=values, rates=rates, notes=tuple(notes))
