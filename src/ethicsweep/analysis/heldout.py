"""Re-evaluate trained trials from their checkpoints, on any split (the test split above all)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ethicsweep.data import PreparedData
from ethicsweep.objectives import MetricReport
from ethicsweep.objectives.metrics import bootstrap_group_rates
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.checkpoint import MODEL_FILE, load_model
from ethicsweep.trainables.scoring import outputs, test_metrics


def trial_config(base: TrainConfig, params_json: str) -> TrainConfig:
    """The resolved training config of a trial from its searched parameters (JSON)."""
    return base.with_params(json.loads(params_json))


@dataclass(frozen=True)
class Heldout:
    """A model on the test split: every metric (with the per-group table), and bootstrap
    intervals of the group rates."""

    report: MetricReport
    intervals: pd.DataFrame


def evaluate_checkpoint(checkpoint: str | Path, config: TrainConfig, data: PreparedData, replicates: int = 200) -> Heldout:
    """Every metric of the checkpointed model of ``config`` on the test split, and 95%
    bootstrap intervals (``replicates`` resamples, seeded by ``config.seed``) of its group rates."""
    model = load_model(Path(checkpoint) / MODEL_FILE, config.model, data.train.X.shape[1])
    out = outputs(model, data.test)
    decisions = (out.proba >= config.model.threshold).astype(np.int64)
    intervals = bootstrap_group_rates(data.test.y, decisions, data.test.groups, data.group_names, replicates, seed=config.seed)
    return Heldout(test_metrics(model, config, data, out=out), intervals)
