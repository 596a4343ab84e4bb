"""Harm terms: expected cost under the cost model (:mod:`ethicsweep.objectives.costs`),
with an abstain decision when the model has one, and a penalty on confident wrong answers.

The expected-cost term is the differentiable counterpart of the ``harm`` metric:
``Σ_j q_j · C_ctx[y, j]`` with q the model's distribution over (decide 0, decide 1, abstain).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ethicsweep.errors import SpecError
from ethicsweep.objectives.base import Batch, Term, TermContext, TermSpecBase



def decision_distribution(batch: Batch) -> torch.Tensor:
    """q over (decide 0, decide 1, abstain), shape (n, 3): abstain with probability
    sigmoid(abstain logit) when the model has an abstain head, else never."""
    p = batch.proba
    abstain = torch.sigmoid(batch.abstain_logits) if batch.abstain_logits is not None else torch.zeros_like(p)
    return torch.stack([(1 - abstain) * (1 - p), (1 - abstain) * p, abstain], dim=1)


class ExpectedCost(Term):
    """Mean over rows of group_weight · Σ_j q_j · C_ctx[y, j]. Answers to ``harm``.

    The value and the classifier's gradient are those of the randomized decision q. The
    abstain head's gradient is instead that of the decision the model will make,
    ŷ = 1[p ≥ ``threshold``]: ∂/∂a = group_weight · (C_ctx[y, abstain] − C_ctx[y, ŷ]). The
    randomized decision's cost overstates the real one wherever p is uncertain, and would
    teach the head to abstain on every row of a hard problem.
    """

    def __init__(self, matrices: np.ndarray, group_weights: np.ndarray, threshold: float = 0.5):
        super().__init__()
        self.threshold = threshold
        self.register_buffer("matrices", torch.as_tensor(matrices, dtype=torch.float32), persistent=False)
        self.register_buffer("group_weights", torch.as_tensor(group_weights, dtype=torch.float32), persistent=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        q = decision_distribution(batch)
        context = batch.context if batch.context is not None else torch.zeros_like(batch.groups)
        costs = self.matrices.to(q)[context, batch.y.long()]  # (n, 3): this row's cost of each decision
        cost = (q * costs).sum(dim=1)
        if batch.abstain_logits is not None:
            p, abstain = batch.proba.detach(), q[:, 2]
            randomized = (1 - p) * costs[:, 0] + p * costs[:, 1]
            made = costs.gather(1, (p >= self.threshold).long().unsqueeze(1)).squeeze(1)
            cost = cost + (abstain - abstain.detach()) * (randomized - made).detach()  # value unchanged
        return (self.group_weights.to(q)[batch.groups] * cost).mean()


class ConfidentError(Term):
    """Penalty on confident wrong answers: mean of escalation · relu(p_wrong − τ) / (1 − τ),
    where p_wrong is the probability the model gives the wrong class; ``escalation`` is
    applied in the named sensitive contexts (1 elsewhere). Answers to
    ``confident_error_rate``."""

    def __init__(self, tau: float, escalation: torch.Tensor):
        super().__init__()
        self.tau = tau
        self.register_buffer("escalation", escalation, persistent=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        p = batch.proba
        p_wrong = batch.y * (1 - p) + (1 - batch.y) * p
        context = batch.context if batch.context is not None else torch.zeros_like(batch.groups)
        factor = self.escalation.to(p)[context]
        return (factor * torch.relu(p_wrong - self.tau) / (1 - self.tau)).mean()


class ExpectedCostSpec(TermSpecBase):
    """The expected cost under the spec's ``harm`` cost model."""

    kind: Literal["expected_cost"]

    def build(self, context: TermContext) -> ExpectedCost:
        harm = context.harm
        return ExpectedCost(harm.matrices(context.context_names), harm.weights(context.group_names), context.threshold)


class ConfidentErrorSpec(TermSpecBase):
    kind: Literal["confident_error"]
    tau: float = Field(0.9, gt=0.5, lt=1.0, description="confidence above which a wrong answer is penalized")
    escalation: float = Field(1.0, ge=1.0, description="factor applied in the sensitive contexts")
    sensitive_contexts: list[str] = Field(default_factory=list, description="values of data.context where errors cost more")

    def build(self, context: TermContext) -> ConfidentError:
        unknown = sorted(set(self.sensitive_contexts) - set(context.context_names))
        if unknown:
            allowed = ", ".join(context.context_names) if context.context_names else "none: set data.context to a column"
            raise SpecError(f"terms.{self.key}.sensitive_contexts: {unknown[0]!r} is not a context of the data; contexts: {allowed}")
        n_contexts = max(1, len(context.context_names))
        escalation = torch.ones(n_contexts)
        for name in self.sensitive_contexts:
            escalation[context.context_names.index(name)] = self.escalation
        return ConfidentError(self.tau, escalation)


HARM_SPECS = (ExpectedCostSpec, ConfidentErrorSpec)
