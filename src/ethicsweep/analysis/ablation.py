"""Ablation: retrain a model once per part of its objective with that part removed, and
measure how every test metric moves.

A *part* is one loss term of the training config (by its name) or DP-SGD. The full model
is retrained too, with the same seed, data and splits, so that every column differs from
the full one by exactly one part (the registered weights came from a Ray trial; on CPU the
retrained full model matches them, under DP-SGD its noise differs run to run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ethicsweep.data import PreparedData
from ethicsweep.objectives.metrics import METRIC_DIRECTIONS
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.scoring import test_metrics
from ethicsweep.trainables.train import train

FULL = "full"
DP_SGD = "dp_sgd"


def ablations(config: TrainConfig) -> dict[str, TrainConfig]:
    """The configs to train, by label: ``full`` (``config`` itself), then ``without <term
    name>`` for each term and ``without dp_sgd`` when it trains with DP-SGD."""
    configs = {FULL: config}
    for term in config.terms:
        configs[f"without {term.key}"] = config.model_copy(update={"terms": [t for t in config.terms if t.key != term.key]})
    if config.privacy.dp_sgd:
        configs[f"without {DP_SGD}"] = config.model_copy(update={"privacy": config.privacy.model_copy(update={"dp_sgd": False})})
    return configs


@dataclass(frozen=True)
class Ablation:
    """Test metrics by configuration label (columns) and metric (rows), in metric order."""

    metrics: pd.DataFrame

    def changes(self) -> pd.DataFrame:
        """Each ablated column minus the full one (> 0: the metric rose without the part)."""
        return self.metrics.drop(columns=FULL).sub(self.metrics[FULL], axis=0)

    def table(self) -> pd.DataFrame:
        """One row per metric: its direction, the full model's value, then for each part
        the value without it and the change."""
        rows = self.metrics.copy()
        out = pd.DataFrame({"metric": rows.index, "better": [METRIC_DIRECTIONS[m] for m in rows.index], FULL: rows[FULL].to_numpy()})
        for label, change in self.changes().items():
            out[label] = rows[label].to_numpy()
            out[f"change {label.removeprefix('without ')}"] = change.to_numpy()
        return out


def ablate(config: TrainConfig, data: PreparedData, on_done: Callable[[str], None] | None = None) -> Ablation:
    """Train every config of :func:`ablations` on ``data`` (which must hold the test split)
    and score each on test; ``on_done(label)`` after each one."""
    columns = {}
    for label, ablated in ablations(config).items():
        state = train(ablated, data)
        values = test_metrics(state.model, ablated, data, epsilon=state.epsilon()).values
        columns[label] = {m: values[m] for m in METRIC_DIRECTIONS if m in values}
        if on_done is not None:
            on_done(label)
    return Ablation(pd.DataFrame(columns))
