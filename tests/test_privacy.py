"""Privacy: the memorization term by hand and by gradcheck; the privacy spec and the terms
DP-SGD refuses; DP-SGD training whose ε is checked against Opacus' accountants stepped by
hand in the test (sample rate = batch size / rows, steps = epochs · rows / batch size);
our accountants' ε equal to Opacus'; ghost clipping's clipped gradient sum against a
per-example loop in float64; the accountant's checkpoint round trip; and the non-private
loop checked against a plain PyTorch loop written here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators.errors import UnsupportedModuleError
from pydantic import TypeAdapter, ValidationError
from sklearn.metrics import accuracy_score
from torch import nn

from ethicsweep.data import PreparedData, Split
from ethicsweep.errors import SpecError
from ethicsweep.objectives.base import Batch, TermSpecBase
from ethicsweep.objectives.metrics import METRIC_DIRECTIONS
from ethicsweep.objectives.privacy import Memorization, MemorizationSpec, create_accountant, dp_sgd_refusal
from ethicsweep.objectives.registry import TERM_KINDS, TermSpec
from ethicsweep.spec import TrainConfig, parse_spec
from ethicsweep.trainables import scoring
from ethicsweep.trainables.checkpoint import ACCOUNTANT_FILE, load_state, save_state
from ethicsweep.trainables.models import split_outputs
from ethicsweep.trainables.train import init_state, make_private, train

D = torch.float64
ACCOUNTANTS = {"prv": PRVAccountant, "rdp": RDPAccountant}


def _split(rng: np.random.Generator, n: int, noise: float = 0.5) -> Split:
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] + noise * rng.normal(size=n) > 0).astype(np.float32)
    return Split(X=X, y=y, groups=(X[:, 2] > 0).astype(np.int64))


def synthetic(n: int = 64, n_heldout: int = 32, noise: float = 0.5, seed: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)
    return PreparedData(
        name="synthetic", train=_split(rng, n, noise), validation=_split(rng, n_heldout, noise), test=_split(rng, n_heldout, noise),
        group_names=("a", "b"), feature_names=("x0", "x1", "x2"), min_group_size=1, sha256="", sensitive=("s",),
    )  # fmt: skip


def config(privacy: dict | None = None, *, epochs: int = 3, batch_size: int = 16, terms: list | None = None, **model) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"kind": "mlp", "hidden": 8, **model},
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": 0.05},
        "terms": terms or [],
        "privacy": privacy or {},
        "seed": 7,
    })  # fmt: skip


def accountant_by_hand(kind: str, sigma: float, sample_rate: float, steps: int) -> object:
    accountant = ACCOUNTANTS[kind]()
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=sample_rate)
    return accountant


# --------------------------------------------------------------------------- memorization


def batch(logits, y):
    return Batch(torch.tensor(logits, dtype=D), torch.tensor(y, dtype=D), torch.zeros(len(y), dtype=torch.int64))


def test_memorization_by_hand():
    # per-example BCE: z=0, y=1: ln 2 = 0.6931 (above the floor 0.5 -> 0)
    #                  z=3, y=1: log(1 + e^-3) = 0.04859 -> 0.5 − 0.04859 = 0.45141
    #                  z=−2, y=0: log(1 + e^-2) = 0.12693 -> 0.5 − 0.12693 = 0.37307
    # mean over the 3 rows: (0 + 0.45141 + 0.37307) / 3 = 0.27483
    value = Memorization(0.5)(batch([0.0, 3.0, -2.0], [1, 1, 0]))
    expected = (0.0 + (0.5 - math.log1p(math.exp(-3))) + (0.5 - math.log1p(math.exp(-2)))) / 3
    assert value.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.27483, abs=1e-5)


def test_memorization_is_zero_when_every_loss_is_above_the_floor():
    # z=0 gives ln 2 = 0.693 for either label; z=−1, y=1: log(1 + e) = 1.313; both >= 0.1
    assert Memorization(0.1)(batch([0.0, 0.0, -1.0], [1, 0, 1])).item() == 0.0


def test_memorization_penalizes_confident_right_answers_only():
    # a confident wrong answer (z=5, y=0: loss 5.007) is not memorization; a confident right
    # one (z=5, y=1: loss log(1 + e^-5) = 0.006715) is: floor 0.1 -> (0 + 0.093285) / 2
    value = Memorization(0.1)(batch([5.0, 5.0], [0, 1]))
    assert value.item() == pytest.approx((0.1 - math.log1p(math.exp(-5))) / 2, abs=1e-12)


def test_memorization_gradcheck():
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=D)
    groups = torch.zeros(5, dtype=torch.int64)
    # losses of 0.05, 0.03, 0.6, 2.1, 0.2: some below the floor 0.3, none near it (relu's kink)
    logits = torch.tensor([3.0, -3.5, 0.2, 2.0, 1.5], dtype=D, requires_grad=True)
    term = Memorization(0.3)
    assert torch.autograd.gradcheck(lambda z: term(Batch(z, y, groups)), (logits,), eps=1e-6, atol=1e-8)


def test_memorization_spec():
    spec = TypeAdapter(TermSpec).validate_python({"kind": "memorization", "floor": 0.2, "weight": 3.0})
    assert isinstance(spec, MemorizationSpec) and spec.floor == 0.2 and spec.weight == 3.0
    assert "memorization" in TERM_KINDS
    assert TypeAdapter(TermSpec).validate_python({"kind": "memorization"}).floor == 0.1
    for floor in (0.0, -1.0, float("nan")):
        with pytest.raises(ValidationError):
            TypeAdapter(TermSpec).validate_python({"kind": "memorization", "floor": floor})


# --------------------------------------------------------------------------- privacy spec


def test_privacy_defaults():
    privacy = TrainConfig().privacy
    assert (privacy.dp_sgd, privacy.accountant, privacy.delta, privacy.max_grad_norm) == (False, "prv", 1e-5, 1.0)
    assert METRIC_DIRECTIONS["epsilon"] == "min"


def _error(train: dict) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec({"name": "x", "train": train})
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "privacy, expected",
    [
        ({"dp_sgd": True}, ["train.privacy", "exactly one of 'noise_multiplier' and 'target_epsilon'", "neither"]),
        ({"dp_sgd": True, "noise_multiplier": 1.0, "target_epsilon": 1.0}, ["train.privacy", "exactly one", "both"]),
        ({"dp_sgd": True, "target_epsilon": 1.0, "accountant": "gdp"}, ["train.privacy.accountant", "'prv' or 'rdp'", "'gdp'"]),
        ({"dp_sgd": True, "target_epsilon": 1.0, "delta": 0.0}, ["train.privacy.delta", "greater than 0"]),
        ({"dp_sgd": True, "target_epsilon": 1.0, "delta": 1.0}, ["train.privacy.delta", "less than 1"]),
        ({"dp_sgd": True, "target_epsilon": 0.0}, ["train.privacy.target_epsilon", "greater than 0"]),
        ({"dp_sgd": True, "target_epsilon": float("inf")}, ["train.privacy.target_epsilon", "finite"]),
        ({"dp_sgd": True, "noise_multiplier": -1.0}, ["train.privacy.noise_multiplier", "greater than 0"]),
        ({"dp_sgd": True, "noise_multiplier": 1.0, "max_grad_norm": 0}, ["train.privacy.max_grad_norm", "greater than 0"]),
        ({"dp_sgd": True, "noise_multiplier": 1.0, "clip": 1.0}, ["unknown field", "train.privacy.clip"]),
    ],
)
def test_privacy_spec_errors(privacy, expected):
    message = _error({"privacy": privacy})
    for part in expected:
        assert part in message, message


def test_noise_settings_are_ignored_while_dp_sgd_is_off():
    spec = parse_spec({"name": "x", "train": {"privacy": {"dp_sgd": False, "target_epsilon": 1.0}}})
    assert spec.train.privacy.dp_sgd is False


COUPLED = ["demographic_parity", "equal_opportunity", "equalized_odds", "error_rate_parity", "leakage_adversary"]


@pytest.mark.parametrize("kind", COUPLED)
def test_dp_sgd_refuses_terms_that_couple_the_rows_of_a_batch(kind):
    terms = [{"kind": "memorization"}, {"kind": kind, "name": "coupled"}]
    message = _error({"privacy": {"dp_sgd": True, "target_epsilon": 1.0}, "terms": terms})
    assert f"term 'coupled' ({kind}) cannot be trained with DP-SGD" in message
    assert ("adversary" if kind == "leakage_adversary" else "group rates") in message
    parse_spec({"name": "x", "train": {"terms": terms}})  # the same terms train without DP-SGD


def test_dp_sgd_refuses_constraint_mode():
    terms = [{"kind": "memorization", "mode": "constraint", "bound": 0.05}]
    message = _error({"privacy": {"dp_sgd": True, "noise_multiplier": 1.0}, "terms": terms})
    assert "term 'memorization' cannot be trained with DP-SGD" in message and "multiplier" in message


def test_a_coupled_term_in_constraint_mode_is_refused_for_the_coupling():
    terms = [{"kind": "demographic_parity", "mode": "constraint", "bound": 0.05}]
    message = _error({"privacy": {"dp_sgd": True, "noise_multiplier": 1.0}, "terms": terms})
    assert "group rates" in message and "penalty mode is allowed" not in message


def test_privacy_parameters_can_be_searched():
    spec = parse_spec({
        "name": "x",
        "train": {"privacy": {"dp_sgd": True, "noise_multiplier": 1.0}},
        "search": {"space": {
            "privacy.noise_multiplier": {"type": "float", "low": 0.5, "high": 4.0, "log": True},
            "privacy.max_grad_norm": {"type": "float", "low": 0.1, "high": 2.0},
        }},
    })  # fmt: skip
    trial = spec.train.with_params({"privacy.noise_multiplier": 2.5, "privacy.max_grad_norm": 0.3})
    assert (trial.privacy.noise_multiplier, trial.privacy.max_grad_norm, trial.privacy.dp_sgd) == (2.5, 0.3, True)


def test_dp_sgd_trains_per_example_terms():
    terms = [{"kind": "memorization", "floor": 0.2}, {"kind": "expected_cost"}, {"kind": "confident_error", "tau": 0.8}]
    spec = parse_spec({"name": "x", "train": {"privacy": {"dp_sgd": True, "noise_multiplier": 1.0}, "terms": terms}})
    assert [t.kind for t in spec.train.terms] == ["memorization", "expected_cost", "confident_error"]


def test_searching_dp_sgd_on_is_refused_with_a_coupled_term():
    spec = {
        "name": "x",
        "train": {"terms": [{"kind": "demographic_parity", "name": "dp"}], "privacy": {"target_epsilon": 1.0}},
        "search": {"space": {"privacy.dp_sgd": {"type": "categorical", "choices": [False, True]}}},
    }
    with pytest.raises(SpecError, match=r"search\.space\.privacy\.dp_sgd: the value True is not allowed: term 'dp'"):
        parse_spec(spec)


def test_a_term_kind_not_known_to_be_per_example_is_refused():
    class Pairwise(TermSpecBase):
        kind: str = "pairwise"

        def build(self, context):  # pragma: no cover - never built
            raise NotImplementedError

    assert "not known to be a mean of per-example losses" in dp_sgd_refusal(Pairwise())


# --------------------------------------------------------------------------- the non-private loop


def test_non_private_training_is_the_plain_index_batching_loop():
    data = synthetic(n=50, noise=0.3)
    cfg = config(epochs=3, batch_size=16, hidden=8)  # 50 rows: batches of 16, 16, 16, 2
    state = train(cfg, data)

    # the same run as a plain PyTorch loop: seeded init, Adam, a seeded permutation per epoch
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.0)
    X, y = torch.as_tensor(data.train.X), torch.as_tensor(data.train.y)
    generator = torch.Generator().manual_seed(7 * 100_003)
    for _ in range(3):
        order = torch.randperm(50, generator=generator)
        for start in range(0, 50, 16):
            rows = order[start : start + 16]
            optimizer.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(model(X[rows]), y[rows]).backward()
            optimizer.step()

    for (name, ours), theirs in zip(state.model.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=name)
    with torch.no_grad():
        proba = torch.sigmoid(model(torch.as_tensor(data.validation.X))).numpy()
    accuracy = accuracy_score(data.validation.y, proba >= 0.5)
    assert state.history[-1].validation["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert state.private is None
    assert [r.validation["epsilon"] for r in state.history] == [math.inf] * 3


# --------------------------------------------------------------------------- DP-SGD and ε


@pytest.mark.parametrize("kind", ["prv", "rdp"])
def test_epsilon_every_epoch_equals_opacus_accountant_stepped_by_hand(kind):
    data = synthetic(n=64)
    cfg = config({"dp_sgd": True, "noise_multiplier": 1.2, "accountant": kind, "delta": 1e-4}, epochs=3, batch_size=16)
    state = train(cfg, data)
    # sample rate 16 / 64 = 0.25; 64 / 16 = 4 steps an epoch
    reported = [r.validation["epsilon"] for r in state.history]
    expected = [accountant_by_hand(kind, 1.2, 0.25, 4 * epoch).get_epsilon(delta=1e-4) for epoch in (1, 2, 3)]
    assert reported == pytest.approx(expected, rel=1e-9)
    assert reported[0] < reported[1] < reported[2] < math.inf
    assert state.stopped is None


def test_target_epsilon_calibrates_sigma_for_the_whole_run():
    data = synthetic(n=64)
    cfg = config({"dp_sgd": True, "target_epsilon": 2.0, "delta": 1e-4}, epochs=3, batch_size=16)
    state = train(cfg, data)
    # Opacus' own calibration for 3 · 4 = 12 steps at sample rate 0.25
    sigma = get_noise_multiplier(target_epsilon=2.0, target_delta=1e-4, sample_rate=0.25, steps=12, accountant="prv")
    expected = accountant_by_hand("prv", sigma, 0.25, 12).get_epsilon(delta=1e-4)
    final = state.history[-1].validation["epsilon"]
    assert final == pytest.approx(expected, rel=1e-9)
    assert 2.0 - 0.01 <= final <= 2.0  # the calibration's tolerance: within 0.01 below the target
    assert scoring.test_metrics(state.model, cfg, data).values["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_empty_poisson_batches_are_noise_only_steps_charged_by_the_accountant():
    # batch size 1 over 16 rows: each of 16 steps an epoch samples every row with probability
    # 1/16, so a batch is empty with probability (15/16)^16 = 0.356: 32 steps without one
    # empty batch has probability (1 − 0.356)^32 < 1e-6
    data = synthetic(n=16)
    cfg = config({"dp_sgd": True, "noise_multiplier": 2.0}, epochs=2, batch_size=1)
    state = train(cfg, data)
    assert state.stopped is None and len(state.history) == 2
    expected = accountant_by_hand("prv", 2.0, 1 / 16, 32).get_epsilon(delta=1e-5)
    assert state.history[-1].validation["epsilon"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kind", ["prv", "rdp"])
def test_our_accountants_give_opacus_epsilon_exactly(kind):
    ours = create_accountant(kind)
    assert type(ours).mechanism() == kind
    histories = [[(1.2, 0.25, 4)], [(1.2, 0.25, 8)], [(1.2, 0.25, 8), (2.0, 0.1, 5)], [(0.9, 1 / 7, 210)]]
    for history in histories * 2:  # the second time round from the per-step cache
        for delta in (1e-5, 1e-3):
            theirs = ACCOUNTANTS[kind]()
            theirs.history, ours.history = list(history), list(history)
            assert ours.get_epsilon(delta=delta) == theirs.get_epsilon(delta=delta)


def _per_example_loss(state, X, y, groups):
    logits, abstain = split_outputs(state.model(X))
    return state.objective.penalized(state.objective.parts(Batch(logits, y, groups, None, abstain)))


@pytest.mark.parametrize("abstain", ["none", "trained"])
def test_ghost_clipping_sums_per_example_gradients_clipped_as_a_per_example_loop(abstain):
    # per-example penalty terms, and an abstain head: ℓ_i = BCE_i + 2·memorization_i + 0.5·cost_i
    terms = [{"kind": "memorization", "floor": 0.5, "weight": 2.0}, {"kind": "expected_cost", "weight": 0.5}]
    cfg = config({"dp_sgd": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0}, terms=terms, abstain=abstain)
    data = synthetic(n=32)
    state = init_state(cfg, data)
    state.model.double()
    params = list(state.model.parameters())
    X, y = torch.as_tensor(data.train.X, dtype=D), torch.as_tensor(data.train.y, dtype=D)
    groups = torch.as_tensor(data.train.groups)

    # by hand: each row's gradient by autograd on that row alone, clipped to C = 1, summed
    with state.private.hooks_off():
        rows = [torch.autograd.grad(_per_example_loss(state, X[i : i + 1], y[i : i + 1], groups[i : i + 1]), params) for i in range(32)]
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in row)) for row in rows])
    factors = (1.0 / (norms + 1e-6)).clamp(max=1.0)  # Opacus' clipping factor
    assert 0 < int((factors < 1).sum()) < 32  # some rows clipped, some not
    expected = [sum(f * row[k] for f, row in zip(factors, rows)) for k in range(len(params))]

    state.optimizer.zero_grad()
    outputs = state.private.module(X)
    logits, abstain_logits = split_outputs(outputs)
    loss = state.objective.penalized(state.objective.parts(Batch(logits, y, groups, None, abstain_logits)))
    state.private.clipped_backward(loss, outputs)
    torch.testing.assert_close(state.private.module.per_sample_gradient_norms, norms, rtol=1e-10, atol=1e-12)
    for param, want in zip(params, expected):
        torch.testing.assert_close(param.grad, want, rtol=1e-10, atol=1e-12)


def test_dp_sgd_learns_a_separable_problem():
    data = synthetic(n=1024, n_heldout=512, noise=0.1)
    cfg = config({"dp_sgd": True, "noise_multiplier": 0.6, "max_grad_norm": 1.0}, epochs=8, batch_size=128, kind="logistic")
    state = train(cfg, data)
    assert state.history[-1].validation["accuracy"] >= 0.9
    assert state.history[-1].validation["epsilon"] < math.inf


def test_dp_sgd_reports_terms_and_gradient_shares():
    data = synthetic(n=64)
    terms = [{"kind": "memorization", "floor": 0.3, "weight": 2.0}, {"kind": "expected_cost", "weight": 0.5}]
    state = train(config({"dp_sgd": True, "noise_multiplier": 1.0}, terms=terms, epochs=2), data)
    report = state.history[-1]
    assert set(report.losses) == {"bce", "memorization", "expected_cost", "total"}
    assert sum(report.grad_shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert report.grad_shares["bce"] > 0
    assert report.step_seconds > 0 and report.seconds >= report.step_seconds


def test_opacus_validation_refuses_batchnorm():
    data = synthetic(n=64)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1), nn.Flatten(0))
    with pytest.raises(UnsupportedModuleError, match="BatchNorm"):
        make_private(config({"dp_sgd": True, "noise_multiplier": 1.0}), data, model, torch.optim.Adam(model.parameters()))


def test_test_metrics_epsilon():
    data = synthetic(n=64)
    plain = config()
    model = train(plain, data).model
    assert scoring.test_metrics(model, plain, data).values["epsilon"] == math.inf
    assert scoring.test_metrics(model, plain, data, epsilon=0.7).values["epsilon"] == 0.7
    private = config({"dp_sgd": True, "noise_multiplier": 1.5, "accountant": "rdp"}, epochs=2)
    state = train(private, data)
    expected = accountant_by_hand("rdp", 1.5, 0.25, 8).get_epsilon(delta=1e-5)
    assert scoring.test_metrics(state.model, private, data).values["epsilon"] == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "privacy",
    [{"dp_sgd": True, "noise_multiplier": 1.1}, {"dp_sgd": True, "target_epsilon": 3.0, "accountant": "rdp"}],
)
def test_accountant_is_checkpointed_and_restored(tmp_path, privacy):
    data = synthetic(n=64)
    cfg = config(privacy, epochs=3, batch_size=16)

    def checkpoint_after_two(state):
        if state.epoch == 2:
            save_state(state, tmp_path)

    uninterrupted = train(cfg, data, on_epoch=checkpoint_after_two)
    saved = json.loads((tmp_path / ACCOUNTANT_FILE).read_text())  # plain JSON, nothing pickled
    assert saved["mechanism"] == cfg.privacy.accountant and saved["history"][0][1:] == [0.25, 8]

    resumed = train(cfg, data, state=load_state(tmp_path, cfg, data))
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    two, three = uninterrupted.history[1].validation["epsilon"], uninterrupted.history[2].validation["epsilon"]
    assert resumed.history[-1].validation["epsilon"] == pytest.approx(three, rel=1e-12)
    assert resumed.history[-1].validation["epsilon"] > two
    # and it is the ε of 12 steps at sample rate 0.25, by an accountant stepped here
    sigma = privacy.get("noise_multiplier") or get_noise_multiplier(
        target_epsilon=3.0, target_delta=1e-5, sample_rate=0.25, steps=12, accountant="rdp"
    )
    expected = accountant_by_hand(cfg.privacy.accountant, sigma, 0.25, 12).get_epsilon(delta=1e-5)
    assert resumed.history[-1].validation["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_without_the_accountant_file_resuming_fails_rather_than_restart_at_zero(tmp_path):
    data = synthetic(n=64)
    cfg = config({"dp_sgd": True, "noise_multiplier": 1.1}, epochs=1)
    save_state(train(cfg, data), tmp_path)
    (tmp_path / ACCOUNTANT_FILE).unlink()
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path, cfg, data)
