"""Leakage: gradient reversal, the adversary term, the leakage metric (balanced accuracy
of a fresh logistic regression minus 1/k) and its cross-fitted form.

Expected values are worked out by hand, or recomputed here with torch / scikit-learn
from their definitions, never read back from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from ethicsweep.objectives.base import Batch, TermContext
from ethicsweep.objectives.leakage import LeakageAdversary, LeakageAdversarySpec, leakage, reverse_gradient
from ethicsweep.trainables.scoring import Outputs, cross_fitted_leakage

# ---------------------------------------------------------------- reverse_gradient


def test_reverse_gradient_forward_is_identity():
    x = torch.tensor([1.0, -2.0, 3.0])
    torch.testing.assert_close(reverse_gradient(x, 2.5), x)


def test_reverse_gradient_backward_multiplies_by_minus_strength():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0])
    (reverse_gradient(x, 2.5) * w).sum().backward()
    # d/dx Σ w·x = w; reversed and scaled: −2.5·w
    torch.testing.assert_close(x.grad, torch.tensor([-2.5, -5.0, -7.5]))


def test_reverse_gradient_default_strength_is_one():
    x = torch.tensor([0.5, 4.0], requires_grad=True)
    (reverse_gradient(x) ** 2).sum().backward()
    # d/dx Σ x² = 2x = (1, 8); reversed: (−1, −8)
    torch.testing.assert_close(x.grad, torch.tensor([-1.0, -8.0]))


# ---------------------------------------------------------------- LeakageAdversary


def adversary_batch(abstain=False):
    logits = torch.tensor([0.3, -1.0, 2.0, 0.1, -0.4, 1.5], requires_grad=True)
    abstain_logits = torch.tensor([-0.2, 0.7, 0.0, 1.1, -1.3, 0.4], requires_grad=True) if abstain else None
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    return Batch(logits=logits, y=torch.zeros(6), groups=groups, abstain_logits=abstain_logits)


def test_adversary_value_is_cross_entropy_of_its_logits():
    torch.manual_seed(0)
    term = LeakageAdversary(n_groups=3, hidden=4, strength=0.5)
    batch = adversary_batch()
    expected = F.cross_entropy(term.adversary(batch.logits.detach().unsqueeze(1)), batch.groups)
    torch.testing.assert_close(term(batch), expected)


def test_adversary_value_with_abstain_output_sees_both_columns():
    torch.manual_seed(0)
    term = LeakageAdversary(n_groups=3, hidden=4, strength=0.5, n_outputs=2)
    batch = adversary_batch(abstain=True)
    features = torch.stack([batch.logits.detach(), batch.abstain_logits.detach()], dim=1)
    expected = F.cross_entropy(term.adversary(features), batch.groups)
    torch.testing.assert_close(term(batch), expected)


@pytest.mark.parametrize("strength", [0.5, 1.0, 3.0])
def test_model_gradient_through_adversary_is_reversed_and_scaled(strength):
    torch.manual_seed(0)
    term = LeakageAdversary(n_groups=3, hidden=4, strength=strength)
    batch = adversary_batch()
    term(batch).backward()
    reversed_grad = batch.logits.grad.clone()
    reversed_param_grads = [p.grad.clone() for p in term.adversary.parameters()]

    # without reversal: call the adversary directly on the outputs
    term.zero_grad()
    logits = batch.logits.detach().clone().requires_grad_(True)
    F.cross_entropy(term.adversary(logits.unsqueeze(1)), batch.groups).backward()

    assert logits.grad.abs().sum() > 0
    torch.testing.assert_close(reversed_grad, -strength * logits.grad)
    # the adversary itself still descends its own loss: its gradient is not reversed
    for got, plain in zip(reversed_param_grads, (p.grad for p in term.adversary.parameters())):
        torch.testing.assert_close(got, plain)


def test_abstain_gradient_through_adversary_is_reversed():
    torch.manual_seed(1)
    term = LeakageAdversary(n_groups=3, hidden=4, strength=2.0, n_outputs=2)
    batch = adversary_batch(abstain=True)
    term(batch).backward()

    logits = batch.logits.detach().clone().requires_grad_(True)
    abstain = batch.abstain_logits.detach().clone().requires_grad_(True)
    F.cross_entropy(term.adversary(torch.stack([logits, abstain], dim=1)), batch.groups).backward()
    torch.testing.assert_close(batch.logits.grad, -2.0 * logits.grad)
    torch.testing.assert_close(batch.abstain_logits.grad, -2.0 * abstain.grad)


def test_adversary_spec_builds_for_the_data():
    context = TermContext(group_names=("a", "b", "c"), group_counts=np.array([40, 40, 40]), abstain_output=True)
    term = LeakageAdversarySpec(kind="leakage_adversary", hidden=5, strength=2.0).build(context)
    linears = [m for m in term.adversary if isinstance(m, torch.nn.Linear)]
    assert (linears[0].in_features, linears[0].out_features) == (2, 5)
    assert linears[-1].out_features == 3
    assert term.strength == 2.0


# ---------------------------------------------------------------- leakage metric


def separated(values_per_group, per_group=10, seed=0):
    """Outputs clustered tightly around one value per group, groups 0..k−1."""
    rng = np.random.default_rng(seed)
    outputs = np.concatenate([v + rng.uniform(-0.5, 0.5, per_group) for v in values_per_group])
    groups = np.repeat(np.arange(len(values_per_group)), per_group)
    return outputs, groups


def test_leakage_perfect_separation_two_groups():
    fit_x, fit_g = separated([-5.0, 5.0], seed=0)
    eval_x, eval_g = separated([-5.0, 5.0], seed=1)
    # balanced accuracy 1, minus 1/2
    assert leakage(fit_x, fit_g, eval_x, eval_g) == pytest.approx(0.5)


def test_leakage_perfect_separation_three_groups():
    fit_x, fit_g = separated([-10.0, 0.0, 10.0], seed=0)
    eval_x, eval_g = separated([-10.0, 0.0, 10.0], seed=1)
    # balanced accuracy 1, minus 1/3
    assert leakage(fit_x, fit_g, eval_x, eval_g) == pytest.approx(1 - 1 / 3)


def test_leakage_with_two_output_columns():
    fit_x, fit_g = separated([-5.0, 5.0], seed=0)
    eval_x, eval_g = separated([-5.0, 5.0], seed=1)
    # second column is noise; the first still separates perfectly
    rng = np.random.default_rng(3)
    fit = np.column_stack([fit_x, rng.normal(size=len(fit_x))])
    ev = np.column_stack([eval_x, rng.normal(size=len(eval_x))])
    assert leakage(fit, fit_g, ev, eval_g) == pytest.approx(0.5)


def test_leakage_identical_outputs_is_zero_two_groups():
    # a constant feature: the attacker predicts one group -> balanced accuracy 1/2 -> 0
    fit_g = np.array([0, 0, 0, 1, 1])
    eval_g = np.array([0, 1, 0, 1, 1, 0])
    assert leakage(np.zeros(5), fit_g, np.zeros(6), eval_g) == pytest.approx(0.0)


def test_leakage_identical_outputs_is_zero_three_groups():
    fit_g = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    eval_g = np.array([0, 1, 2, 0, 1, 2])
    # one predicted class: recalls (1, 0, 0) -> balanced accuracy 1/3 -> 0
    assert leakage(np.ones(9), fit_g, np.ones(6), eval_g) == pytest.approx(0.0)


def test_leakage_one_group_in_fit_split_is_nan():
    assert math.isnan(leakage(np.arange(4.0), np.zeros(4, dtype=int), np.arange(4.0), np.array([0, 1, 0, 1])))


def test_leakage_one_group_in_eval_split_is_nan():
    assert math.isnan(leakage(np.arange(4.0), np.array([0, 1, 0, 1]), np.arange(4.0), np.ones(4, dtype=int)))


def test_leakage_matches_independent_sklearn_attacker():
    rng = np.random.default_rng(5)
    fit_g, eval_g = rng.integers(0, 3, 120), rng.integers(0, 3, 90)
    fit_x = np.column_stack([fit_g + rng.normal(0, 1.2, 120), rng.normal(size=120)])
    eval_x = np.column_stack([eval_g + rng.normal(0, 1.2, 90), rng.normal(size=90)])
    attacker = LogisticRegression(max_iter=1000, random_state=0).fit(fit_x, fit_g)
    expected = balanced_accuracy_score(eval_g, attacker.predict(eval_x)) - 1 / 3
    assert 0 < expected < 2 / 3  # a partial, non-trivial leak
    assert leakage(fit_x, fit_g, eval_x, eval_g) == pytest.approx(expected)


# ---------------------------------------------------------------- cross_fitted_leakage


def independent_cross_fit(features, groups, seed):
    order = np.random.default_rng(seed).permutation(len(groups))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    scores = []
    for fit, ev in ((a, b), (b, a)):
        attacker = LogisticRegression(max_iter=1000, random_state=seed).fit(features[fit], groups[fit])
        k = len(np.unique(groups[ev]))
        scores.append(balanced_accuracy_score(groups[ev], attacker.predict(features[ev])) - 1 / k)
    return float(np.mean(scores))


@pytest.mark.parametrize("seed", [0, 7])
def test_cross_fitted_leakage_is_mean_of_two_half_fits(seed):
    rng = np.random.default_rng(21)
    n = 81  # odd: halves of 40 and 41
    groups = rng.integers(0, 2, n)
    logits = groups * 0.8 + rng.normal(0, 1.0, n)
    out = Outputs(logits=logits, abstain_logits=None)
    expected = independent_cross_fit(logits.reshape(-1, 1), groups, seed)
    assert cross_fitted_leakage(out, groups, seed) == pytest.approx(expected)


def test_cross_fitted_leakage_uses_abstain_column():
    rng = np.random.default_rng(4)
    n = 60
    groups = rng.integers(0, 3, n)
    logits = rng.normal(size=n)  # no signal in the logit...
    abstain = groups * 1.0 + rng.normal(0, 0.7, n)  # ...but the abstain output leaks
    out = Outputs(logits=logits, abstain_logits=abstain)
    expected = independent_cross_fit(np.column_stack([logits, abstain]), groups, 3)
    assert cross_fitted_leakage(out, groups, 3) == pytest.approx(expected)


def test_cross_fitted_leakage_perfect_separation():
    groups = np.repeat([0, 1], 20)
    logits = np.where(groups == 1, 5.0, -5.0) + np.linspace(-0.5, 0.5, 40)
    # each half holds both groups and is perfectly separated -> (0.5 + 0.5) / 2
    assert cross_fitted_leakage(Outputs(logits, None), groups, 0) == pytest.approx(0.5)
