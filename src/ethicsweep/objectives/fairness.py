"""Fairness terms: the spread of soft group rates, optionally weighted per group.

Soft rates replace the decision ŷ with p = sigmoid(logit): soft selection rate
mean(p | g), soft TPR mean(p | g, y=1), soft FPR mean(p | g, y=0), soft error rate
mean(y(1-p) + (1-y)p | g). The spread over groups g, h present in the minibatch is

    spread = max_{g,h} (w_g + w_h) / 2 · |r_g − r_h|

with stakeholder weights w (1 for a group not named), which is max − min when every
weight is 1. Groups with fewer than ``min_group_size`` training rows are left out, as the
metrics leave them out. With fewer than two groups present the spread is 0, never NaN.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from ethicsweep.errors import SpecError
from ethicsweep.objectives.base import Batch, Term, TermContext, TermSpecBase


def soft_group_rates(values: torch.Tensor, groups: torch.Tensor, n_groups: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` per group over rows where ``mask`` holds.

    Returns ``(rates, present)``: ``rates[g]`` is the group's mean (0 where it has no
    rows) and ``present[g]`` says whether it has any.
    """
    if mask is not None:
        values, groups = values[mask], groups[mask]
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add(0, groups, values)
    counts = torch.bincount(groups, minlength=n_groups).to(values.dtype)
    return sums / counts.clamp(min=1), counts > 0


