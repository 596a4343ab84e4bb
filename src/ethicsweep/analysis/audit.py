"""Audit a registered model on new labelled data: score it, recompute every per-split
metric and the per-group table, and compare with the metrics recorded for the version on
the test split.

A metric *breaches* when it is worse than recorded — lower for a metric to maximize,
higher for one to minimize — by more than its tolerance (absolute, in the metric's
units), or when it is undefined (NaN) now but was defined. Improvements never breach.
Leakage, the membership metrics and ε need the training data or the accountant and are
not recomputed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ethicsweep.analysis.pyfunc import CONFIG_FILE, FrontModel
from ethicsweep.data.groups import encode_groups
from ethicsweep.data.loaders import Table
from ethicsweep.data.prepare import context_codes
from ethicsweep.errors import DataError
from ethicsweep.objectives import MetricReport, evaluate
from ethicsweep.objectives.metrics import METRIC_DIRECTIONS
from ethicsweep.spec import SweepSpec, TrainConfig


@dataclass(frozen=True)
class Check:
    """One metric: recorded on test, observed now, how much worse (> 0: worse), its
    tolerance, and the 95% bootstrap interval of the observed value (sampling noise)."""

    metric: str
    recorded: float
    observed: float
    worse_by: float
    tolerance: float
    low: float = math.nan
    high: float = math.nan

    @property
    def within_noise(self) -> bool:
        """Whether the recorded value lies inside the observed value's 95% interval: a
        difference this small could be sampling noise."""
        return bool(self.low <= self.recorded <= self.high)

    @property
    def breach(self) -> bool:
        if math.isnan(self.recorded):
            return False
        return math.isnan(self.observed) or self.worse_by > self.tolerance


@dataclass(frozen=True)
class Audit:
    """The outcome: rows scored, every metric now (with its per-group table), the checks."""

    rows: int
    report: MetricReport
    checks: list[Check]

    @property
    def breaches(self) -> list[Check]:
        return [c for c in self.checks if c.breach]


def model_files(directory: Path) -> tuple[SweepSpec, TrainConfig, dict]:
    """The spec, training config and data description stored with a version."""
    spec = SweepSpec.model_validate_json((directory / "spec.json").read_text())
    config = TrainConfig.model_validate_json((directory / CONFIG_FILE).read_text())
    described = json.loads((directory / "data.json").read_text())
    absent = [key for key in ("label", "positive_label", "sensitive", "min_group_size") if key not in described]
    if absent:
        raise DataError(f"MODEL: its data.json lacks {', '.join(absent)} (registered by an older ethicsweep); rerun the sweep to audit it")
    return spec, config, described


def compare(
    observed: dict[str, float],
    recorded: dict[str, float],
    tolerance: float,
    per_metric: dict[str, float],
    intervals: dict[str, tuple[float, float]] | None = None,
) -> list[Check]:
    """A check for every metric that is both observed and recorded, in metric order;
    ``intervals``: the observed values' bootstrap intervals, by metric."""
    checks = []
    intervals = intervals or {}
    for metric, direction in METRIC_DIRECTIONS.items():
        if metric in observed and metric in recorded:
            now, then = observed[metric], recorded[metric]
            worse = (then - now) if direction == "max" else (now - then)
            checks.append(Check(metric, then, now, worse, per_metric.get(metric, tolerance), *intervals.get(metric, (math.nan, math.nan))))
    return checks


def bootstrap_intervals(score: Callable[[np.ndarray], dict[str, float]], rows: int, replicates: int = 200, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of every metric ``score(indices)`` returns, over
    ``replicates`` resamples of the ``rows`` rows with replacement (seeded); a metric
    undefined in a resample is left out of its percentiles."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(replicates):
        for metric, value in score(rng.integers(0, rows, rows)).items():
            samples.setdefault(metric, []).append(value)
    intervals = {}
    for metric, values in samples.items():
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        intervals[metric] = tuple(float(v) for v in np.percentile(finite, [2.5, 97.5])) if len(finite) else (math.nan, math.nan)
    return intervals


def audit(
    directory: Path,
    table: Table,
    recorded: dict[str, float],
    tolerance: float = 0.02,
    per_metric: dict[str, float] | None = None,
    replicates: int = 200,
) -> Audit:
    """Audit the model stored in ``directory`` (a version's data directory) on ``table``.

    ``recorded``: the version's test metrics by name. Groups and contexts come from the
    table's own values, encoded as the sweep's spec says (sensitive columns, bins, missing
    values); harm uses the version's cost model (a group or context it does not name costs
    as the default). Each observed metric gets a 95% bootstrap interval (``replicates``
    resamples of the rows), so that a breach can be told from sampling noise."""
    spec, config, described = model_files(directory)
    if table.frame.empty:
        raise DataError("DATA: the file has no rows")
    groups = encode_groups(table.frame, described["sensitive"], spec.data.bins, spec.data.missing)
    names, codes = context_codes(table.frame, spec.data.context)
    scored = FrontModel(directory).predict(table.frame)
    y = (table.frame[table.label] == table.positive_label).to_numpy().astype(np.int64)
    harm = config.harm
    proba = scored["probability"].to_numpy()
    abstain = scored["abstain"].to_numpy() if "abstain" in scored else None
    matrices, weights = harm.matrices(names, strict=False), harm.weights(groups.names, strict=False)

    def score(rows: np.ndarray | slice) -> MetricReport:
        return evaluate(
            y[rows], proba[rows], groups.codes[rows], groups.names, config.model.threshold, described["min_group_size"],
            abstain=abstain[rows] if abstain is not None else None, context=codes[rows] if codes is not None else None,
            cost_matrices=matrices, cost_group_weights=weights, confidence_threshold=harm.confidence_threshold,
        )  # fmt: skip

    report = score(slice(None))
    intervals = bootstrap_intervals(lambda rows: score(rows).values, len(y), replicates, seed=config.seed)
    return Audit(rows=len(y), report=report, checks=compare(report.values, recorded, tolerance, per_metric or {}, intervals))

