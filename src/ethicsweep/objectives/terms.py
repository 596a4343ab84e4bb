"""Differentiable loss terms. Each takes logits, labels (0/1 float) and group codes of one
minibatch and returns an unweighted scalar; :class:`CompositeLoss` weights and sums them.

Soft rates replace the hard decision ŷ with p = sigmoid(logit): the soft selection rate
of group g is mean(p | g), its soft TPR mean(p | g, y=1), its soft FPR mean(p | g, y=0).
A fairness term penalizes the spread (max − min) of its soft rates over the groups that
the minibatch holds; with fewer than two such groups it is 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def soft_group_rates(p: torch.Tensor, groups: torch.Tensor, n_groups: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``p`` per group over rows where ``mask`` holds.

    Returns ``(rates, present)``: ``rates[g]`` is the group's mean (0 where it has no rows)
    and ``present[g]`` says whether it has any.
    """
    if mask is not None:
        p, groups = p[mask], groups[mask]
    sums = torch.zeros(n_groups, dtype=p.dtype, device=p.device).index_add(0, groups, p)
    counts = torch.bincount(groups, minlength=n_groups).to(p.dtype)
    return sums / counts.clamp(min=1), counts > 0


def spread(rates: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """max − min of ``rates`` over present groups; a zero that keeps the graph if fewer than two."""
    values = rates[present]
    if values.numel() < 2:
        return rates.sum() * 0.0
    return values.max() - values.min()


class BinaryCrossEntropy:
    """The task loss: mean binary cross-entropy of the logits."""

    name = "bce"

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y)


@dataclass(frozen=True)
class DemographicParity:
    """Spread of soft selection rates, mean(p | g), across groups."""

    n_groups: int
    name: str = "demographic_parity"

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return spread(*soft_group_rates(torch.sigmoid(logits), groups, self.n_groups))


@dataclass(frozen=True)
class EqualizedOdds:
    """The larger of the spreads of soft TPR (rows with y=1) and soft FPR (rows with y=0)."""

    n_groups: int
    name: str = "equalized_odds"

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        tpr = spread(*soft_group_rates(p, groups, self.n_groups, y == 1))
        fpr = spread(*soft_group_rates(p, groups, self.n_groups, y == 0))
        return torch.maximum(tpr, fpr)


TERM_TYPES = {"demographic_parity": DemographicParity, "equalized_odds": EqualizedOdds}


@dataclass(frozen=True)
class WeightedTerm:
    name: str
    weight: float
    term: object


class CompositeLoss:
    """Task loss plus weighted terms: ``bce + Σ weight_k · term_k``.

    Calling it returns the total (for ``backward``) and each part's unweighted value.
    """

    def __init__(self, terms: Sequence[WeightedTerm]):
        self.task = BinaryCrossEntropy()
        self.terms = list(terms)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {self.task.name: self.task(logits, y, groups)}
        total = parts[self.task.name]
        for weighted in self.terms:
            value = weighted.term(logits, y, groups)
            parts[weighted.name] = value
            total = total + weighted.weight * value
        return total, parts
