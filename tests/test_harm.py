"""Harm: the cost model, the harm / coverage / selective-risk / confident-error / ECE
metrics, the harm terms, and the abstain machinery of the models.

Every expected value is worked out by hand in a comment from the tiny arrays in the
test, or computed by an independent loop written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ethicsweep.errors import SpecError
from ethicsweep.objectives.base import Batch, TermContext
from ethicsweep.objectives.costs import CostModel
from ethicsweep.objectives.harm import (
    ConfidentError,
    ConfidentErrorSpec,
    ExpectedCost,
    ExpectedCostSpec,
    decision_distribution,
)
from ethicsweep.objectives.metrics import evaluate, expected_calibration_error, harm
from ethicsweep.spec import ModelSpec
from ethicsweep.trainables.models import abstain_mask, build_model, predict, sigmoid, split_outputs

DEFAULT = [[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]]
NIGHT = [[0.0, 2.0, 0.3], [4.0, 0.0, 0.3]]
LN3 = math.log(3.0)  # sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4


def logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


# ---------------------------------------------------------------- CostModel: validation

BAD_SHAPES = {
    "2x2": [[0.0, 1.0], [1.0, 0.0]],
    "3x3": [[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [1.0, 1.0, 1.0]],
    "1x3": [[0.0, 1.0, 0.5]],
    "ragged": [[0.0, 1.0, 0.5], [1.0, 0.0]],
    "empty": [],
}


@pytest.mark.parametrize("matrix", BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_cost_model_default_of_wrong_shape_refused_naming_field_and_shape(matrix):
    with pytest.raises(ValidationError) as info:
        CostModel(default=matrix)
    message = str(info.value)
    assert "harm.default" in message
    assert "2 rows" in message and "3 costs" in message


@pytest.mark.parametrize("matrix", BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_cost_model_by_context_of_wrong_shape_refused_naming_context(matrix):
    with pytest.raises(ValidationError) as info:
        CostModel(by_context={"night": matrix})
    message = str(info.value)
    assert "harm.by_context.night" in message
    assert "2 rows" in message and "3 costs" in message


def test_cost_model_negative_cost_refused():
    with pytest.raises(ValidationError, match=r"harm\.default.*>= 0"):
        CostModel(default=[[0.0, -1.0, 0.5], [1.0, 0.0, 0.5]])
    with pytest.raises(ValidationError, match=r"harm\.by_context\.night.*>= 0"):
        CostModel(by_context={"night": [[0.0, 1.0, 0.5], [1.0, 0.0, -0.5]]})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_cost_model_non_finite_cost_refused(bad):
    with pytest.raises(ValidationError):
        CostModel(default=[[0.0, bad, 0.5], [1.0, 0.0, 0.5]])
    with pytest.raises(ValidationError):
        CostModel(by_context={"night": [[0.0, 1.0, 0.5], [bad, 0.0, 0.5]]})


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_cost_model_group_weight_must_be_positive_and_finite(bad):
    with pytest.raises(ValidationError):
        CostModel(group_weights={"a": bad})


def test_cost_model_default_charges_one_per_error_half_per_abstention():
    assert CostModel().default == DEFAULT


@pytest.mark.parametrize("tau", [0.5, 0.3, 1.01])
def test_cost_model_confidence_threshold_range(tau):
    with pytest.raises(ValidationError):
        CostModel(confidence_threshold=tau)


# ---------------------------------------------------------------- CostModel: matrices / weights


def test_matrices_pick_by_context_per_code_and_default_elsewhere():
    model = CostModel(by_context={"night": NIGHT})
    got = model.matrices(("day", "night", "weekend"))
    # codes 0 (day) and 2 (weekend) have no matrix of their own: the default
    expected = np.array([DEFAULT, NIGHT, DEFAULT])
    assert got.shape == (3, 2, 3)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)


def test_matrices_use_custom_default():
    custom = [[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]]
    got = CostModel(default=custom, by_context={"b": NIGHT}).matrices(("a", "b"))
    np.testing.assert_array_equal(got, np.array([custom, NIGHT]))


def test_matrices_without_contexts_is_one_default_matrix():
    got = CostModel().matrices(())
    assert got.shape == (1, 2, 3)
    np.testing.assert_array_equal(got[0], np.array(DEFAULT))


def test_matrices_unknown_context_is_spec_error_naming_it():
    model = CostModel(by_context={"holiday": NIGHT})
    with pytest.raises(SpecError, match="holiday"):
        model.matrices(("day", "night"))


def test_matrices_by_context_without_any_context_column_is_spec_error():
    model = CostModel(by_context={"night": NIGHT})
    with pytest.raises(SpecError, match="night.*data.context"):
        model.matrices(())


def test_weights_default_one_named_group_scaled():
    got = CostModel(group_weights={"b": 2.0}).weights(("a", "b", "c"))
    np.testing.assert_array_equal(got, [1.0, 2.0, 1.0])


def test_weights_unknown_group_is_spec_error_naming_it():
    with pytest.raises(SpecError, match="'z'"):
        CostModel(group_weights={"z": 2.0}).weights(("a", "b"))


# ---------------------------------------------------------------- harm metric


# matrix 0 (day) = DEFAULT, matrix 1 (night) = NIGHT; group weights [1, 2, 0.5]
HARM_Y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
HARM_D = np.array([0, 1, 0, 2, 2, 1, 1, 0])
HARM_G = np.array([0, 1, 0, 2, 1, 2, 1, 0])
HARM_C = np.array([0, 0, 1, 1, 0, 1, 1, 0])
HARM_W = np.array([1.0, 2.0, 0.5])


def test_harm_by_hand_two_contexts_group_weights_and_abstain():
    matrices = np.array([DEFAULT, NIGHT])
    # r0 y0 d0 ctx0 g0: 0   ×1   = 0
    # r1 y0 d1 ctx0 g1: 1   ×2   = 2
    # r2 y1 d0 ctx1 g0: 4   ×1   = 4
    # r3 y1 d2 ctx1 g2: 0.3 ×0.5 = 0.15
    # r4 y0 d2 ctx0 g1: 0.5 ×2   = 1
    # r5 y0 d1 ctx1 g2: 2   ×0.5 = 1
    # r6 y1 d1 ctx1 g1: 0   ×2   = 0
    # r7 y1 d0 ctx0 g0: 1   ×1   = 1
    # sum 9.15 / 8 = 1.14375
    assert harm(HARM_Y, HARM_D, HARM_G, matrices, HARM_W, HARM_C) == pytest.approx(1.14375)


def test_harm_without_context_uses_matrix_zero():
    matrices = np.array([DEFAULT, NIGHT])
    # every row under DEFAULT: r0 0, r1 1×2, r2 1×1, r3 0.5×0.5, r4 0.5×2, r5 1×0.5, r6 0, r7 1×1
    # = 0 + 2 + 1 + 0.25 + 1 + 0.5 + 0 + 1 = 5.75; / 8 = 0.71875
    assert harm(HARM_Y, HARM_D, HARM_G, matrices, HARM_W) == pytest.approx(0.71875)


# ---------------------------------------------------------------- evaluate: abstention metrics

# threshold 0.5, tau 0.9
#      y   p     ŷ  wrong  max(p,1-p)  abstained
# r0   1  0.95   1   -     0.95
# r1   0  0.95   1   W     0.95        -> confident error
# r2   0  0.90   1   W     0.90 (= τ)  -> confident error
# r3   0  0.30   0   -     0.70
# r4   1  0.40   0   W     0.60
# r5   0  0.97   1   W     0.97        abstained -> never counted
# r6   1  0.55   1   -     0.55        abstained
# r7   0  0.05   0   -     0.95
# r8   0  0.89   1   W     0.89 (< τ)
EV_Y = np.array([1, 0, 0, 0, 1, 0, 1, 0, 0])
EV_P = np.array([0.95, 0.95, 0.9, 0.3, 0.4, 0.97, 0.55, 0.05, 0.89])
EV_ABSTAIN = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
EV_G = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0])
EV_NAMES = ("a", "b")


def ev(**kwargs):
    return evaluate(EV_Y, EV_P, EV_G, EV_NAMES, min_group_size=1, **kwargs).values


def test_evaluate_coverage_share_not_abstained():
    assert ev(abstain=EV_ABSTAIN)["coverage"] == pytest.approx(7 / 9)


def test_evaluate_selective_risk_on_covered_rows():
    # covered rows r0 r1 r2 r3 r4 r7 r8; wrong among them r1 r2 r4 r8 -> 4/7
    assert ev(abstain=EV_ABSTAIN)["selective_risk"] == pytest.approx(4 / 7)


def test_evaluate_without_abstain_full_coverage_and_risk_is_error_rate():
    values = ev()
    assert values["coverage"] == 1.0
    # wrong: r1 r2 r4 r5 r8 -> 5/9
    assert values["selective_risk"] == pytest.approx(5 / 9)


def test_evaluate_confident_error_rate_counts_p_at_tau_and_skips_abstained():
    # r1 (0.95) and r2 (exactly 0.9) wrong, covered, confident; r5 abstained; r8 below τ -> 2/9
    assert ev(abstain=EV_ABSTAIN)["confident_error_rate"] == pytest.approx(2 / 9)


def test_evaluate_confident_error_rate_without_abstain_counts_r5():
    # r1, r2, r5 -> 3/9
    assert ev()["confident_error_rate"] == pytest.approx(3 / 9)


def test_evaluate_confident_error_rate_uses_given_threshold():
    # τ = 0.85: r1, r2, r8 (0.89) -> 3/9;  τ = 0.96: none covered (r5 is abstained) -> 0
    assert ev(abstain=EV_ABSTAIN, confidence_threshold=0.85)["confident_error_rate"] == pytest.approx(3 / 9)
    assert ev(abstain=EV_ABSTAIN, confidence_threshold=0.96)["confident_error_rate"] == 0.0


def test_evaluate_harm_default_costs():
    # 4 covered errors × 1 + 2 abstentions × 0.5 = 5; / 9
    assert ev(abstain=EV_ABSTAIN)["harm"] == pytest.approx(5 / 9)


def test_evaluate_harm_with_group_weights():
    # weights a=1, b=3. errors: r1 (b) 3, r2 (a) 1, r4 (a) 1, r8 (a) 1;
    # abstentions: r5 (b) 0.5×3 = 1.5, r6 (a) 0.5 -> 8; / 9
    values = ev(abstain=EV_ABSTAIN, cost_group_weights=np.array([1.0, 3.0]))
    assert values["harm"] == pytest.approx(8 / 9)


def test_evaluate_harm_with_context_matrices():
    context = np.array([0, 1, 1, 0, 1, 1, 0, 0, 0])
    # ctx0 = DEFAULT, ctx1 = NIGHT; decisions: covered -> ŷ, abstained -> 2
    # r0 y1 d1 c0: 0      r1 y0 d1 c1: 2       r2 y0 d1 c1: 2
    # r3 y0 d0 c0: 0      r4 y1 d0 c1: 4       r5 y0 d2 c1: 0.3
    # r6 y1 d2 c0: 0.5    r7 y0 d0 c0: 0       r8 y0 d1 c0: 1
    # sum = 9.8; / 9
    values = ev(abstain=EV_ABSTAIN, context=context, cost_matrices=np.array([DEFAULT, NIGHT]))
    assert values["harm"] == pytest.approx(9.8 / 9)


def test_evaluate_everything_abstained():
    values = ev(abstain=np.ones(9, dtype=bool))
    assert values["coverage"] == 0.0
    assert math.isnan(values["selective_risk"])
    assert values["confident_error_rate"] == 0.0
    assert values["harm"] == pytest.approx(0.5)  # every row costs the review cost 0.5


def test_evaluate_everything_abstained_is_noted_undefined():
    report = evaluate(EV_Y, EV_P, EV_G, EV_NAMES, min_group_size=1, abstain=np.ones(9, dtype=bool))
    assert "selective_risk" in report.undefined


# ---------------------------------------------------------------- ECE


def ece_loop(y, p, threshold=0.5, bins=15):
    """Independent ECE: explicit half-open bins [b/15, (b+1)/15), the last one closed."""
    y, p = list(map(int, y)), list(map(float, p))
    n = len(p)
    members = [[] for _ in range(bins)]
    for yi, pi in zip(y, p):
        predicted = 1 if pi >= threshold else 0
        conf = pi if predicted == 1 else 1.0 - pi
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            if lo <= conf < hi or (b == bins - 1 and conf == 1.0):
                members[b].append((conf, predicted == yi))
                break
    total = 0.0
    for rows in members:
        if rows:
            acc = sum(c for _, c in rows) / len(rows)
            mean_conf = sum(c for c, _ in rows) / len(rows)
            total += len(rows) / n * abs(acc - mean_conf)
    return total


# threshold 0.5
#      y   p      pred conf   bin         correct
# r0   1  1.00     1   1.00   14 (last)   yes
# r1   1  0.00     0   1.00   14 (last)   no
# r2   1  0.60     1   0.60    9 (edge)   yes
# r3   1  0.40     0   0.60    9 (edge)   no
# r4   1  0.62     1   0.62    9          yes
# r5   0  0.50     1   0.50    7          no
# r6   1  0.80     1   0.80   12 (edge)   yes
# r7   0  0.10     0   0.90   13          yes
# r8   1  0.95     1   0.95   14          yes
ECE_Y = np.array([1, 1, 1, 1, 1, 0, 1, 0, 1])
ECE_P = np.array([1.0, 0.0, 0.6, 0.4, 0.62, 0.5, 0.8, 0.1, 0.95])


def test_ece_by_hand_with_confidence_one_and_bin_edges():
    # bin 14: conf (1, 1, .95), acc 2/3  -> 3/9 · |2/3 − 2.95/3| = 0.95/9
    # bin  9: conf (.6, .6, .62), acc 2/3 -> 3/9 · |2/3 − 1.82/3| = 0.18/9
    # bin  7: .5, acc 0  -> 0.5/9;  bin 12: .8, acc 1 -> 0.2/9;  bin 13: .9, acc 1 -> 0.1/9
    # ECE = (0.95 + 0.18 + 0.5 + 0.2 + 0.1) / 9 = 1.93 / 9
    # Discriminating: 1.0 overflowing into a 16th bin gives (1 + 0.05 + ...) = 2.03/9;
    # 0.6 falling into bin 8 gives bin 8 |1 − 1.2| = 0.2/9 and bin 9 |1 − .62| = 0.38/9 -> 2.33/9.
    assert expected_calibration_error(ECE_Y, ECE_P) == pytest.approx(1.93 / 9)
    assert ece_loop(ECE_Y, ECE_P) == pytest.approx(1.93 / 9)


def test_ece_confidence_one_alone_is_perfectly_calibrated():
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_ece_threshold_below_half_uses_predicted_class_confidence():
    # threshold 0.3
    #      y  p     pred conf  bin      correct
    # r0   1  0.40   1   0.40   6 (edge) yes  -> |1 − 0.40| = 0.60
    # r1   0  0.35   1   0.35   5        no   -> |0 − 0.35| = 0.35
    # r2   0  0.25   0   0.75  11        yes  -> |1 − 0.75| = 0.25
    # r3   0  0.70   1   0.70  10        no   -> |0 − 0.70| = 0.70
    # ECE = (0.6 + 0.35 + 0.25 + 0.7) / 4 = 0.475
    y = np.array([1, 0, 0, 0])
    p = np.array([0.4, 0.35, 0.25, 0.7])
    assert expected_calibration_error(y, p, threshold=0.3) == pytest.approx(0.475)
    assert ece_loop(y, p, threshold=0.3) == pytest.approx(0.475)


def test_evaluate_ece_uses_model_threshold():
    y = np.array([1, 0, 0, 0])
    p = np.array([0.4, 0.35, 0.25, 0.7])
    values = evaluate(y, p, np.zeros(4, dtype=int), ("a",), threshold=0.3, min_group_size=1).values
    assert values["ece"] == pytest.approx(0.475)


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.72])
def test_ece_matches_independent_loop_on_random_data(threshold):
    rng = np.random.default_rng(11)
    p = rng.uniform(0, 1, 300)
    p[:3] = [0.0, 1.0, 0.6]
    y = (rng.uniform(0, 1, 300) < p).astype(int)
    assert expected_calibration_error(y, p, threshold) == pytest.approx(ece_loop(y, p, threshold), abs=1e-12)


# ---------------------------------------------------------------- decision_distribution


def test_decision_distribution_without_abstain_head():
    batch = Batch(logits=torch.tensor([0.0, LN3]), y=torch.zeros(2), groups=torch.zeros(2, dtype=torch.long))
    q = decision_distribution(batch)
    # p = (1/2, 3/4); never abstains
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2))


def test_decision_distribution_with_abstain_head():
    batch = Batch(
        logits=torch.tensor([0.0, LN3]),
        y=torch.zeros(2),
        groups=torch.zeros(2, dtype=torch.long),
        abstain_logits=torch.tensor([0.0, -LN3]),
    )
    q = decision_distribution(batch)
    # r0: p 1/2, a 1/2 -> (1/4, 1/4, 1/2); r1: p 3/4, a 1/4 -> (3/4·1/4, 3/4·3/4, 1/4)
    expected = torch.tensor([[0.25, 0.25, 0.5], [0.1875, 0.5625, 0.25]])
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2))


# ---------------------------------------------------------------- ExpectedCost

# ctx0 = DEFAULT, ctx1 = NIGHT; group weights (1, 2)
EC_LOGITS = [0.0, LN3, -LN3, 0.0]  # p = 1/2, 3/4, 1/4, 1/2
EC_ABSTAIN = [0.0, -LN3, -LN3, LN3]  # a = 1/2, 1/4, 1/4, 3/4
EC_Y = [0.0, 1.0, 0.0, 1.0]
EC_G = [0, 1, 1, 0]
EC_C = [0, 1, 1, 0]
EC_MATRICES = np.array([DEFAULT, NIGHT])
EC_WEIGHTS = np.array([1.0, 2.0])


def ec_batch(dtype=torch.float32, abstain=True, context=True):
    return Batch(
        logits=torch.tensor(EC_LOGITS, dtype=dtype),
        y=torch.tensor(EC_Y, dtype=dtype),
        groups=torch.tensor(EC_G),
        context=torch.tensor(EC_C) if context else None,
        abstain_logits=torch.tensor(EC_ABSTAIN, dtype=dtype) if abstain else None,
    )


# q rows with abstain: r0 (.25,.25,.5)  r1 (.1875,.5625,.25)  r2 (.5625,.1875,.25)  r3 (.125,.125,.75)
# r0 y0 ctx0 costs (0,1,.5):  .25 + .25        = .5   ×1 = .5
# r1 y1 ctx1 costs (4,0,.3):  .75 + .075       = .825 ×2 = 1.65
# r2 y0 ctx1 costs (0,2,.3):  .375 + .075      = .45  ×2 = .9
# r3 y1 ctx0 costs (1,0,.5):  .125 + .375      = .5   ×1 = .5
# mean = 3.55 / 4 = 0.8875
EC_VALUE = 0.8875


def test_expected_cost_by_hand_with_abstain_contexts_and_weights():
    term = ExpectedCost(EC_MATRICES, EC_WEIGHTS)
    assert term(ec_batch()).item() == pytest.approx(EC_VALUE, abs=1e-6)


def test_expected_cost_by_hand_without_abstain():
    # q = (1-p, p, 0): r0 (.5,.5) y0 ctx0 -> .5; r1 (.25,.75) y1 ctx1 -> .25·4 = 1 ×2 = 2;
    # r2 (.75,.25) y0 ctx1 -> .25·2 = .5 ×2 = 1; r3 (.5,.5) y1 ctx0 -> .5. mean = 4/4 = 1
    term = ExpectedCost(EC_MATRICES, EC_WEIGHTS)
    assert term(ec_batch(abstain=False)).item() == pytest.approx(1.0, abs=1e-6)


def test_expected_cost_without_context_uses_matrix_zero():
    # all DEFAULT: r0 .5×1, r1 y1 (1,0,.5): .1875 + .125 = .3125 ×2 = .625,
    # r2 y0 (0,1,.5): .1875 + .125 = .3125 ×2 = .625, r3 .5×1 -> (.5+.625+.625+.5)/4 = 0.5625
    term = ExpectedCost(EC_MATRICES, EC_WEIGHTS)
    assert term(ec_batch(context=False)).item() == pytest.approx(0.5625, abs=1e-6)


def test_expected_cost_spec_builds_from_cost_model():
    context = TermContext(
        group_names=("a", "b"),
        group_counts=np.array([50, 50]),
        context_names=("day", "night"),
        harm=CostModel(by_context={"night": NIGHT}, group_weights={"b": 2.0}),
        abstain_output=True,
    )
    term = ExpectedCostSpec(kind="expected_cost").build(context)
    assert term(ec_batch()).item() == pytest.approx(EC_VALUE, abs=1e-6)


def test_expected_cost_spec_unknown_context_is_spec_error():
    context = TermContext(
        group_names=("a",), group_counts=np.array([50]), context_names=("day",), harm=CostModel(by_context={"night": NIGHT})
    )
    with pytest.raises(SpecError, match="night"):
        ExpectedCostSpec(kind="expected_cost").build(context)


def test_expected_cost_gradcheck_in_the_probabilities():
    term = ExpectedCost(EC_MATRICES, EC_WEIGHTS)
    logits = torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=torch.float64, requires_grad=True)
    y, g, c = torch.tensor(EC_Y, dtype=torch.float64), torch.tensor(EC_G), torch.tensor(EC_C)
    for abstain in (None, torch.tensor([-0.5, 0.4, 1.1, -2.0], dtype=torch.float64)):
        assert torch.autograd.gradcheck(lambda lg: term(Batch(lg, y, g, c, abstain)), (logits,))


def test_abstain_head_learns_from_the_cost_of_the_decision_made():
    # d/d(abstain logit_i) = w_i / n · (review_i − C[y_i, ŷ_i]) · a_i (1 − a_i), ŷ = 1[p >= 0.5]
    # r0 p .5 -> ŷ 1, y0 ctx0: 1/4 · (.5 − 1) · .25   = −.03125
    # r1 p .75 -> ŷ 1, y1 ctx1: 2/4 · (.3 − 0) · .1875 = .028125
    # r2 p .25 -> ŷ 0, y0 ctx1: 2/4 · (.3 − 0) · .1875 = .028125
    # r3 p .5 -> ŷ 1, y1 ctx0: 1/4 · (.5 − 0) · .1875 = .0234375
    term = ExpectedCost(EC_MATRICES, EC_WEIGHTS)
    batch = ec_batch(dtype=torch.float64)
    batch.abstain_logits.requires_grad_(True)
    term(batch).backward()
    assert batch.abstain_logits.grad.tolist() == pytest.approx([-0.03125, 0.028125, 0.028125, 0.0234375], abs=1e-7)  # costs held in float32


# ---------------------------------------------------------------- ConfidentError

# tau 0.8; escalation 3 in context "night" (code 1)
#      y  p     p_wrong  relu(p_wrong − .8)/.2  ctx   × factor
# r0   0  0.90   0.90     0.5                   0      0.5
# r1   1  0.05   0.95     0.75                  1      2.25
# r2   1  0.90   0.10     0                     1      0
# r3   0  0.70   0.70     0                     0      0
CE_P = [0.9, 0.05, 0.9, 0.7]
CE_Y = [0.0, 1.0, 1.0, 0.0]
CE_C = [0, 1, 1, 0]


def ce_batch():
    return Batch(logits=logit(CE_P), y=torch.tensor(CE_Y, dtype=torch.float64), groups=torch.zeros(4, dtype=torch.long), context=torch.tensor(CE_C))


def ce_context():
    return TermContext(group_names=("a",), group_counts=np.array([50]), context_names=("day", "night"))


def test_confident_error_by_hand_with_escalation_in_sensitive_context():
    term = ConfidentErrorSpec(kind="confident_error", tau=0.8, escalation=3.0, sensitive_contexts=["night"]).build(ce_context())
    # (0.5 + 2.25 + 0 + 0) / 4 = 0.6875
    assert term(ce_batch()).item() == pytest.approx(0.6875)


def test_confident_error_escalates_only_named_context():
    # escalation on "day" instead: r0 0.5×3 = 1.5, r1 0.75 -> 2.25 / 4 = 0.5625
    term = ConfidentErrorSpec(kind="confident_error", tau=0.8, escalation=3.0, sensitive_contexts=["day"]).build(ce_context())
    assert term(ce_batch()).item() == pytest.approx(0.5625)


def test_confident_error_without_sensitive_contexts():
    # no escalation: (0.5 + 0.75) / 4 = 0.3125
    term = ConfidentErrorSpec(kind="confident_error", tau=0.8, escalation=3.0).build(ce_context())
    assert term(ce_batch()).item() == pytest.approx(0.3125)


def test_confident_error_direct_construction():
    term = ConfidentError(0.8, torch.tensor([1.0, 3.0]))
    assert term(ce_batch()).item() == pytest.approx(0.6875)


def test_confident_error_gradcheck():
    term = ConfidentError(0.8, torch.tensor([1.0, 3.0]))
    # p_wrong away from τ (relu kink): 0.9, 0.95, 0.1, 0.85
    logits = logit([0.9, 0.05, 0.9, 0.85]).clone().requires_grad_(True)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)

    def f(lg):
        return term(Batch(lg, y, torch.zeros(4, dtype=torch.long), torch.tensor(CE_C)))

    assert torch.autograd.gradcheck(f, (logits,))


def test_confident_error_spec_unknown_sensitive_context_is_spec_error():
    spec = ConfidentErrorSpec(kind="confident_error", sensitive_contexts=["holiday"])
    with pytest.raises(SpecError, match="holiday"):
        spec.build(ce_context())


def test_confident_error_spec_sensitive_context_without_context_column_is_spec_error():
    spec = ConfidentErrorSpec(kind="confident_error", sensitive_contexts=["night"])
    with pytest.raises(SpecError, match="night"):
        spec.build(TermContext(group_names=("a",), group_counts=np.array([50])))


@pytest.mark.parametrize("tau", [0.5, 1.0, 0.2, 1.5])
def test_confident_error_spec_tau_outside_open_interval_refused(tau):
    with pytest.raises(ValidationError):
        ConfidentErrorSpec(kind="confident_error", tau=tau)


def test_confident_error_spec_escalation_below_one_refused():
    with pytest.raises(ValidationError):
        ConfidentErrorSpec(kind="confident_error", escalation=0.5)


# ---------------------------------------------------------------- abstain_mask, build_model


def test_abstain_mask_rule():
    spec = ModelSpec(abstain="rule", abstain_confidence=0.75)
    proba = np.array([0.5, 0.75, 0.25, 0.74, 0.95, 0.1])
    # max(p, 1−p) = .5, .75, .75, .74, .95, .9; abstain where < .75 (exactly .75 decides)
    np.testing.assert_array_equal(abstain_mask(spec, proba, None), [True, False, False, True, False, False])


def test_abstain_mask_trained():
    spec = ModelSpec(abstain="trained")
    proba = np.array([0.5, 0.99, 0.01])
    np.testing.assert_array_equal(abstain_mask(spec, proba, np.array([0.49, 0.5, 0.9])), [False, True, True])


def test_abstain_mask_none():
    assert abstain_mask(ModelSpec(abstain="none"), np.array([0.5, 0.6]), None) is None


def test_sigmoid_matches_formula_and_is_stable():
    x = np.array([-3.0, 0.0, 2.0])
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    with np.errstate(over="raise"):
        np.testing.assert_array_equal(sigmoid(np.array([-1000.0, 1000.0])), [0.0, 1.0])


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
@pytest.mark.parametrize("abstain", ["none", "rule"])
def test_build_model_single_output(kind, abstain):
    torch.manual_seed(0)
    model = build_model(ModelSpec(kind=kind, hidden=8, layers=2, abstain=abstain), 5)
    out = model(torch.randn(7, 5))
    assert out.shape == (7,)
    logits, abstain_logits = split_outputs(out)
    assert logits.shape == (7,) and abstain_logits is None


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_build_model_trained_abstain_has_two_outputs(kind):
    torch.manual_seed(0)
    model = build_model(ModelSpec(kind=kind, hidden=8, layers=2, abstain="trained"), 5)
    out = model(torch.randn(7, 5))
    assert out.shape == (7, 2)
    logits, abstain_logits = split_outputs(out)
    torch.testing.assert_close(logits, out[:, 0])
    torch.testing.assert_close(abstain_logits, out[:, 1])


def test_build_model_layer_counts():
    logistic = build_model(ModelSpec(kind="logistic"), 5)
    mlp = build_model(ModelSpec(kind="mlp", hidden=8, layers=2), 5)
    assert sum(isinstance(m, torch.nn.Linear) for m in logistic.modules()) == 1
    assert sum(isinstance(m, torch.nn.Linear) for m in mlp.modules()) == 3


def test_logistic_model_logit_is_linear_function():
    model = build_model(ModelSpec(kind="logistic"), 3)
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    X = torch.tensor([[1.0, 2.0, -1.0], [0.0, 0.5, 3.0]])
    expected = X @ linear.weight[0] + linear.bias[0]
    torch.testing.assert_close(model(X), expected)


@pytest.mark.parametrize("abstain", ["none", "trained"])
def test_predict_shapes_and_restores_training_mode(abstain):
    torch.manual_seed(0)
    model = build_model(ModelSpec(kind="mlp", hidden=4, dropout=0.5, abstain=abstain), 3)
    model.train()
    logits, abstain_logits = predict(model, torch.randn(10, 3), batch_size=4)
    assert model.training
    assert isinstance(logits, np.ndarray) and logits.shape == (10,)
    if abstain == "none":
        assert abstain_logits is None
    else:
        assert abstain_logits.shape == (10,)
