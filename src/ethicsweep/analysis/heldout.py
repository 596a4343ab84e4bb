"""Re-evaluate trained trials from their checkpoints, on any split (the test split above all)."""

from __future__ import annotations

import json
from pathlib import Path

from ethicsweep.data import PreparedData
from ethicsweep.objectives import MetricReport
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.checkpoint import MODEL_FILE, load_model
from ethicsweep.trainables.scoring import test_metrics


def trial_config(base: TrainConfig, params_json: str) -> TrainConfig:
    """The resolved training config of a trial from its searched parameters (JSON)."""
    return base.with_params(json.loads(params_json))


def evaluate_checkpoint(checkpoint: str | Path, config: TrainConfig, data: PreparedData) -> MetricReport:
    """Every metric of the checkpointed model of ``config`` on the test split."""
    model = load_model(Path(checkpoint) / MODEL_FILE, config.model, data.train.X.shape[1])
    return test_metrics(model, config, data)
