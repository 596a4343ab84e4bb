"""Score a model: its decisions (abstentions included) and every exact metric on a split,
plus the metrics that need more than one split (leakage, membership inference) and ε.

During training (:func:`validation_metrics`) only the training and validation splits
are used; after training the driver scores the test split (:func:`test_metrics`).
The membership attack compares training rows with the scored split's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ethicsweep.data import PreparedData, Split
from ethicsweep.objectives import MetricReport, evaluate
from ethicsweep.objectives.leakage import leakage
from ethicsweep.objectives.membership import equal_samples, loss_attack, per_example_bce
from ethicsweep.objectives.privacy import planned_epsilon
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.models import abstain_mask, predict, sigmoid


@dataclass(frozen=True)
class Outputs:
    """A model's raw outputs on one split."""

    logits: np.ndarray
    abstain_logits: np.ndarray | None

    @property
    def proba(self) -> np.ndarray:
        return sigmoid(self.logits)

    @property
    def features(self) -> np.ndarray:
        """What an attacker sees: the logit, and the abstain logit when there is one."""
        columns = [self.logits] if self.abstain_logits is None else [self.logits, self.abstain_logits]
        return np.column_stack(columns)


def outputs(model: nn.Module, split: Split, device: str | torch.device = "cpu") -> Outputs:
    return Outputs(*predict(model, torch.as_tensor(split.X, device=device)))


def score(out: Outputs, config: TrainConfig, data: PreparedData, split: Split) -> MetricReport:
    """Every per-split metric of the outputs ``out`` on ``split`` (trained with ``config``).

    Decisions use the model's threshold and abstention setting; harm uses ``config.harm``.
    """
    proba = out.proba
    abstain_proba = sigmoid(out.abstain_logits) if out.abstain_logits is not None else None
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


def cross_fitted_leakage(out: Outputs, groups: np.ndarray, seed: int) -> float:
    """Leakage within one split: two seeded halves, each attacker fitted on one half and
    scored on the other; the mean of the two."""
    order = np.random.default_rng(seed).permutation(len(groups))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    features = out.features
    return float(np.mean([leakage(features[i], groups[i], features[j], groups[j], seed) for i, j in ((a, b), (b, a))]))


def membership_metrics(
    model: nn.Module, train: Split, heldout: Split, heldout_out: Outputs, seed: int, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """The ``mia_*`` metrics of a loss-threshold attack: training rows (members) against as
    many ``heldout`` rows (a seeded sample of the larger of the two sets)."""
    members, nonmembers = equal_samples(len(train), len(heldout), seed)
    member_logits = predict(model, torch.as_tensor(train.X[members], device=device))[0]
    return loss_attack(
        per_example_bce(member_logits, train.y[members]),
        per_example_bce(heldout_out.logits[nonmembers], heldout.y[nonmembers]),
    )


def validation_metrics(
    model: nn.Module, config: TrainConfig, data: PreparedData, device: str | torch.device = "cpu", *, epsilon: float = math.inf
) -> dict[str, float]:
    """Every metric on the validation split; leakage cross-fitted within it; the membership
    attack against validation rows; ``epsilon`` as given (ε spent so far, ∞ without DP-SGD)."""
    out = outputs(model, data.validation, device)
    values = score(out, config, data, data.validation).values
    values["leakage"] = cross_fitted_leakage(out, data.validation.groups, config.seed)
    values.update(membership_metrics(model, data.train, data.validation, out, config.seed, device))
    values["epsilon"] = epsilon
    return values


def test_metrics(
    model: nn.Module, config: TrainConfig, data: PreparedData, *, epsilon: float | None = None, out: Outputs | None = None
) -> MetricReport:
    """Every metric on the test split; the leakage attacker is fitted on validation; the
    membership attack against test rows. ``epsilon``: the trial's final ε; by default the ε
    that training ``config`` to its last epoch spends (∞ without DP-SGD), exact for a trial
    that ran to the end and an upper bound for one stopped early. ``out``: the model's
    outputs on the test split, when the caller has them already."""
    if data.test is None:
        raise ValueError("test_metrics needs the test split: use the driver's PreparedData")
    out = out if out is not None else outputs(model, data.test)
    report = score(out, config, data, data.test)
    fit = outputs(model, data.validation)
    report.values["leakage"] = leakage(fit.features, data.validation.groups, out.features, data.test.groups, config.seed)
    report.values.update(membership_metrics(model, data.train, data.test, out, config.seed))
    if epsilon is None:
        epsilon = planned_epsilon(config.privacy, len(data.train), config.training.batch_size, config.training.epochs)
    report.values["epsilon"] = epsilon
    return report
