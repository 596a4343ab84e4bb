"""Leakage: how much the model's outputs reveal the sensitive group.

The term trains an adversary that predicts the group from the model's outputs; the model
receives the adversary's gradient reversed (gradient reversal, Ganin & Lempitsky 2015),
so it learns outputs the adversary cannot read. The term's value is the adversary's
cross-entropy. The *metric* never uses that adversary: a fresh logistic regression is
fitted after training (:func:`leakage`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from ethicsweep.objectives.base import Batch, Term, TermContext, TermSpecBase


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient flowing back is multiplied by −``strength``."""
    return _ReverseGradient.apply(x, strength)


def output_features(logits: torch.Tensor, abstain_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The model outputs an attacker sees, shape (n, 1) or (n, 2) with an abstain output."""
    columns = [logits] if abstain_logits is None else [logits, abstain_logits]
    return torch.stack(columns, dim=1)


class LeakageAdversary(Term):
    """Cross-entropy of an adversary predicting the group from the outputs, through gradient reversal."""

    def __init__(self, n_groups: int, hidden: int, strength: float, n_outputs: int = 1):
        super().__init__()
        self.strength = strength
        self.adversary = nn.Sequential(nn.Linear(n_outputs, hidden), nn.ReLU(), nn.Linear(hidden, n_groups))

    def forward(self, batch: Batch) -> torch.Tensor:
        features = output_features(batch.logits, batch.abstain_logits)
        return F.cross_entropy(self.adversary(reverse_gradient(features, self.strength)), batch.groups)


class LeakageAdversarySpec(TermSpecBase):
    """An adversary on the outputs, trained with the model; the model is pushed to defeat it."""

    kind: Literal["leakage_adversary"]
    hidden: int = Field(16, ge=1, le=1024, description="the adversary's hidden units")
    strength: float = Field(1.0, gt=0.0, description="factor on the reversed gradient the model receives")

    def build(self, context: TermContext) -> LeakageAdversary:
        return LeakageAdversary(context.n_groups, self.hidden, self.strength, 2 if context.abstain_output else 1)


LEAKAGE_SPECS = (LeakageAdversarySpec,)


def leakage(fit_outputs: np.ndarray, fit_groups: np.ndarray, eval_outputs: np.ndarray, eval_groups: np.ndarray, seed: int = 0) -> float:
    """Balanced accuracy of a fresh logistic regression that predicts the group from model
    outputs (fitted on one split, scored on another), minus 1/k — the balanced accuracy of
    always predicting the majority group, k the number of groups in the scored split.

    0 means the outputs reveal nothing a linear attacker can use; NaN when either split
    holds fewer than two groups.
    """
    fit_outputs = np.asarray(fit_outputs, dtype=np.float64).reshape(len(fit_groups), -1)
    eval_outputs = np.asarray(eval_outputs, dtype=np.float64).reshape(len(eval_groups), -1)
    k = len(np.unique(eval_groups))
    if len(np.unique(fit_groups)) < 2 or k < 2:
        return float("nan")
    attacker = LogisticRegression(max_iter=1000, random_state=seed).fit(fit_outputs, fit_groups)
    return float(balanced_accuracy_score(eval_groups, attacker.predict(eval_outputs)) - 1.0 / k)
