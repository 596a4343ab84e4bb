"""Membership-inference metrics: hand-computed values of the loss-threshold attack on tiny
arrays (the arithmetic is in the comments), AUC against a brute-force pairwise count,
the equal-size sampling of members and non-members, and the ``mia_*`` values that scoring
reports on validation and test, recomputed independently from the model's weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ethicsweep.data import PreparedData, Split
from ethicsweep.objectives.membership import MIA_METRICS, equal_samples, loss_attack, per_example_bce
from ethicsweep.objectives.metrics import METRIC_DIRECTIONS
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables import scoring
from ethicsweep.trainables.train import train


def pairwise_auc(member_losses, nonmember_losses) -> float:
    """P(a member's loss < a non-member's loss) + ½ P(equal), by counting every pair."""
    wins = 0.0
    for m in member_losses:
        for n in nonmember_losses:
            wins += 1.0 if m < n else 0.5 if m == n else 0.0
    return wins / (len(member_losses) * len(nonmember_losses))


def threshold_sweep(member_losses, nonmember_losses) -> dict[str, float]:
    """Every ``mia_*`` metric by brute force: accept loss <= t for t = −∞ and every loss seen."""
    members, nonmembers = np.asarray(member_losses), np.asarray(nonmember_losses)
    advantage, tpr_at_low_fpr = 0.0, 0.0
    for t in np.r_[-np.inf, np.sort(np.r_[members, nonmembers])]:
        tpr, fpr = np.mean(members <= t), np.mean(nonmembers <= t)
        advantage = max(advantage, tpr - fpr)
        if fpr <= 0.01:
            tpr_at_low_fpr = max(tpr_at_low_fpr, tpr)
    return {"mia_auc": pairwise_auc(members, nonmembers), "mia_advantage": advantage, "mia_tpr_at_1pct_fpr": tpr_at_low_fpr}


# --------------------------------------------------------------------------- per-example loss


def test_per_example_bce_by_hand():
    # z = 0, y = 1: log(1 + e^0) − 0 = ln 2;  z = ln 3, y = 0: log(1 + 3) = ln 4
    # z = ln 3, y = 1: ln 4 − ln 3 = ln(4/3)
    losses = per_example_bce(np.array([0.0, math.log(3), math.log(3)]), np.array([1, 0, 1]))
    np.testing.assert_allclose(losses, [math.log(2), math.log(4), math.log(4 / 3)], rtol=1e-12)


def test_per_example_bce_is_stable_at_large_logits():
    # z = 1000, y = 1: log(1 + e^-1000) ≈ e^-1000 = 0 in float64; z = −1000, y = 1: 1000
    losses = per_example_bce(np.array([1000.0, -1000.0, 1000.0]), np.array([1, 1, 0]))
    np.testing.assert_allclose(losses, [0.0, 1000.0, 1000.0], atol=1e-12)


def test_per_example_bce_matches_torch():
    rng = np.random.default_rng(0)
    z, y = rng.normal(0, 3, 50), rng.integers(0, 2, 50)
    expected = F.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(y, dtype=torch.float64), reduction="none")
    np.testing.assert_allclose(per_example_bce(z, y), expected.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- the attack


def test_attack_by_hand():
    members, nonmembers = [0.1, 0.2, 0.5], [0.3, 0.6, 0.7]
    # AUC: pairs (m < n): 0.1 beats 3, 0.2 beats 3, 0.5 beats 2 (0.6, 0.7) -> 8 / 9
    # ROC, accepting loss <= t (sorted losses: 0.1m 0.2m 0.3n 0.5m 0.6n 0.7n):
    #   t=0.1: TPR 1/3 FPR 0;  t=0.2: 2/3, 0;  t=0.3: 2/3, 1/3;  t=0.5: 1, 1/3;  t=0.6: 1, 2/3;  t=0.7: 1, 1
    #   advantage = max(TPR − FPR) = 2/3 (t=0.2 and t=0.5); TPR at FPR <= 1% = 2/3 (t=0.2)
    values = loss_attack(np.array(members), np.array(nonmembers))
    assert values["mia_auc"] == pytest.approx(8 / 9, abs=1e-12)
    assert values["mia_advantage"] == pytest.approx(2 / 3, abs=1e-12)
    assert values["mia_tpr_at_1pct_fpr"] == pytest.approx(2 / 3, abs=1e-12)
    assert pairwise_auc(members, nonmembers) == pytest.approx(8 / 9, abs=1e-12)


def test_attack_with_ties_between_member_and_non_member():
    members, nonmembers = [0.2, 0.4], [0.2, 0.5]
    # AUC pairs: (0.2, 0.2) tie -> 0.5; (0.2, 0.5) 1; (0.4, 0.2) 0; (0.4, 0.5) 1 -> 2.5 / 4 = 0.625
    # ROC points: origin (0, 0); t=0.2: TPR 1/2, FPR 1/2 (the tie moves both); t=0.4: 1, 1/2; t=0.5: 1, 1
    #   advantage = 1 − 1/2 = 1/2; TPR at FPR <= 1%: only the origin -> 0
    values = loss_attack(np.array(members), np.array(nonmembers))
    assert values == pytest.approx({"mia_auc": 0.625, "mia_advantage": 0.5, "mia_tpr_at_1pct_fpr": 0.0}, abs=1e-12)


def test_tpr_at_1pct_fpr_includes_fpr_of_exactly_one_percent():
    nonmembers = np.arange(1, 101, dtype=float)  # losses 1, 2, ..., 100: each false positive adds 1% FPR
    members = np.array([0.5, 1.5, 2.5, 200.0])
    # accept loss <= t:  t=0.5: TPR 1/4 FPR 0;  t=1: 1/4, 0.01;  t=1.5: 2/4, 0.01;  t=2: 2/4, 0.02;
    #   t=2.5: 3/4, 0.02;  ...;  t=100: 3/4, 1;  t=200: 1, 1
    # TPR at FPR <= 0.01 = 1/2 (t=1.5); advantage = max(0.25, 0.49, 0.73, ...) = 3/4 − 0.02 = 0.73
    # AUC: 0.5 beats 100, 1.5 beats 99, 2.5 beats 98, 200 beats none -> 297 / 400 = 0.7425
    values = loss_attack(members, nonmembers)
    assert values["mia_tpr_at_1pct_fpr"] == pytest.approx(0.5, abs=1e-12)
    assert values["mia_advantage"] == pytest.approx(0.73, abs=1e-12)
    assert values["mia_auc"] == pytest.approx(0.7425, abs=1e-12)
    assert pairwise_auc(members, nonmembers) == pytest.approx(0.7425, abs=1e-12)


def test_attack_that_cannot_tell_members_apart():
    # identical loss distributions: every pair ties or wins half the time -> AUC 1/2
    # members {1, 2}, non-members {1, 2}: pairs (1,1) ½, (1,2) 1, (2,1) 0, (2,2) ½ -> 2/4
    # ROC: t=1: TPR 1/2 FPR 1/2; t=2: 1, 1 -> advantage 0 (the origin), TPR at FPR <= 1% = 0
    values = loss_attack(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert values == pytest.approx({"mia_auc": 0.5, "mia_advantage": 0.0, "mia_tpr_at_1pct_fpr": 0.0}, abs=1e-12)


def test_auc_matches_a_brute_force_pairwise_count_with_many_ties():
    rng = np.random.default_rng(3)
    members = rng.integers(0, 6, 37).astype(float) / 4  # few distinct values: many ties
    nonmembers = rng.integers(1, 8, 41).astype(float) / 4
    assert loss_attack(members, nonmembers)["mia_auc"] == pytest.approx(pairwise_auc(members, nonmembers), abs=1e-12)


def test_every_metric_matches_a_brute_force_threshold_sweep():
    rng = np.random.default_rng(4)
    members, nonmembers = rng.exponential(0.5, 60), rng.exponential(1.0, 150)
    assert loss_attack(members, nonmembers) == pytest.approx(threshold_sweep(members, nonmembers), abs=1e-12)


@pytest.mark.parametrize("members, nonmembers", [([], [0.1, 0.2]), ([0.1], []), ([], [])])
def test_attack_on_an_empty_set_is_nan(members, nonmembers):
    values = loss_attack(np.array(members), np.array(nonmembers))
    assert set(values) == set(MIA_METRICS) and all(math.isnan(v) for v in values.values())


def test_mia_metrics_are_minimized():
    assert {m: METRIC_DIRECTIONS[m] for m in MIA_METRICS} == dict.fromkeys(MIA_METRICS, "min")


# --------------------------------------------------------------------------- equal samples


@pytest.mark.parametrize("n_members, n_nonmembers", [(10, 4), (4, 10), (7, 7)])
def test_equal_samples_take_all_of_the_smaller_set_and_a_sample_of_the_larger(n_members, n_nonmembers):
    members, nonmembers = equal_samples(n_members, n_nonmembers, seed=5)
    m = min(n_members, n_nonmembers)
    for rows, n in ((members, n_members), (nonmembers, n_nonmembers)):
        assert len(rows) == m == len(set(rows.tolist()))
        assert rows.min() >= 0 and rows.max() < n
        if n == m:
            assert rows.tolist() == list(range(n))


def test_equal_samples_are_seeded():
    a, _ = equal_samples(1000, 10, seed=1)
    b, _ = equal_samples(1000, 10, seed=1)
    c, _ = equal_samples(1000, 10, seed=2)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


# --------------------------------------------------------------------------- scoring


def _split(rng: np.random.Generator, n: int) -> Split:
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.float32)
    return Split(X=X, y=y, groups=(X[:, 1] > 0).astype(np.int64))


def _data(n: int = 40) -> PreparedData:
    """Train, validation and test of equal size: the attack then uses every row of each."""
    rng = np.random.default_rng(0)
    return PreparedData(
        name="synthetic", train=_split(rng, n), validation=_split(rng, n), test=_split(rng, n),
        group_names=("a", "b"), feature_names=("x0", "x1", "x2"), min_group_size=1, sha256="", sensitive=("s",),
    )  # fmt: skip


def _independent_attack(model: torch.nn.Module, members: Split, nonmembers: Split) -> dict[str, float]:
    """Losses from the weights by hand (logistic model: z = Xw + b), metrics by brute force."""
    weight, bias = model[0].weight.detach().double(), model[0].bias.detach().double()

    def losses(split: Split) -> np.ndarray:
        z = torch.as_tensor(split.X, dtype=torch.float64) @ weight.T + bias
        return F.binary_cross_entropy_with_logits(z.ravel(), torch.as_tensor(split.y, dtype=torch.float64), reduction="none").numpy()

    return threshold_sweep(losses(members), losses(nonmembers))


def test_validation_and_test_report_the_attack_against_their_own_rows():
    data = _data()
    config = TrainConfig.model_validate({"model": {"kind": "logistic"}, "training": {"epochs": 3, "batch_size": 8, "lr": 0.05}})
    model = train(config, data).model
    val = scoring.validation_metrics(model, config, data)
    test = scoring.test_metrics(model, config, data).values
    for values, heldout in ((val, data.validation), (test, data.test)):
        expected = _independent_attack(model, data.train, heldout)
        assert {m: values[m] for m in MIA_METRICS} == pytest.approx(expected, abs=1e-9)