def spread(rates: torch.Tensor, present: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted spread of ``rates`` over ``present`` groups (see the module docstring);
    a zero that keeps the graph when fewer than two groups are present."""
    values = rates[present]
    if values.numel() < 2:
        return rates.sum() * 0.0
    if weights is None:
        return values.max() - values.min()
    w = weights.to(values)[present]
    pair_weights = (w[:, None] + w[None, :]) / 2
    return (pair_weights * (values[:, None] - values[None, :]).abs()).max()


class FairnessTerm(Term):
    """Spread of one or two soft group rates; subclasses say which rates.

    ``hard_value`` (what a constraint's multiplier answers to) is the spread of *hard*
    group rates pooled over recent minibatches: exponential moving averages of each
    group's counts with an effective window of ``window`` batches. A single minibatch is
    too small: the spread of noisy per-batch rates is biased upward (by about the rates'
    standard error), which would keep a multiplier growing for a model that meets its bound.
    """

    def __init__(
        self,
        n_groups: int,
        weights: torch.Tensor | None = None,
        eligible: torch.Tensor | None = None,
        threshold: float = 0.5,
        window: int = 1,
    ):
        super().__init__()
        self.n_groups, self.threshold, self.decay = n_groups, threshold, 1.0 - 1.0 / window
        self.register_buffer("weights", weights, persistent=False)
        self.register_buffer("eligible", eligible if eligible is not None else torch.ones(n_groups, dtype=torch.bool), persistent=False)
        self.register_buffer("pooled", torch.zeros(2, 2, n_groups))  # (rate, sum | count, group)

    def rate_values(self, batch: Batch, decisions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(per-row values, row mask) for each rate whose spread counts; the term is the max."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        spreads = []
        for values, mask in self.rate_values(batch, batch.proba):
            rates, present = soft_group_rates(values, batch.groups, self.n_groups, mask)
            spreads.append(spread(rates, present & self.eligible, self.weights))
        return torch.stack(spreads).max()

    @torch.no_grad()
    def hard_value(self, batch: Batch) -> torch.Tensor:
        """Spread of hard rates 1[p >= t] pooled over the last ``window`` batches (this one included)."""
        decisions = (batch.proba >= self.threshold).to(batch.logits.dtype)
        spreads = []
        for index, (values, mask) in enumerate(self.rate_values(batch, decisions)):
            rows = torch.ones_like(values, dtype=torch.bool) if mask is None else mask
            sums = torch.zeros(self.n_groups, dtype=values.dtype, device=values.device).index_add(0, batch.groups[rows], values[rows])
            counts = torch.bincount(batch.groups[rows], minlength=self.n_groups).to(values.dtype)
            pooled = self.pooled[index].to(values)
            pooled.mul_(self.decay).add_(torch.stack([sums, counts]))
            self.pooled[index] = pooled
            rates = pooled[0] / pooled[1].clamp(min=1e-12)
            spreads.append(spread(rates, (pooled[1] > 0) & self.eligible, self.weights))
        return torch.stack(spreads).max()


class DemographicParity(FairnessTerm):
    """Spread of soft selection rates mean(p | g). Answers to ``dp_gap``."""

    def rate_values(self, batch: Batch, decisions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(decisions, None)]


class EqualOpportunity(FairnessTerm):
    """Spread of soft true-positive rates mean(p | g, y=1). Answers to ``eopp_gap``."""

    def rate_values(self, batch: Batch, decisions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(decisions, batch.y == 1)]


class EqualizedOdds(FairnessTerm):
    """The larger of the soft TPR and soft FPR spreads. Answers to ``eo_gap``."""

    def rate_values(self, batch: Batch, decisions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(decisions, batch.y == 1), (decisions, batch.y == 0)]


class ErrorRateParity(FairnessTerm):
    """Spread of soft error rates mean(y(1−p) + (1−y)p | g). Answers to ``error_gap``."""

    def rate_values(self, batch: Batch, decisions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(batch.y * (1 - decisions) + (1 - batch.y) * decisions, None)]


class FairnessSpec(TermSpecBase):
    """A fairness term. ``group_weights`` maps group names (as the report shows them, e.g.
    ``sex=Female``) to stakeholder weights; unnamed groups weigh 1."""

    group_weights: dict[str, float] = Field(default_factory=dict, description="stakeholder weight per group name")
    window: int = Field(20, ge=1, le=10_000, description="constraint mode: minibatches pooled for the gap the multiplier answers to")

    @field_validator("group_weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        for group, weight in weights.items():
            if weight <= 0:
                raise ValueError(f"the weight of group {group!r} must be > 0, got {weight}")
        return weights

    term_class: ClassVar[type[FairnessTerm]] = DemographicParity
    #: the exact metric whose value the hard gap is (without group weights)
    metric: ClassVar[str] = "dp_gap"

    def build(self, context: TermContext) -> FairnessTerm:
        weights = None
        if self.group_weights:
            unknown = sorted(set(self.group_weights) - set(context.group_names))
            if unknown:
                raise SpecError(
                    f"terms.{self.key}.group_weights: group {unknown[0]!r} does not occur in the data; "
                    f"groups: {', '.join(context.group_names)}"
                )
            weights = torch.tensor([self.group_weights.get(name, 1.0) for name in context.group_names])
        return self.term_class(context.n_groups, weights, context.eligible_groups(), context.threshold, self.window)


class DemographicParitySpec(FairnessSpec):
    kind: Literal["demographic_parity"]
    term_class: ClassVar[type[FairnessTerm]] = DemographicParity


class EqualOpportunitySpec(FairnessSpec):
    kind: Literal["equal_opportunity"]
    term_class: ClassVar[type[FairnessTerm]] = EqualOpportunity
    metric: ClassVar[str] = "eopp_gap"


class EqualizedOddsSpec(FairnessSpec):
    kind: Literal["equalized_odds"]
    term_class: ClassVar[type[FairnessTerm]] = EqualizedOdds
    metric: ClassVar[str] = "eo_gap"


class ErrorRateParitySpec(FairnessSpec):
    kind: Literal["error_rate_parity"]
    term_class: ClassVar[type[FairnessTerm]] = ErrorRateParity
    metric: ClassVar[str] = "error_gap"


FAIRNESS_SPECS = (DemographicParitySpec, EqualOpportunitySpec, EqualizedOddsSpec, ErrorRateParitySpec)
