"""Score a model on a split: its decisions (abstentions included) and every exact metric."""

from __future__ import annotations

import torch
from torch import nn

from ethicsweep.data import PreparedData, Split
from ethicsweep.objectives import MetricReport, evaluate
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.models import abstain_mask, predict


def score(model: nn.Module, config: TrainConfig, data: PreparedData, split: Split, device: str | torch.device = "cpu") -> MetricReport:
    """Every metric of ``model`` (trained with ``config``) on ``split`` of ``data``.

    Decisions use the model's threshold and abstention setting; harm uses ``config.harm``.
    """
    proba, abstain_proba = predict(model, torch.as_tensor(split.X, device=device))
    costs = config.harm
    return evaluate(
        split.y,
        proba,
        split.groups,
        data.group_names,
        config.model.threshold,
        data.min_group_size,
        abstain=abstain_mask(config.model, proba, abstain_proba),
        context=split.context,
        cost_matrices=costs.matrices(data.context_names),
        cost_group_weights=costs.weights(data.group_names),
        confidence_threshold=costs.confidence_threshold,
    )
