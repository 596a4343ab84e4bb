"""Differentiable terms: hand-computed values on tiny tensors, finiteness on minibatches
that lack groups, and float64 gradient checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ethicsweep.objectives.terms import (
    BinaryCrossEntropy,
    CompositeLoss,
    DemographicParity,
    EqualizedOdds,
    WeightedTerm,
    soft_group_rates,
    spread,
)

D = torch.float64


def t(values, dtype=D):
    return torch.tensor(values, dtype=dtype)


def codes(values):
    return torch.tensor(values, dtype=torch.int64)


def logits_of(probabilities):
    """Logits whose sigmoid is the given probabilities (float64, exact to ~1e-16)."""
    return torch.logit(t(probabilities))


# --------------------------------------------------------------------------- soft rates


def test_soft_group_rates_means_per_group():
    p = t([0.2, 0.4, 0.9, 0.5])
    rates, present = soft_group_rates(p, codes([0, 0, 1, 1]), 3)
    # g0: (0.2 + 0.4) / 2 = 0.3; g1: (0.9 + 0.5) / 2 = 0.7; g2: no rows -> 0, absent
    torch.testing.assert_close(rates, t([0.3, 0.7, 0.0]))
    assert present.tolist() == [True, True, False]


def test_soft_group_rates_with_mask():
    p = t([0.2, 0.4, 0.9, 0.5])
    y = t([1, 0, 1, 1])
    rates, present = soft_group_rates(p, codes([0, 0, 1, 1]), 2, y == 1)
    # y=1 rows: g0 {0.2}, g1 {0.9, 0.5} -> 0.2, 0.7
    torch.testing.assert_close(rates, t([0.2, 0.7]))
    assert present.tolist() == [True, True]


def test_soft_group_rates_mask_empties_a_group():
    p = t([0.2, 0.4, 0.9, 0.5])
    y = t([0, 0, 1, 1])
    rates, present = soft_group_rates(p, codes([0, 0, 1, 1]), 2, y == 1)
    # g0 has no y=1 rows
    assert present.tolist() == [False, True]
    assert torch.isfinite(rates).all()
    assert rates[1].item() == pytest.approx(0.7)


def test_spread_ignores_absent_groups():
    # max - min over present groups only: 0.7 - 0.3 = 0.4 (the absent 0 would give 0.7)
    value = spread(t([0.3, 0.7, 0.0]), torch.tensor([True, True, False]))
    assert value.item() == pytest.approx(0.4)


def test_spread_three_groups():
    value = spread(t([0.25, 0.9, 0.5]), torch.tensor([True, True, True]))
    assert value.item() == pytest.approx(0.9 - 0.25)


def test_spread_one_group_is_zero_with_graph():
    rates = t([0.3, 0.0]).requires_grad_()
    value = spread(rates, torch.tensor([True, False]))
    assert value.item() == 0.0
    assert value.requires_grad
    value.backward()
    torch.testing.assert_close(rates.grad, t([0.0, 0.0]))


def test_spread_no_group_is_zero():
    value = spread(t([0.0, 0.0]), torch.tensor([False, False]))
    assert value.item() == 0.0


# --------------------------------------------------------------------------- demographic parity


def test_demographic_parity_value():
    # p by group: g0 {0.1, 0.3} -> 0.2; g1 {0.6, 0.8} -> 0.7; g2 {0.5, 0.4} -> 0.45
    # spread = 0.7 - 0.2 = 0.5
    logits = logits_of([0.1, 0.3, 0.6, 0.8, 0.5, 0.4])
    value = DemographicParity(3)(logits, t([0, 1, 0, 1, 0, 1]), codes([0, 0, 1, 1, 2, 2]))
    assert value.item() == pytest.approx(0.5)


def test_demographic_parity_minibatch_lacking_a_group_is_finite():
    # n_groups = 3, batch holds g0 {0.1, 0.3} -> 0.2 and g2 {0.9} -> 0.9: spread 0.7
    logits = logits_of([0.1, 0.3, 0.9])
    value = DemographicParity(3)(logits, t([0, 1, 1]), codes([0, 0, 2]))
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(0.7)


def test_demographic_parity_one_group_is_zero_not_nan():
    logits = logits_of([0.1, 0.3, 0.9]).requires_grad_()
    value = DemographicParity(3)(logits, t([0, 1, 1]), codes([1, 1, 1]))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits))


def test_demographic_parity_gradcheck():
    # group means 0.2, 0.7, 0.45: unique max (g1) and min (g0)
    logits = logits_of([0.1, 0.3, 0.6, 0.8, 0.5, 0.4]).requires_grad_()
    term = DemographicParity(3)
    y, g = t([0, 1, 0, 1, 0, 1]), codes([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda z: term(z, y, g), (logits,))


def test_demographic_parity_gradient_by_hand():
    # d/dz_i of (mean_g1 p - mean_g0 p) = ±σ'(z_i) / n_g = ±p(1-p)/2 for rows of g1 / g0, 0 for g2
    probabilities = [0.1, 0.3, 0.6, 0.8, 0.5, 0.4]
    logits = logits_of(probabilities).requires_grad_()
    DemographicParity(3)(logits, t([0] * 6), codes([0, 0, 1, 1, 2, 2])).backward()
    expected = [-0.1 * 0.9 / 2, -0.3 * 0.7 / 2, 0.6 * 0.4 / 2, 0.8 * 0.2 / 2, 0.0, 0.0]
    torch.testing.assert_close(logits.grad, t(expected))


# --------------------------------------------------------------------------- equalized odds


EO_P = [0.9, 0.2, 0.6, 0.4, 0.7, 0.05]
EO_Y = [1, 0, 1, 0, 1, 0]
EO_G = [0, 0, 1, 1, 2, 2]


def test_equalized_odds_value_fpr_larger():
    # soft TPR (y=1): g0 0.9, g1 0.6, g2 0.7 -> spread 0.3
    # soft FPR (y=0): g0 0.2, g1 0.4, g2 0.05 -> spread 0.35 -> max = 0.35
    value = EqualizedOdds(3)(logits_of(EO_P), t(EO_Y), codes(EO_G))
    assert value.item() == pytest.approx(0.35)


def test_equalized_odds_value_tpr_larger():
    # TPR: g0 (0.9 + 0.7)/2 = 0.8, g1 0.3 -> 0.5;  FPR: g0 0.2, g1 0.4 -> 0.2;  max = 0.5
    p = [0.9, 0.7, 0.2, 0.3, 0.4]
    y = [1, 1, 0, 1, 0]
    g = [0, 0, 0, 1, 1]
    value = EqualizedOdds(2)(logits_of(p), t(y), codes(g))
    assert value.item() == pytest.approx(0.5)


def test_equalized_odds_group_without_positives_in_batch():
    # g2 has only a y=0 row: TPR over g0 (0.9), g1 (0.6) -> 0.3; FPR over 0.2, 0.4, 0.05 -> 0.35
    p = [0.9, 0.2, 0.6, 0.4, 0.05]
    y = [1, 0, 1, 0, 0]
    g = [0, 0, 1, 1, 2]
    value = EqualizedOdds(3)(logits_of(p), t(y), codes(g))
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(0.35)


def test_equalized_odds_batch_without_positives():
    # no y=1 rows: TPR spread is 0; FPR over g0 0.2, g1 0.5 -> 0.3
    value = EqualizedOdds(2)(logits_of([0.2, 0.5]), t([0, 0]), codes([0, 1]))
    assert value.item() == pytest.approx(0.3)


def test_equalized_odds_one_group_is_zero_not_nan():
    logits = logits_of(EO_P).requires_grad_()
    value = EqualizedOdds(3)(logits, t(EO_Y), codes([2] * 6))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_equalized_odds_gradcheck():
    # TPR spread 0.3 and FPR spread 0.35 differ; each has a unique max and min
    logits = logits_of(EO_P).requires_grad_()
    term = EqualizedOdds(3)
    y, g = t(EO_Y), codes(EO_G)
    assert torch.autograd.gradcheck(lambda z: term(z, y, g), (logits,))


# --------------------------------------------------------------------------- BCE and composite


def test_bce_matches_formula():
    p = [0.9, 0.2, 0.6, 0.4]
    y = [1, 0, 0, 1]
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.4)) / 4
    value = BinaryCrossEntropy()(logits_of(p), t(y), codes([0, 0, 1, 1]))
    assert value.item() == pytest.approx(expected)


def test_bce_gradcheck():
    logits = logits_of([0.9, 0.2, 0.6, 0.4]).requires_grad_()
    y, g = t([1, 0, 0, 1]), codes([0, 0, 1, 1])
    assert torch.autograd.gradcheck(lambda z: BinaryCrossEntropy()(z, y, g), (logits,))


def composite():
    return CompositeLoss(
        [
            WeightedTerm("dp", 2.0, DemographicParity(3)),
            WeightedTerm("eo", 0.5, EqualizedOdds(3)),
        ]
    )


def test_composite_total_is_bce_plus_weighted_terms():
    logits, y, g = logits_of(EO_P), t(EO_Y), codes(EO_G)
    total, parts = composite()(logits, y, g)
    bce = F.binary_cross_entropy_with_logits(logits, y).item()
    # DP: g0 (0.9 + 0.2)/2 = 0.55, g1 (0.6 + 0.4)/2 = 0.5, g2 (0.7 + 0.05)/2 = 0.375 -> 0.175
    # EO: max(TPR spread 0.3, FPR spread 0.35) = 0.35
    assert parts["dp"].item() == pytest.approx(0.175)
    assert parts["eo"].item() == pytest.approx(0.35)
    assert parts["bce"].item() == pytest.approx(bce)
    assert total.item() == pytest.approx(bce + 2.0 * 0.175 + 0.5 * 0.35)


def test_composite_parts_are_unweighted_and_named():
    _, parts = composite()(logits_of(EO_P), t(EO_Y), codes(EO_G))
    assert set(parts) == {"bce", "dp", "eo"}


def test_composite_without_terms_is_bce():
    logits, y, g = logits_of(EO_P), t(EO_Y), codes(EO_G)
    total, parts = CompositeLoss([])(logits, y, g)
    assert total.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, y).item())
    assert set(parts) == {"bce"}


def test_composite_zero_weight_term_adds_nothing():
    logits, y, g = logits_of(EO_P), t(EO_Y), codes(EO_G)
    total, parts = CompositeLoss([WeightedTerm("dp", 0.0, DemographicParity(3))])(logits, y, g)
    assert total.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, y).item())
    assert parts["dp"].item() == pytest.approx(0.175)


def test_composite_gradcheck():
    logits = logits_of(EO_P).requires_grad_()
    loss = composite()
    y, g = t(EO_Y), codes(EO_G)
    assert torch.autograd.gradcheck(lambda z: loss(z, y, g)[0], (logits,))


def test_composite_finite_on_single_group_batch():
    logits = logits_of(EO_P).requires_grad_()
    total, parts = composite()(logits, t(EO_Y), codes([0] * 6))
    assert parts["dp"].item() == 0.0 and parts["eo"].item() == 0.0
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_terms_work_in_float32():
    logits = logits_of([0.1, 0.3, 0.6, 0.8]).float()
    value = DemographicParity(2)(logits, torch.zeros(4), codes([0, 0, 1, 1]))
    # 0.7 - 0.2
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(0.5, abs=1e-6)
