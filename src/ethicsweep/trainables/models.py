"""PyTorch models that map a feature vector to a logit of P(y=1), and, with a trained
abstain option, a second logit of P(abstain)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ethicsweep.spec import ModelSpec


def build_model(spec: ModelSpec, n_features: int) -> nn.Module:
    """Logistic regression (one linear layer) or an MLP with ReLU hidden layers.

    The output is (n,) logits, or (n, 2) logits — class, abstain — when
    ``spec.abstain == "trained"``. No BatchNorm, so the same models can train under DP-SGD.
    """
    outputs = 2 if spec.abstain == "trained" else 1
    layers: list[nn.Module] = []
    width = n_features
    if spec.kind == "mlp":
        for _ in range(spec.layers):
            layers += [nn.Linear(width, spec.hidden), nn.ReLU()]
            if spec.dropout:
                layers.append(nn.Dropout(spec.dropout))
            width = spec.hidden
    layers.append(nn.Linear(width, outputs))
    if outputs == 1:
        layers.append(nn.Flatten(0))
    return nn.Sequential(*layers)


def split_outputs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(class logits, abstain logits or None) from a model's output."""
    return (out[:, 0], out[:, 1]) if out.dim() == 2 else (out, None)


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits of P(y=1) for every row of ``X`` and, with a trained abstain output, logits of
    P(abstain); computed in evaluation mode, in batches. No rows give empty arrays."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(X[i : i + batch_size]) for i in range(0, max(len(X), 1), batch_size)])  # no rows: one empty batch
    model.train(was_training)
    logits, abstain = split_outputs(out)
    return logits.cpu().numpy(), (abstain.cpu().numpy() if abstain is not None else None)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def abstain_mask(spec: ModelSpec, proba: np.ndarray, abstain_proba: np.ndarray | None) -> np.ndarray | None:
    """Rows routed to a person: by the rule max(p, 1 − p) < ``abstain_confidence``, or where
    the trained abstain output is >= 0.5; None when the model never abstains."""
    if spec.abstain == "rule":
        return np.maximum(proba, 1 - proba) < spec.abstain_confidence
    if spec.abstain == "trained":
        return abstain_proba >= 0.5
    return None
