"""The plain training loop: one model, one composite objective, no Ray.

:func:`train` is what every trial runs; the Ray Tune trainable in
:mod:`ethicsweep.trainables.tune` only wraps it with reporting and checkpoints.
Each epoch reports the mean value of every loss part, each constrained term's multiplier,
each part's share of the gradient norm (on the epoch's first minibatch), and every exact
metric on the validation split, ε included.

Without DP-SGD the loop draws minibatches by indexing a seeded permutation of the training
tensors. With DP-SGD (``config.privacy.dp_sgd``) Opacus makes the model, the primal
optimizer and a data loader over the training tensors private: per-example clipping in
the backward pass (ghost clipping), noise in the optimizer, Poisson sampling in the loader
(no custom sampler: Opacus derives the sampling rate from the loader's length), and its
accountant charged at every step.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ethicsweep.data import PreparedData, Split
from ethicsweep.objectives.base import Batch, TermContext
from ethicsweep.objectives.composite import NonFiniteLoss, Objective, ObjectiveProblem, gradient_shares
from ethicsweep.objectives.privacy import create_accountant, noise_multiplier, schedule
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.models import build_model, split_outputs
from ethicsweep.trainables.scoring import validation_metrics


@dataclass(frozen=True)
class EpochReport:
    """What one epoch produced.

    ``losses``: mean per-batch value of each part (``bce``, each term, ``total`` = the
    minimized Lagrangian); ``multipliers``: λ of each constrained term at the epoch's end;
    ``grad_shares``: each part's share of the gradient norm; ``validation``: every metric.
    ``seconds``: the whole epoch; ``step_seconds``: its optimization steps only (no scoring).
    """

    epoch: int
    losses: dict[str, float]
    validation: dict[str, float]
    seconds: float
    multipliers: dict[str, float] = field(default_factory=dict)
    grad_shares: dict[str, float] = field(default_factory=dict)
    step_seconds: float = 0.0

    def flat(self) -> dict[str, float]:
        """One flat mapping: ``loss/*``, ``lambda/*``, ``grad_share/*``, ``val/*``, ``epoch``,
        ``epoch_seconds``, ``epoch_step_seconds``."""
        return {
            "epoch": self.epoch,
            "epoch_seconds": self.seconds,
            "epoch_step_seconds": self.step_seconds,
            **{f"loss/{k}": v for k, v in self.losses.items()},
            **{f"lambda/{k}": v for k, v in self.multipliers.items()},
            **{f"grad_share/{k}": v for k, v in self.grad_shares.items()},
            **{f"val/{k}": v for k, v in self.validation.items()},
        }


@dataclass
class Private:
    """DP-SGD's Opacus objects: the engine (its accountant), the model that computes
    per-example gradient norms, its noising optimizer, and the Poisson data loader."""

    engine: PrivacyEngine
    module: GradSampleModuleFastGradientClipping
    optimizer: DPOptimizerFastGradientClipping
    loader: DataLoader
    delta: float

    def epsilon(self) -> float:
        """ε spent so far at ``delta``, by the accountant."""
        return float(self.engine.accountant.get_epsilon(delta=self.delta))

    @contextmanager
    def hooks_off(self) -> Iterator[None]:
        """Forward and backward passes that leave no per-example gradient norms behind."""
        self.module.disable_hooks()
        try:
            yield
        finally:
            self.module.enable_hooks()

    def clipped_backward(self, loss: torch.Tensor, outputs: torch.Tensor) -> None:
        """Into ``.grad``: the sum over rows of each row's gradient of ``loss``, clipped to
        ``max_grad_norm`` (Opacus' ghost clipping: a backward pass for the per-example norms,
        a second for the clipped sum), never materializing per-example gradients.

        ``loss`` is the mean of per-row losses ℓ_i, each a function of its row's ``outputs``
        z_i only; with g = ∂loss/∂z (detached), B · ⟨g_i, z_i⟩ has row i's gradient ∇ℓ_i: the
        same backpropagated values from which Opacus' hooks mode builds per-example gradients."""
        (grad,) = torch.autograd.grad(loss, outputs)
        per_row = len(outputs) * (grad.detach() * outputs).reshape(len(outputs), -1).sum(dim=1)
        DPTensorFastGradientClipping(self.module, self.optimizer, per_row, loss_reduction="mean").backward()


@dataclass
class TrainState:
    """Everything a checkpoint holds: enough to continue training where it stopped.

    With DP-SGD, ``primal`` is Opacus' optimizer around the Adam optimizer and ``private``
    holds the rest; ``model`` is always the plain model (what is saved and scored).
    """

    model: nn.Module
    objective: Objective
    problem: ObjectiveProblem
    primal: torch.optim.Optimizer
    epoch: int = 0
    history: list[EpochReport] = field(default_factory=list)
    stopped: str | None = None
    private: Private | None = None

    def __post_init__(self) -> None:
        self.optimizer = self.problem.optimizer(self.primal)

    def epsilon(self) -> float:
        """ε spent so far at the spec's δ; ∞ without DP-SGD."""
        return math.inf if self.private is None else self.private.epsilon()


def term_context(data: PreparedData, config: TrainConfig) -> TermContext:
    """What the terms may know of the data: groups and their training counts, contexts."""
    counts = np.bincount(data.train.groups, minlength=len(data.group_names))
    return TermContext(
        data.group_names, counts, data.min_group_size, data.context_names, config.model.threshold, config.harm,
        abstain_output=config.model.abstain == "trained",
    )  # fmt: skip


def init_state(config: TrainConfig, data: PreparedData, device: str | torch.device = "cpu") -> TrainState:
    """A fresh model, objective and optimizer, seeded by ``config.seed``."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.train.X.shape[1]).to(device)
    objective = Objective.from_specs(config.terms, term_context(data, config)).to(device)
    parameters = list(model.parameters()) + list(objective.parameters())
    primal = torch.optim.Adam(parameters, lr=config.training.lr, weight_decay=config.training.weight_decay)
    private = None
    if config.privacy.dp_sgd:
        private = make_private(config, data, model, primal, device)
        primal = private.optimizer
    return TrainState(model=model, objective=objective, problem=ObjectiveProblem(objective, device), primal=primal, private=private)


class _Columns(TensorDataset):
    """The training tensors as a data set whose minibatch is gathered with one index per
    tensor (``__getitems__``), not stacked row by row: the collated batch is the single item."""

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, ...]]:
        rows = torch.as_tensor(indices, dtype=torch.long, device=self.tensors[0].device)
        return [tuple(t[rows] for t in self.tensors)]


def _single(items: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    return items[0]


def make_private(
    config: TrainConfig, data: PreparedData, model: nn.Module, primal: torch.optim.Optimizer, device: str | torch.device = "cpu"
) -> Private:
    """Opacus' DP-SGD for ``model`` and its ``primal`` optimizer over the training split:
    a plain data loader with the spec's batch size, made Poisson by Opacus; σ from the spec,
    or calibrated so the run's epochs spend at most ``target_epsilon``. Opacus validates
    the model (no BatchNorm).

    Per-example clipping is Opacus' ghost clipping (``grad_sample_mode="ghost"``), the
    training loop's backward pass :meth:`Private.clipped_backward`.

    Sampling and noise are drawn from generators seeded from OS entropy, not from the spec's
    seed: the seed is recorded with every run, and noise that anyone can regenerate protects
    nothing. A DP-SGD run therefore does not repeat bit for bit; its ε does. (Opacus' secure
    mode, a cryptographic generator, needs torchcsprng, which is not installed.)"""
    privacy, n = config.privacy, len(data.train)
    sampling = torch.Generator().manual_seed(secrets.randbits(63))
    noise = torch.Generator(device=device).manual_seed(secrets.randbits(63))
    columns = [t for t in _tensors(data.train, device).values() if t is not None]
    loader = DataLoader(_Columns(*columns), batch_size=config.training.batch_size, collate_fn=_single, generator=sampling)
    plan = schedule(n, config.training.batch_size)
    engine = PrivacyEngine(accountant=privacy.accountant)
    engine.accountant = create_accountant(privacy.accountant)  # the same ε, computed faster
    module, optimizer, _criterion, loader = engine.make_private(
        module=model, optimizer=primal, data_loader=loader, noise_multiplier=noise_multiplier(privacy, plan, config.training.epochs),
        max_grad_norm=privacy.max_grad_norm, noise_generator=noise, grad_sample_mode="ghost",
    )  # fmt: skip
    if len(loader) != plan.steps_per_epoch:  # the σ calibration and planned ε assume Opacus' schedule
        raise RuntimeError(f"Opacus' loader runs {len(loader)} steps an epoch; expected {plan.steps_per_epoch}")
    return Private(engine, module, optimizer, loader, privacy.delta)


def _tensors(split: Split, device: str | torch.device) -> dict[str, torch.Tensor | None]:
    return {
        "X": torch.as_tensor(split.X, device=device),
        "y": torch.as_tensor(split.y, device=device),
        "groups": torch.as_tensor(split.groups, device=device),
        "context": torch.as_tensor(split.context, device=device) if split.context is not None else None,
    }


def _private_step(state: TrainState, outputs: torch.Tensor, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """What ``state.optimizer.roll`` does (DP-SGD has no constraints: a primal step) on
    ``batch``, made from the model's ``outputs``, with DP-SGD's clipped backward pass;
    returns the loss parts and the minimized Lagrangian."""
    state.optimizer.zero_grad()
    cmp_state = state.problem.compute_cmp_state(make_batch=lambda: batch)
    lagrangian = cmp_state.compute_primal_lagrangian().lagrangian
    state.private.clipped_backward(lagrangian, outputs)
    state.optimizer.primal_step()
    return cmp_state.misc["parts"], lagrangian


def train(
    config: TrainConfig,
    data: PreparedData,
    *,
    device: str | torch.device = "cpu",
    state: TrainState | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
) -> TrainState:
    """Train for ``config.training.epochs`` epochs (continuing ``state`` if given).

    Without DP-SGD, the epochs of one call take their minibatches, in order, from
    permutations drawn by a generator seeded with ``seed · 100003 + state.epoch`` at the
    call's start. After each epoch ``on_epoch(state)`` is called with the new report appended to
    ``state.history``. A NaN or infinite loss stops training before the step that would
    apply it; ``state.stopped`` then says why.
    """
    state = state or init_state(config, data, device)
    tensors = _tensors(data.train, device)
    n = len(data.train)
    batch_size = min(config.training.batch_size, n)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + state.epoch)
    model, objective, problem, private = state.model, state.objective, state.problem, state.private
    net = model if private is None else private.module
    model.train()

    def index_batches() -> Iterator[dict[str, torch.Tensor | None]]:
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            yield {k: (v[rows] if v is not None else None) for k, v in tensors.items()}

    def poisson_batches() -> Iterator[dict[str, torch.Tensor | None]]:
        keys = [k for k, v in tensors.items() if v is not None]
        for columns in private.loader:
            yield {"context": None, **dict(zip(keys, columns))}

    def batch_of(rows: dict[str, torch.Tensor | None], outputs: torch.Tensor) -> Batch:
        logits, abstain_logits = split_outputs(outputs)
        return Batch(logits, rows["y"], rows["groups"], rows["context"], abstain_logits)

    def roll(rows: dict[str, torch.Tensor | None]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if private is None:
            rollout = state.optimizer.roll(compute_cmp_state_kwargs={"make_batch": lambda: batch_of(rows, net(rows["X"]))})
            return rollout.cmp_state.misc["parts"], rollout.primal_lagrangian_store.lagrangian
        outputs = net(rows["X"])
        return _private_step(state, outputs, batch_of(rows, outputs))

    while state.epoch < config.training.epochs and state.stopped is None:
        started = time.perf_counter()
        sums: dict[str, float] = {}
        shares: dict[str, float] = {}
        batches = 0
        for rows in index_batches() if private is None else poisson_batches():
            if not len(rows["y"]):  # Poisson sampling drew no row: a noise-only step, charged like any other
                state.optimizer.zero_grad()
                net(rows["X"]).sum().backward()
                state.optimizer.primal_step()
                continue
            if batches == 0:
                with nullcontext() if private is None else private.hooks_off():
                    shares = gradient_shares(objective, problem, batch_of(rows, net(rows["X"])), list(model.parameters()))
            try:
                parts, lagrangian = roll(rows)
            except NonFiniteLoss as exc:
                state.stopped = f"non-finite loss at epoch {state.epoch + 1}, batch {batches + 1}: {exc}"
                break
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["total"] = sums.get("total", 0.0) + float(lagrangian.detach())
            batches += 1
        if state.stopped:
            break
        stepped = time.perf_counter() - started
        state.epoch += 1
        state.history.append(
            EpochReport(
                epoch=state.epoch,
                losses={name: value / batches for name, value in sums.items()},
                validation=validation_metrics(model, config, data, device, epsilon=state.epsilon()),
                seconds=time.perf_counter() - started,
                multipliers=problem.multiplier_values(),
                grad_shares=shares,
                step_seconds=stepped,
            )
        )
        if on_epoch is not None:
            on_epoch(state)
    return state
