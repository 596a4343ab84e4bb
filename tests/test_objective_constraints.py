"""ObjectiveProblem (cooper): constraint mode with adaptive Lagrange multipliers updated
from the hard gap, projection to λ >= 0, NonFiniteLoss before any step, and gradient shares.

The model is a 1-feature linear model in float64, w = 2, b = 0, on

    X = (-1, -1, 1, 1), y = (0, 1, 0, 1), groups = (0, 0, 1, 1)

so the logits are (-2, -2, 2, 2) and p = (1 - a, 1 - a, a, a) with a = σ(2) ≈ 0.8808.
Hard decisions (p >= 0.5, i.e. logit >= 0) are (0, 0, 1, 1): the hard dp gap is 1
(selection rates 0 and 1), while the soft dp gap is a - (1 - a) = 2a - 1 ≈ 0.7616.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ethicsweep.objectives.base import Batch, TermContext
from ethicsweep.objectives.composite import NonFiniteLoss, Objective, ObjectiveProblem, Slot, gradient_shares
from ethicsweep.objectives.fairness import (
    DemographicParity,
    DemographicParitySpec,
    EqualizedOdds,
    EqualizedOddsSpec,
    EqualOpportunity,
    ErrorRateParity,
)

D = torch.float64
A = 1 / (1 + math.exp(-2))  # σ(2)

X = torch.tensor([[-1.0], [-1.0], [1.0], [1.0]], dtype=D)
Y = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=D)
G = torch.tensor([0, 0, 1, 1])
CTX = TermContext(group_names=("a", "b"), group_counts=np.array([100, 100]), min_group_size=30)


def linear(weight=2.0, bias=0.0, n_in=1):
    model = nn.Linear(n_in, 1).to(D)
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(bias)
    return model


def batch_maker(model, X=X, y=Y, groups=G):
    return lambda: Batch(model(X).squeeze(-1), y, groups)


def hard_dp_gap(model, X=X, groups=G):
    """dp gap of hard decisions 1[logit >= 0], computed here, independently of the package."""
    with torch.no_grad():
        decisions = (model(X).squeeze(-1) >= 0).double().numpy()
    rates = [decisions[groups.numpy() == g].mean() for g in np.unique(groups.numpy())]
    return max(rates) - min(rates)


def set_multiplier(problem, objective, name, value):
    slot = next(s for s in objective.constraints if s.name == name)
    problem.constraint(slot).multiplier.weight.data.fill_(value)


def dp_constraint_problem(bound=0.1, dual_lr=0.5):
    spec = DemographicParitySpec(kind="demographic_parity", name="dp", mode="constraint", bound=bound, dual_lr=dual_lr)
    objective = Objective.from_specs([spec], CTX)
    return objective, ObjectiveProblem(objective)


# --------------------------------------------------------------------------- multipliers


def test_multiplier_starts_at_zero():
    _, problem = dp_constraint_problem()
    assert problem.multiplier_values() == {"dp": 0.0}


def test_multiplier_grows_by_dual_lr_times_hard_violation():
    # bound 0.25, dual_lr 0.5; hard gap 1 -> each step adds 0.5 * (1 - 0.25) = 0.375:
    # λ = 0.375, 0.75, 1.125 (all exact in the multiplier's float32).
    # The soft gap would give 0.5 * (0.7616 - 0.25) ≈ 0.256 per step.
    objective, problem = dp_constraint_problem(bound=0.25, dual_lr=0.5)
    model = linear()
    optimizer = problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.01))
    for expected in (0.375, 0.75, 1.125):
        assert hard_dp_gap(model) == 1.0  # still violated before this step
        optimizer.roll(compute_cmp_state_kwargs={"make_batch": batch_maker(model)})
        assert problem.multiplier_values()["dp"] == expected


def test_multiplier_first_step_from_default_dual_lr():
    # spec default dual_lr 0.05, bound 0.1: λ = 0.05 * (1 - 0.1) = 0.045 (float32 rounding only)
    spec = DemographicParitySpec(kind="demographic_parity", name="dp", mode="constraint", bound=0.1)
    objective = Objective.from_specs([spec], CTX)
    problem = ObjectiveProblem(objective)
    model = linear()
    problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.01)).roll(compute_cmp_state_kwargs={"make_batch": batch_maker(model)})
    assert problem.multiplier_values()["dp"] == pytest.approx(0.045, rel=1e-6)


def test_each_multiplier_uses_its_own_dual_lr():
    # dp: bound 0.1, dual_lr 0.5, hard gap 1 -> 0.45
    # eo: bound 0.2, dual_lr 0.1; hard TPR g0 (row 1, ŷ 0) 0 vs g1 (row 3, ŷ 1) 1 -> 1;
    #     FPR g0 (row 0) 0 vs g1 (row 2) 1 -> 1; eo 1 -> 0.1 * (1 - 0.2) = 0.08
    specs = [
        DemographicParitySpec(kind="demographic_parity", name="dp", mode="constraint", bound=0.1, dual_lr=0.5),
        EqualizedOddsSpec(kind="equalized_odds", name="eo", mode="constraint", bound=0.2, dual_lr=0.1),
    ]
    objective = Objective.from_specs(specs, CTX)
    problem = ObjectiveProblem(objective)
    model = linear()
    optimizer = problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.01))
    optimizer.roll(compute_cmp_state_kwargs={"make_batch": batch_maker(model)})
    values = problem.multiplier_values()
    assert values["dp"] == pytest.approx(0.45, rel=1e-6)
    assert values["eo"] == pytest.approx(0.08, rel=1e-6)


def test_multiplier_stays_zero_when_constraint_holds():
    # X = (-1, 1, 1, 1): ŷ (0, 1, 1, 1) -> rates g0 0.5, g1 1 -> hard gap 0.5 <= bound 0.6
    # λ = max(0, 0 + 0.5 * (0.5 - 0.6)) = 0 at every step
    X_holds = torch.tensor([[-1.0], [1.0], [1.0], [1.0]], dtype=D)
    objective, problem = dp_constraint_problem(bound=0.6, dual_lr=0.5)
    model = linear()
    optimizer = problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.01))
    for _ in range(3):
        assert hard_dp_gap(model, X_holds) == 0.5
        optimizer.roll(compute_cmp_state_kwargs={"make_batch": batch_maker(model, X_holds)})
        assert problem.multiplier_values()["dp"] == 0.0


def test_positive_multiplier_shrinks_to_zero_once_constraint_holds():
    # λ set to 0.25; hard gap 0.5, bound 0.625: each step adds 0.5 * (0.5 - 0.625) = -0.0625
    # λ: 0.1875, 0.125, 0.0625, 0.0, then max(0, -0.0625) = 0 and stays 0 (exact in float32)
    X_holds = torch.tensor([[-1.0], [1.0], [1.0], [1.0]], dtype=D)
    objective, problem = dp_constraint_problem(bound=0.625, dual_lr=0.5)
    set_multiplier(problem, objective, "dp", 0.25)
    assert problem.multiplier_values()["dp"] == 0.25
    model = linear()
    optimizer = problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.01))
    for expected in (0.1875, 0.125, 0.0625, 0.0, 0.0, 0.0):
        assert hard_dp_gap(model, X_holds) == 0.5
        optimizer.roll(compute_cmp_state_kwargs={"make_batch": batch_maker(model, X_holds)})
        assert problem.multiplier_values()["dp"] == expected


def test_primal_step_descends_bce_plus_multiplier_times_soft_gap():
    # λ = 0.25 (set by hand; exact in the multiplier's float32), primal SGD lr 0.1.
    # d bce / dw = Σ (p_i - y_i) x_i / 4 = ((a-1) + a + a + (a-1)) / 4 = a - 0.5;  d bce / db = Σ (p_i - y_i) / 4 = 0
    # soft dp = σ(w + b) - σ(-w + b) (group means of equal rows); at w=2, b=0:
    #   d/dw = σ'(2)·1 - σ'(-2)·(-1) = 2a(1-a), d/db = σ'(2) - σ'(-2) = 0
    # w' = 2 - 0.1 (a - 0.5 + 0.25 · 2a(1-a)), b' = 0
    # λ' = 0.25 + 0.5 · (1 - 0.1) = 0.7 (from the hard gap at the old parameters)
    objective, problem = dp_constraint_problem(bound=0.1, dual_lr=0.5)
    set_multiplier(problem, objective, "dp", 0.25)
    model = linear()
    optimizer = problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    optimizer.roll(compute_cmp_state_kwargs={"make_batch": batch_maker(model)})
    assert model.weight.item() == pytest.approx(2 - 0.1 * (A - 0.5 + 0.25 * 2 * A * (1 - A)), rel=1e-12)
    assert model.bias.item() == pytest.approx(0.0, abs=1e-12)
    assert problem.multiplier_values()["dp"] == pytest.approx(0.7, rel=1e-6)


def test_unconstrained_problem_takes_a_plain_penalized_step():
    # penalty dp weight 0.5, no constraints: w' = 2 - 0.1 (a - 0.5 + 0.5 · 2a(1-a)), b' = 0
    objective = Objective([(Slot("dp", "penalty", weight=0.5), DemographicParity(n_groups=2))])
    problem = ObjectiveProblem(objective)
    assert problem.multiplier_values() == {}
    model = linear()
    optimizer = problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    optimizer.roll(compute_cmp_state_kwargs={"make_batch": batch_maker(model)})
    assert model.weight.item() == pytest.approx(2 - 0.1 * (A - 0.5 + 0.5 * 2 * A * (1 - A)), rel=1e-12)
    assert model.bias.item() == pytest.approx(0.0, abs=1e-12)


def test_cmp_state_loss_and_violations():
    # loss = bce (no penalties); violation = soft gap - bound = (2a - 1) - 0.1; strict = hard - bound = 0.9
    objective, problem = dp_constraint_problem(bound=0.1)
    model = linear()
    state = problem.compute_cmp_state(make_batch=batch_maker(model))
    logits = torch.tensor([-2.0, -2.0, 2.0, 2.0], dtype=D)
    assert state.loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, Y).item())
    (constraint_state,) = state.observed_constraints.values()
    assert constraint_state.violation.item() == pytest.approx(2 * A - 1 - 0.1)
    assert constraint_state.strict_violation.item() == pytest.approx(0.9)
    assert constraint_state.strict_violation.grad_fn is None


# --------------------------------------------------------------------------- non-finite loss


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_non_finite_logits_raise_before_any_step(bad):
    # row 1 (y = 1) gets logit NaN or -inf: bce is NaN or +inf
    objective, problem = dp_constraint_problem(bound=0.1, dual_lr=0.5)
    set_multiplier(problem, objective, "dp", 0.25)
    model = linear()
    optimizer = problem.optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    row1 = torch.tensor([False, True, False, False])

    def make_batch():
        logits = model(X).squeeze(-1)
        return Batch(torch.where(row1, torch.tensor(bad, dtype=D), logits), Y, G)

    with pytest.raises(NonFiniteLoss) as info:
        optimizer.roll(compute_cmp_state_kwargs={"make_batch": make_batch})
    assert "bce" in str(info.value)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
    assert problem.multiplier_values()["dp"] == 0.25


def test_compute_cmp_state_raises_on_nan_logits():
    objective, problem = dp_constraint_problem()
    model = linear()
    nan_batch = lambda: Batch(model(X).squeeze(-1) + torch.tensor([0.0, 0.0, math.nan, 0.0], dtype=D), Y, G)  # noqa: E731
    with pytest.raises(NonFiniteLoss):
        problem.compute_cmp_state(make_batch=nan_batch)


# --------------------------------------------------------------------------- gradient shares


def test_gradient_shares_by_hand():
    # ‖∇ bce‖ = |a - 0.5| (only w moves it, see test_primal_step_...)
    # ‖∇ 0.5 · dp‖ = 0.5 · 2a(1-a) = a(1-a)
    # eo: penalty weight 0 -> 0
    # eopp: constraint with λ = 0.25 (exact in float32); soft TPR g0 σ(-2) = 1-a (row 1), g1 σ(2) = a (row 3):
    #       d/dw = a(1-a)·1 + (-a(1-a))·(-1) = 2a(1-a), d/db = 0 -> ‖λ∇‖ = 0.5 a(1-a)
    # err: constraint with λ = 0 -> 0
    objective = Objective(
        [
            (Slot("dp", "penalty", weight=0.5), DemographicParity(n_groups=2)),
            (Slot("eo", "penalty", weight=0.0), EqualizedOdds(n_groups=2)),
            (Slot("eopp", "constraint", bound=0.1), EqualOpportunity(n_groups=2)),
            (Slot("err", "constraint", bound=0.1), ErrorRateParity(n_groups=2)),
        ]
    )
    problem = ObjectiveProblem(objective)
    set_multiplier(problem, objective, "eopp", 0.25)
    model = linear()
    shares = gradient_shares(objective, problem, batch_maker(model)(), list(model.parameters()))
    norms = {"bce": A - 0.5, "dp": A * (1 - A), "eo": 0.0, "eopp": 0.5 * A * (1 - A), "err": 0.0}
    total = sum(norms.values())
    assert set(shares) == set(norms)
    for name, norm in norms.items():
        assert shares[name] == pytest.approx(norm / total, abs=1e-12), name
    assert shares["eo"] == 0.0 and shares["err"] == 0.0
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def test_gradient_shares_match_separate_autograd_calls():
    # two features, three groups; independent formulas: F.bce and dp = max - min of group means of σ(z)
    model = nn.Linear(2, 1).to(D)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0]], dtype=D))
        model.bias.fill_(0.2)
    X2 = torch.tensor([[1.0, 0.0], [0.5, 1.5], [-1.0, 2.0], [2.0, -0.5], [0.0, 0.3], [-0.7, -1.2]], dtype=D)
    y2 = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], dtype=D)
    g2 = torch.tensor([0, 0, 1, 1, 2, 2])
    objective = Objective([(Slot("dp", "penalty", weight=2.0), DemographicParity(n_groups=3))])
    problem = ObjectiveProblem(objective)
    shares = gradient_shares(objective, problem, Batch(model(X2).squeeze(-1), y2, g2), list(model.parameters()))

    params = list(model.parameters())
    z = model(X2).squeeze(-1)
    p = torch.sigmoid(z)
    means = torch.stack([p[0:2].mean(), p[2:4].mean(), p[4:6].mean()])
    assert len(set(np.round(means.detach().numpy(), 6))) == 3  # unique max and min
    bce_grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(z, y2), params, retain_graph=True)
    dp_grads = torch.autograd.grad(2.0 * (means.max() - means.min()), params)
    bce_norm = math.sqrt(sum(float((g**2).sum()) for g in bce_grads))
    dp_norm = math.sqrt(sum(float((g**2).sum()) for g in dp_grads))
    assert shares["bce"] == pytest.approx(bce_norm / (bce_norm + dp_norm), rel=1e-9)
    assert shares["dp"] == pytest.approx(dp_norm / (bce_norm + dp_norm), rel=1e-9)
    assert shares["bce"] + shares["dp"] == pytest.approx(1.0)


def test_gradient_shares_all_zero_when_nothing_is_trainable():
    model = linear()
    for p in model.parameters():
        p.requires_grad_(False)
    objective = Objective([(Slot("dp", "penalty", weight=0.5), DemographicParity(n_groups=2))])
    shares = gradient_shares(objective, ObjectiveProblem(objective), batch_maker(model)(), list(model.parameters()))
    assert shares == {"bce": 0.0, "dp": 0.0}
