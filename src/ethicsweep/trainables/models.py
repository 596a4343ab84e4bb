"""PyTorch models that map a feature vector to one logit of P(y=1)."""

from __future__ import annotations

import torch
from torch import nn

from ethicsweep.spec import ModelSpec


def build_model(spec: ModelSpec, n_features: int) -> nn.Module:
    """Logistic regression (one linear layer) or an MLP with ReLU hidden layers.

    No BatchNorm, so the same models can train under DP-SGD.
    """
    if spec.kind == "logistic":
        return nn.Sequential(nn.Linear(n_features, 1), nn.Flatten(0))
    layers: list[nn.Module] = []
    width = n_features
    for _ in range(spec.layers):
        layers += [nn.Linear(width, spec.hidden), nn.ReLU()]
        if spec.dropout:
            layers.append(nn.Dropout(spec.dropout))
        width = spec.hidden
    layers += [nn.Linear(width, 1), nn.Flatten(0)]
    return nn.Sequential(*layers)


@torch.no_grad()
def predict_proba(model: nn.Module, X: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """P(y=1) for every row of ``X``, in evaluation mode, in batches."""
    was_training = model.training
    model.eval()
    out = torch.cat([torch.sigmoid(model(X[i : i + batch_size])) for i in range(0, len(X), batch_size)])
    model.train(was_training)
    return out
