"""Differentiable terms: hand-computed values on tiny tensors, finiteness on minibatches
that lack groups, stakeholder weights, hard values, eligibility of small groups, specs,
the objective's parts and penalized loss, and float64 gradient checks.

Every expected value below is worked out by hand in a comment, or by an independent
formula (torch.nn.functional / plain tensor arithmetic) written in the test.
Constraint mode (cooper), NonFiniteLoss and gradient shares: test_objective_constraints.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter, ValidationError

from ethicsweep.errors import SpecError
from ethicsweep.objectives.base import Batch, TermContext
from ethicsweep.objectives.composite import BinaryCrossEntropy, Objective, Slot
from ethicsweep.objectives.fairness import (
    DemographicParity,
    DemographicParitySpec,
    EqualizedOdds,
    EqualizedOddsSpec,
    EqualOpportunity,
    EqualOpportunitySpec,
    ErrorRateParity,
    ErrorRateParitySpec,
    soft_group_rates,
    spread,
)
from ethicsweep.objectives.registry import TERM_KINDS, TermSpec

D = torch.float64


def t(values, dtype=D):
    return torch.tensor(values, dtype=dtype)


def codes(values):
    return torch.tensor(values, dtype=torch.int64)


def logits_of(probabilities):
    """Logits whose sigmoid is the given probabilities (float64, exact to ~1e-16).
    logit(0.5) is exactly 0 and sigmoid(0) exactly 0.5."""
    return torch.logit(t(probabilities))


def batch(probabilities, y, groups, *, logits=None):
    return Batch(logits if logits is not None else logits_of(probabilities), t(y), codes(groups))


def context(names=("a", "b", "c"), counts=(100, 100, 100), min_group_size=30, threshold=0.5):
    return TermContext(group_names=tuple(names), group_counts=np.array(counts), min_group_size=min_group_size, threshold=threshold)


ALL = [True, True, True]


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


# --------------------------------------------------------------------------- spread


def test_spread_ignores_absent_groups():
    # max - min over present groups only: 0.7 - 0.3 = 0.4 (the absent 0 would give 0.7)
    value = spread(t([0.3, 0.7, 0.0]), torch.tensor([True, True, False]))
    assert value.item() == pytest.approx(0.4)


def test_spread_three_groups():
    value = spread(t([0.25, 0.9, 0.5]), torch.tensor(ALL))
    assert value.item() == pytest.approx(0.9 - 0.25)


def test_spread_one_group_is_zero_with_graph():
    rates = t([0.3, 0.0]).requires_grad_()
    value = spread(rates, torch.tensor([True, False]))
    assert value.item() == 0.0
    assert value.requires_grad and value.grad_fn is not None
    value.backward()
    torch.testing.assert_close(rates.grad, t([0.0, 0.0]))


def test_spread_one_group_weighted_is_zero_with_graph():
    rates = t([0.3, 0.0, 0.8]).requires_grad_()
    value = spread(rates, torch.tensor([False, False, True]), t([2.0, 1.0, 0.5]))
    assert value.item() == 0.0
    assert not math.isnan(value.item())
    assert value.grad_fn is not None


def test_spread_no_group_is_zero():
    value = spread(t([0.0, 0.0]), torch.tensor([False, False]))
    assert value.item() == 0.0


def test_spread_no_group_keeps_graph():
    rates = t([0.4, 0.6]).requires_grad_()
    value = spread(rates, torch.tensor([False, False]))
    assert value.item() == 0.0 and not math.isnan(value.item())
    assert value.grad_fn is not None


def test_weighted_spread_changes_the_maximal_pair():
    # r = (0.1, 0.7, 0.9), w = (2, 2, 0.5)
    # unweighted: max - min = 0.9 - 0.1 = 0.8 (pair g0, g2)
    # weighted pairs: (g0,g1): (2+2)/2 * 0.6 = 1.2
    #                 (g0,g2): (2+0.5)/2 * 0.8 = 1.25 * 0.8 = 1.0
    #                 (g1,g2): (2+0.5)/2 * 0.2 = 0.25
    # max = 1.2, from the pair (g0, g1), not the unweighted extremes
    rates, present = t([0.1, 0.7, 0.9]), torch.tensor(ALL)
    assert spread(rates, present).item() == pytest.approx(0.8)
    assert spread(rates, present, t([2.0, 2.0, 0.5])).item() == pytest.approx(1.2)


def test_weighted_spread_with_unit_weights_is_max_minus_min():
    rates = t([0.25, 0.9, 0.5])
    assert spread(rates, torch.tensor(ALL), t([1.0, 1.0, 1.0])).item() == pytest.approx(0.65)


def test_weighted_spread_ignores_absent_groups_and_their_weights():
    # g2 is absent: its huge weight and its rate 0 must not count.
    # present pairs: (g0,g1): (2+2)/2 * |0.1 - 0.7| = 1.2
    rates = t([0.1, 0.7, 0.0])
    value = spread(rates, torch.tensor([True, True, False]), t([2.0, 2.0, 100.0]))
    assert value.item() == pytest.approx(1.2)


def test_weighted_spread_accepts_float32_weights_for_float64_rates():
    # weights built by a spec are float32; the rates here float64
    # pair (g0,g1): (3 + 1)/2 * |0.2 - 0.6| = 0.8
    value = spread(t([0.2, 0.6]), torch.tensor([True, True]), torch.tensor([3.0, 1.0]))
    assert value.dtype == D
    assert value.item() == pytest.approx(0.8)


def test_weighted_spread_gradcheck():
    # unique maximal pair (g0, g1) with value 1.2 (see above); the others are 1.0 and 0.25
    rates = t([0.1, 0.7, 0.9]).requires_grad_()
    w = t([2.0, 2.0, 0.5])
    assert torch.autograd.gradcheck(lambda r: spread(r, torch.tensor(ALL), w), (rates,))


# --------------------------------------------------------------------------- demographic parity


def test_demographic_parity_value():
    # p by group: g0 {0.1, 0.3} -> 0.2; g1 {0.6, 0.8} -> 0.7; g2 {0.5, 0.4} -> 0.45
    # spread = 0.7 - 0.2 = 0.5
    value = DemographicParity(n_groups=3)(batch([0.1, 0.3, 0.6, 0.8, 0.5, 0.4], [0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2]))
    assert value.item() == pytest.approx(0.5)


def test_demographic_parity_minibatch_lacking_a_group_is_finite():
    # n_groups = 3, batch holds g0 {0.1, 0.3} -> 0.2 and g2 {0.9} -> 0.9: spread 0.7
    value = DemographicParity(n_groups=3)(batch([0.1, 0.3, 0.9], [0, 1, 1], [0, 0, 2]))
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(0.7)


def test_demographic_parity_one_group_is_zero_not_nan():
    logits = logits_of([0.1, 0.3, 0.9]).requires_grad_()
    value = DemographicParity(n_groups=3)(Batch(logits, t([0, 1, 1]), codes([1, 1, 1])))
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits))


def test_demographic_parity_gradcheck():
    # group means 0.2, 0.7, 0.45: unique max (g1) and min (g0)
    logits = logits_of([0.1, 0.3, 0.6, 0.8, 0.5, 0.4]).requires_grad_()
    term = DemographicParity(n_groups=3)
    y, g = t([0, 1, 0, 1, 0, 1]), codes([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda z: term(Batch(z, y, g)), (logits,))


def test_demographic_parity_gradient_by_hand():
    # d/dz_i of (mean_g1 p - mean_g0 p) = ±σ'(z_i) / n_g = ±p(1-p)/2 for rows of g1 / g0, 0 for g2
    logits = logits_of([0.1, 0.3, 0.6, 0.8, 0.5, 0.4]).requires_grad_()
    DemographicParity(n_groups=3)(Batch(logits, t([0] * 6), codes([0, 0, 1, 1, 2, 2]))).backward()
    expected = [-0.1 * 0.9 / 2, -0.3 * 0.7 / 2, 0.6 * 0.4 / 2, 0.8 * 0.2 / 2, 0.0, 0.0]
    torch.testing.assert_close(logits.grad, t(expected))


def test_demographic_parity_with_stakeholder_weights_from_spec():
    # groups a, b, c with soft selection rates g0 {0.05, 0.15} -> 0.1, g1 {0.7} -> 0.7, g2 {0.9} -> 0.9
    # weights a=2, b=2, c=0.5: pairs 1.2, 1.0, 0.25 (see test_weighted_spread_changes_the_maximal_pair)
    spec = DemographicParitySpec(kind="demographic_parity", group_weights={"a": 2.0, "b": 2.0, "c": 0.5})
    term = spec.build(context())
    assert isinstance(term, DemographicParity)
    value = term(batch([0.05, 0.15, 0.7, 0.9], [0, 0, 1, 1], [0, 0, 1, 2]))
    assert value.item() == pytest.approx(1.2)


def test_stakeholder_weights_default_to_one_for_unnamed_groups():
    # only c named (weight 3); a, b weigh 1. Rates a 0.1, b 0.7, c 0.9
    # pairs: (a,b): 1 * 0.6 = 0.6; (a,c): (1+3)/2 * 0.8 = 1.6; (b,c): 2 * 0.2 = 0.4 -> 1.6
    term = DemographicParitySpec(kind="demographic_parity", group_weights={"c": 3.0}).build(context())
    value = term(batch([0.1, 0.7, 0.9], [0, 0, 1], [0, 1, 2]))
    assert value.item() == pytest.approx(1.6)


def test_weighted_demographic_parity_gradcheck():
    # rates 0.1, 0.7, 0.9 with weights 2, 2, 0.5: the maximal pair (a, b) is unique
    term = DemographicParitySpec(kind="demographic_parity", group_weights={"a": 2.0, "b": 2.0, "c": 0.5}).build(context())
    logits = logits_of([0.05, 0.15, 0.7, 0.9]).requires_grad_()
    y, g = t([0, 0, 1, 1]), codes([0, 0, 1, 2])
    assert torch.autograd.gradcheck(lambda z: term(Batch(z, y, g)), (logits,))


# --------------------------------------------------------------------------- equal opportunity

EO_P = [0.9, 0.2, 0.6, 0.4, 0.7, 0.05]
EO_Y = [1, 0, 1, 0, 1, 0]
EO_G = [0, 0, 1, 1, 2, 2]


def test_equal_opportunity_value():
    # soft TPR (y=1 rows): g0 0.9, g1 0.6, g2 0.7 -> 0.9 - 0.6 = 0.3; y=0 rows do not count
    value = EqualOpportunity(n_groups=3)(batch(EO_P, EO_Y, EO_G))
    assert value.item() == pytest.approx(0.3)


def test_equal_opportunity_group_without_positives_left_out():
    # g2 has only y=0 rows: TPR over g0 (0.9 + 0.7)/2 = 0.8 and g1 0.6 -> 0.2 (g2 not counted as 0)
    value = EqualOpportunity(n_groups=3)(batch([0.9, 0.7, 0.6, 0.05, 0.1], [1, 1, 1, 0, 0], [0, 0, 1, 2, 2]))
    assert value.item() == pytest.approx(0.2)


def test_equal_opportunity_batch_without_positives_is_zero_not_nan():
    logits = logits_of([0.2, 0.5, 0.9]).requires_grad_()
    value = EqualOpportunity(n_groups=3)(Batch(logits, t([0, 0, 0]), codes([0, 1, 2])))
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_equal_opportunity_gradcheck():
    # TPR 0.9, 0.6, 0.7: unique max (g0) and min (g1)
    logits = logits_of(EO_P).requires_grad_()
    term = EqualOpportunity(n_groups=3)
    y, g = t(EO_Y), codes(EO_G)
    assert torch.autograd.gradcheck(lambda z: term(Batch(z, y, g)), (logits,))


# --------------------------------------------------------------------------- equalized odds


def test_equalized_odds_value_fpr_larger():
    # soft TPR (y=1): g0 0.9, g1 0.6, g2 0.7 -> spread 0.3
    # soft FPR (y=0): g0 0.2, g1 0.4, g2 0.05 -> spread 0.35 -> max = 0.35
    value = EqualizedOdds(n_groups=3)(batch(EO_P, EO_Y, EO_G))
    assert value.item() == pytest.approx(0.35)


def test_equalized_odds_value_tpr_larger():
    # TPR: g0 (0.9 + 0.7)/2 = 0.8, g1 0.3 -> 0.5;  FPR: g0 0.2, g1 0.4 -> 0.2;  max = 0.5
    value = EqualizedOdds(n_groups=2)(batch([0.9, 0.7, 0.2, 0.3, 0.4], [1, 1, 0, 1, 0], [0, 0, 0, 1, 1]))
    assert value.item() == pytest.approx(0.5)


def test_equalized_odds_group_without_positives_in_batch():
    # g2 has only a y=0 row: TPR over g0 (0.9), g1 (0.6) -> 0.3; FPR over 0.2, 0.4, 0.05 -> 0.35
    value = EqualizedOdds(n_groups=3)(batch([0.9, 0.2, 0.6, 0.4, 0.05], [1, 0, 1, 0, 0], [0, 0, 1, 1, 2]))
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(0.35)


def test_equalized_odds_batch_without_positives():
    # no y=1 rows: TPR spread is 0; FPR over g0 0.2, g1 0.5 -> 0.3
    value = EqualizedOdds(n_groups=2)(batch([0.2, 0.5], [0, 0], [0, 1]))
    assert value.item() == pytest.approx(0.3)


def test_equalized_odds_one_group_is_zero_not_nan():
    logits = logits_of(EO_P).requires_grad_()
    value = EqualizedOdds(n_groups=3)(Batch(logits, t(EO_Y), codes([2] * 6)))
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_equalized_odds_gradcheck():
    # TPR spread 0.3 and FPR spread 0.35 differ; each has a unique max and min
    logits = logits_of(EO_P).requires_grad_()
    term = EqualizedOdds(n_groups=3)
    y, g = t(EO_Y), codes(EO_G)
    assert torch.autograd.gradcheck(lambda z: term(Batch(z, y, g)), (logits,))


# --------------------------------------------------------------------------- error-rate parity


def test_error_rate_parity_value():
    # soft error y(1-p) + (1-y)p per row:
    #   g0: y1 p0.9 -> 0.1, y0 p0.2 -> 0.2   -> 0.15
    #   g1: y1 p0.6 -> 0.4, y0 p0.4 -> 0.4   -> 0.4
    #   g2: y1 p0.7 -> 0.3, y0 p0.05 -> 0.05 -> 0.175
    # spread = 0.4 - 0.15 = 0.25
    value = ErrorRateParity(n_groups=3)(batch(EO_P, EO_Y, EO_G))
    assert value.item() == pytest.approx(0.25)


def test_error_rate_parity_minibatch_lacking_a_group():
    # g1 absent: g0 0.15, g2 0.175 -> 0.025
    value = ErrorRateParity(n_groups=3)(batch([0.9, 0.2, 0.7, 0.05], [1, 0, 1, 0], [0, 0, 2, 2]))
    assert value.item() == pytest.approx(0.025)


def test_error_rate_parity_one_group_is_zero_not_nan():
    logits = logits_of(EO_P).requires_grad_()
    value = ErrorRateParity(n_groups=3)(Batch(logits, t(EO_Y), codes([1] * 6)))
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_error_rate_parity_gradcheck():
    # error rates 0.15, 0.4, 0.175: unique max (g1) and min (g0)
    logits = logits_of(EO_P).requires_grad_()
    term = ErrorRateParity(n_groups=3)
    y, g = t(EO_Y), codes(EO_G)
    assert torch.autograd.gradcheck(lambda z: term(Batch(z, y, g)), (logits,))


# --------------------------------------------------------------------------- hard values


def test_demographic_parity_hard_value_counts_p_at_threshold_as_positive():
    # t = 0.5; p = 0.5 exactly (logit 0) decides 1.
    # g0 p {0.5, 0.3} -> ŷ {1, 0} -> 0.5; g1 p {0.9, 0.6} -> {1, 1} -> 1.0; gap 0.5
    # (if 0.5 decided 0: g0 0.0 -> gap 1.0)
    b = batch([0.5, 0.3, 0.9, 0.6], [0, 0, 0, 0], [0, 0, 1, 1])
    assert b.logits[0].item() == 0.0  # the construction: exactly at the threshold
    term = DemographicParity(n_groups=2)
    assert term.hard_value(b).item() == pytest.approx(0.5)
    # the soft value differs: 0.75 - 0.4 = 0.35
    assert term(b).item() == pytest.approx(0.35)


def test_demographic_parity_hard_value_just_below_threshold_is_negative():
    # p = sigmoid(-1e-9) < 0.5 decides 0: g0 {0, 0} -> 0; g1 {1, 1} -> 1; gap 1.0
    logits = torch.cat([t([-1e-9]), logits_of([0.3, 0.9, 0.6])])
    b = Batch(logits, t([0, 0, 0, 0]), codes([0, 0, 1, 1]))
    assert DemographicParity(n_groups=2).hard_value(b).item() == pytest.approx(1.0)


def test_hard_value_uses_the_context_threshold():
    # g0 p {0.8, 0.6}, g1 p {0.65, 0.55}
    # t = 0.7: ŷ g0 {1, 0} -> 0.5, g1 {0, 0} -> 0.0 -> gap 0.5
    # t = 0.5: ŷ g0 {1, 1} -> 1.0, g1 {1, 1} -> 1.0 -> gap 0.0
    b = batch([0.8, 0.6, 0.65, 0.55], [0, 1, 0, 1], [0, 0, 1, 1])
    spec = DemographicParitySpec(kind="demographic_parity")
    at_07 = spec.build(context(("a", "b"), (100, 100), threshold=0.7))
    at_05 = spec.build(context(("a", "b"), (100, 100), threshold=0.5))
    assert at_07.hard_value(b).item() == pytest.approx(0.5)
    assert at_05.hard_value(b).item() == pytest.approx(0.0)


def test_equal_opportunity_hard_value():
    # y=1 rows only. g0: p {0.5, 0.3} -> ŷ {1, 0} -> TPR 0.5; g1: p {0.8} -> 1 -> 1.0; gap 0.5
    # (the y=0 row p 0.1 of g1 does not count; 0.5 deciding 0 would give gap 1.0)
    b = batch([0.5, 0.3, 0.8, 0.1], [1, 1, 1, 0], [0, 0, 1, 1])
    term = EqualOpportunity(n_groups=2)
    assert term.hard_value(b).item() == pytest.approx(0.5)
    # soft: g0 (0.5 + 0.3)/2 = 0.4, g1 0.8 -> 0.4
    assert term(b).item() == pytest.approx(0.4)


# g0: p 0.5 (y0), 0.2 (y0), 0.9 (y1);  g1: p 0.1 (y0), 0.3 (y0), 0.7 (y1)
HARD_P = [0.5, 0.2, 0.9, 0.1, 0.3, 0.7]
HARD_Y = [0, 0, 1, 0, 0, 1]
HARD_G = [0, 0, 0, 1, 1, 1]


def test_equalized_odds_hard_value():
    # ŷ (t=0.5): g0 {1, 0, 1}, g1 {0, 0, 1}
    # TPR: g0 1, g1 1 -> 0;  FPR: g0 (1 + 0)/2 = 0.5, g1 0 -> 0.5;  max 0.5
    term = EqualizedOdds(n_groups=2)
    b = batch(HARD_P, HARD_Y, HARD_G)
    assert term.hard_value(b).item() == pytest.approx(0.5)
    # soft: TPR 0.9 vs 0.7 -> 0.2; FPR (0.5+0.2)/2 = 0.35 vs (0.1+0.3)/2 = 0.2 -> 0.15; max 0.2
    assert term(b).item() == pytest.approx(0.2)


def test_error_rate_parity_hard_value():
    # ŷ g0 {1, 0, 1} vs y {0, 0, 1}: one error in 3 -> 1/3; g1 {0, 0, 1} vs {0, 0, 1}: 0 -> gap 1/3
    term = ErrorRateParity(n_groups=2)
    b = batch(HARD_P, HARD_Y, HARD_G)
    assert term.hard_value(b).item() == pytest.approx(1 / 3)
    # soft: g0 (0.5 + 0.2 + 0.1)/3 = 0.8/3, g1 (0.1 + 0.3 + 0.3)/3 = 0.7/3 -> 0.1/3
    assert term(b).item() == pytest.approx(0.1 / 3)


def test_hard_value_is_not_differentiable():
    logits = logits_of(HARD_P).requires_grad_()
    value = DemographicParity(n_groups=2).hard_value(Batch(logits, t(HARD_Y), codes(HARD_G)))
    assert value.grad_fn is None


def test_bce_has_no_hard_value():
    assert BinaryCrossEntropy().hard_value(batch(HARD_P, HARD_Y, HARD_G)) is None


def test_hard_value_one_group_is_zero():
    value = DemographicParity(n_groups=2).hard_value(batch([0.2, 0.9], [0, 1], [1, 1]))
    assert value.item() == 0.0


# --------------------------------------------------------------------------- eligible groups


SMALL_B = context(("a", "b", "c"), (100, 10, 30), min_group_size=30)  # b: 10 < 30 left out; c: exactly 30 kept


def test_eligible_groups_mask():
    assert SMALL_B.eligible_groups().tolist() == [True, False, True]


def test_small_training_group_left_out_of_soft_value():
    # p: a {0.1, 0.3} -> 0.2; b {0.6, 0.8} -> 0.7 (left out); c {0.5, 0.4} -> 0.45
    # eligible spread 0.45 - 0.2 = 0.25 (with b it would be 0.5)
    term = DemographicParitySpec(kind="demographic_parity").build(SMALL_B)
    value = term(batch([0.1, 0.3, 0.6, 0.8, 0.5, 0.4], [0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2]))
    assert value.item() == pytest.approx(0.25)


def test_small_training_group_left_out_of_hard_value():
    # ŷ: a {0, 0} -> 0; b {1, 1} -> 1 (left out); c {1 (p = 0.5), 0} -> 0.5; gap 0.5 (with b: 1.0)
    term = DemographicParitySpec(kind="demographic_parity").build(SMALL_B)
    value = term.hard_value(batch([0.1, 0.3, 0.6, 0.8, 0.5, 0.4], [0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2]))
    assert value.item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # y=1 rows: a {0.9} , b {0.2} (left out), c {0.6} -> 0.3 (with b: 0.7)
        (EqualOpportunitySpec(kind="equal_opportunity"), 0.3),
        # TPR as above 0.3; FPR (y=0): a {0.4}, b {0.95} (out), c {0.3} -> 0.1; max 0.3
        (EqualizedOddsSpec(kind="equalized_odds"), 0.3),
        # errors: a (0.1 + 0.4)/2 = 0.25; b (0.8 + 0.95)/2 (out); c (0.4 + 0.3)/2 = 0.35 -> 0.1
        (ErrorRateParitySpec(kind="error_rate_parity"), 0.1),
    ],
)
def test_small_training_group_left_out_of_every_fairness_term(spec, expected):
    term = spec.build(SMALL_B)
    value = term(batch([0.9, 0.4, 0.2, 0.95, 0.6, 0.3], [1, 0, 1, 0, 1, 0], [0, 0, 1, 1, 2, 2]))
    assert value.item() == pytest.approx(expected)


def test_only_one_eligible_group_present_is_zero_with_graph():
    # the batch holds a and b; b is left out -> one eligible group -> 0, not NaN, graph kept
    term = DemographicParitySpec(kind="demographic_parity").build(SMALL_B)
    logits = logits_of([0.1, 0.3, 0.6, 0.8]).requires_grad_()
    value = term(Batch(logits, t([0, 1, 0, 1]), codes([0, 0, 1, 1])))
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits))


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("spec_class", "kind", "term_class"),
    [
        (DemographicParitySpec, "demographic_parity", DemographicParity),
        (EqualOpportunitySpec, "equal_opportunity", EqualOpportunity),
        (EqualizedOddsSpec, "equalized_odds", EqualizedOdds),
        (ErrorRateParitySpec, "error_rate_parity", ErrorRateParity),
    ],
)
def test_spec_builds_its_term(spec_class, kind, term_class):
    spec = spec_class(kind=kind, weight=0.5)
    term = spec.build(context(("a", "b"), (100, 100)))
    assert type(term) is term_class
    assert term.n_groups == 2
    assert spec.key == kind


def test_registry_picks_the_spec_by_kind():
    assert {"demographic_parity", "equal_opportunity", "equalized_odds", "error_rate_parity"} <= set(TERM_KINDS)
    spec = TypeAdapter(TermSpec).validate_python({"kind": "equalized_odds", "name": "eo", "weight": 0.25})
    assert isinstance(spec, EqualizedOddsSpec)
    assert spec.key == "eo" and spec.weight == 0.25


def test_group_weight_for_unknown_group_raises_spec_error_naming_it():
    spec = DemographicParitySpec(kind="demographic_parity", group_weights={"a": 2.0, "sex=Martian": 3.0})
    with pytest.raises(SpecError) as info:
        spec.build(context(("a", "b"), (100, 100)))
    message = str(info.value)
    assert "'sex=Martian'" in message
    assert "group_weights" in message


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_non_positive_group_weight_is_refused(weight):
    with pytest.raises(ValidationError) as info:
        DemographicParitySpec(kind="demographic_parity", group_weights={"a": weight})
    assert "'a'" in str(info.value)


@pytest.mark.parametrize("weight", [math.nan, math.inf])
def test_non_finite_group_weight_is_refused(weight):
    """A NaN or infinite stakeholder weight makes every value of the term NaN
    (NaN * gap; inf * 0 on the pair of a group with itself), so training would stop with
    a non-finite loss; the spec must refuse it up front, as it refuses weight <= 0."""
    with pytest.raises(ValidationError):
        DemographicParitySpec(kind="demographic_parity", group_weights={"a": weight})


def test_constraint_mode_needs_a_bound():
    with pytest.raises(ValidationError) as info:
        EqualizedOddsSpec(kind="equalized_odds", mode="constraint")
    assert "bound" in str(info.value)


def test_constraint_mode_with_bound_is_accepted():
    spec = EqualizedOddsSpec(kind="equalized_odds", mode="constraint", bound=0.05, dual_lr=0.1)
    assert spec.bound == 0.05 and spec.dual_lr == 0.1


def test_negative_term_weight_is_refused():
    with pytest.raises(ValidationError):
        DemographicParitySpec(kind="demographic_parity", weight=-0.5)


# --------------------------------------------------------------------------- BCE


def test_bce_matches_formula():
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.4)) / 4
    value = BinaryCrossEntropy()(batch([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1], [0, 0, 1, 1]))
    assert value.item() == pytest.approx(expected)


def test_bce_gradcheck():
    logits = logits_of([0.9, 0.2, 0.6, 0.4]).requires_grad_()
    y, g = t([1, 0, 0, 1]), codes([0, 0, 1, 1])
    assert torch.autograd.gradcheck(lambda z: BinaryCrossEntropy()(Batch(z, y, g)), (logits,))


# --------------------------------------------------------------------------- objective


def objective():
    return Objective(
        [
            (Slot("dp", "penalty", weight=2.0), DemographicParity(n_groups=3)),
            (Slot("eo", "penalty", weight=0.5), EqualizedOdds(n_groups=3)),
        ]
    )


def eo_batch(logits=None):
    return batch(EO_P, EO_Y, EO_G, logits=logits)


def test_objective_parts_are_bce_and_unweighted_terms():
    b = eo_batch()
    parts = objective().parts(b)
    assert set(parts) == {"bce", "dp", "eo"}
    bce = F.binary_cross_entropy_with_logits(b.logits, b.y).item()
    # DP: g0 (0.9 + 0.2)/2 = 0.55, g1 (0.6 + 0.4)/2 = 0.5, g2 (0.7 + 0.05)/2 = 0.375 -> 0.175
    # EO: max(TPR spread 0.3, FPR spread 0.35) = 0.35
    assert parts["bce"].item() == pytest.approx(bce)
    assert parts["dp"].item() == pytest.approx(0.175)
    assert parts["eo"].item() == pytest.approx(0.35)


def test_objective_penalized_is_bce_plus_weighted_penalties():
    b = eo_batch()
    obj = objective()
    total = obj.penalized(obj.parts(b))
    bce = F.binary_cross_entropy_with_logits(b.logits, b.y).item()
    assert total.item() == pytest.approx(bce + 2.0 * 0.175 + 0.5 * 0.35)


def test_objective_penalized_leaves_out_constraints():
    # the constrained error-rate term (value 0.25, see test_error_rate_parity_value) is in
    # the parts but not in the penalized loss, whatever its weight field says
    obj = Objective(
        [
            (Slot("dp", "penalty", weight=2.0), DemographicParity(n_groups=3)),
            (Slot("err", "constraint", weight=7.0, bound=0.1), ErrorRateParity(n_groups=3)),
        ]
    )
    b = eo_batch()
    parts = obj.parts(b)
    assert parts["err"].item() == pytest.approx(0.25)
    bce = F.binary_cross_entropy_with_logits(b.logits, b.y).item()
    assert obj.penalized(parts).item() == pytest.approx(bce + 2.0 * 0.175)
    assert [slot.name for slot in obj.constraints] == ["err"]


def test_objective_from_specs():
    specs = [
        DemographicParitySpec(kind="demographic_parity", name="dp", weight=2.0),
        EqualizedOddsSpec(kind="equalized_odds", weight=0.5),
        ErrorRateParitySpec(kind="error_rate_parity", mode="constraint", bound=0.1, dual_lr=0.2),
    ]
    obj = Objective.from_specs(specs, context())
    assert [(s.name, s.mode, s.weight) for s in obj.slots] == [
        ("dp", "penalty", 2.0),
        ("equalized_odds", "penalty", 0.5),
        ("error_rate_parity", "constraint", 1.0),
    ]
    assert obj.constraints[0].bound == 0.1 and obj.constraints[0].dual_lr == 0.2
    b = eo_batch()
    parts = obj.parts(b)
    # dp 0.175, eo 0.35, error-rate parity 0.25 (constraint: not in the penalized loss)
    assert parts["error_rate_parity"].item() == pytest.approx(0.25)
    bce = F.binary_cross_entropy_with_logits(b.logits, b.y).item()
    assert obj.penalized(parts).item() == pytest.approx(bce + 2.0 * 0.175 + 0.5 * 0.35)


def test_objective_without_terms_is_bce():
    b = eo_batch()
    obj = Objective([])
    parts = obj.parts(b)
    assert set(parts) == {"bce"}
    assert obj.penalized(parts).item() == pytest.approx(F.binary_cross_entropy_with_logits(b.logits, b.y).item())


def test_objective_zero_weight_term_adds_nothing():
    b = eo_batch()
    obj = Objective([(Slot("dp", "penalty", weight=0.0), DemographicParity(n_groups=3))])
    parts = obj.parts(b)
    assert obj.penalized(parts).item() == pytest.approx(F.binary_cross_entropy_with_logits(b.logits, b.y).item())
    assert parts["dp"].item() == pytest.approx(0.175)


def test_objective_term_named_bce_does_not_replace_the_task_loss():
    """A term spec may carry any name matching its pattern, 'bce' included. The task
    loss must not be silently replaced by such a term: either the name is refused or
    parts()['bce'] stays the binary cross-entropy."""
    try:
        spec = DemographicParitySpec(kind="demographic_parity", name="bce", weight=0.5)
        obj = Objective.from_specs([spec], context())
    except (ValidationError, SpecError):
        return  # refused up front
    b = eo_batch()
    parts = obj.parts(b)
    bce = F.binary_cross_entropy_with_logits(b.logits, b.y).item()
    assert parts["bce"].item() == pytest.approx(bce)


def test_objective_gradcheck():
    # dp: group means 0.55, 0.5, 0.375 (unique max, min); eo: TPR 0.3 vs FPR 0.35 (unique)
    logits = logits_of(EO_P).requires_grad_()
    obj = objective()
    y, g = t(EO_Y), codes(EO_G)
    assert torch.autograd.gradcheck(lambda z: obj.penalized(obj.parts(Batch(z, y, g))), (logits,))


def test_objective_gradient_is_bce_plus_weighted_term_gradients():
    # independent: gradient of F.bce + 2 * (mean p|g0 - mean p|g2) + 0.5 * (FPR g1 - FPR g2)
    # DP max g0 (0.55), min g2 (0.375); EO = FPR spread: max g1 (0.4), min g2 (0.05)
    logits = logits_of(EO_P).requires_grad_()
    obj = objective()
    obj.penalized(obj.parts(Batch(logits, t(EO_Y), codes(EO_G)))).backward()
    z = logits_of(EO_P).requires_grad_()
    p = torch.sigmoid(z)
    by_hand = (
        F.binary_cross_entropy_with_logits(z, t(EO_Y))
        + 2.0 * ((p[0] + p[1]) / 2 - (p[4] + p[5]) / 2)
        + 0.5 * (p[3] - p[5])
    )
    (expected,) = torch.autograd.grad(by_hand, z)
    torch.testing.assert_close(logits.grad, expected)


def test_objective_finite_on_single_group_batch():
    logits = logits_of(EO_P).requires_grad_()
    obj = objective()
    parts = obj.parts(Batch(logits, t(EO_Y), codes([0] * 6)))
    assert parts["dp"].item() == 0.0 and parts["eo"].item() == 0.0
    obj.penalized(parts).backward()
    assert torch.isfinite(logits.grad).all()


def test_terms_work_in_float32():
    logits = logits_of([0.1, 0.3, 0.6, 0.8]).float()
    value = DemographicParity(n_groups=2)(Batch(logits, torch.zeros(4), codes([0, 0, 1, 1])))
    # 0.7 - 0.2
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(0.5, abs=1e-6)
