"""The plain training loop: one model, one composite objective, no Ray.

:func:`train` is what every trial runs; the Ray Tune trainable in
:mod:`ethicsweep.trainables.tune` only wraps it with reporting and checkpoints.
Each epoch reports the mean value of every loss part, each constrained term's multiplier,
each part's share of the gradient norm (on the epoch's first minibatch), and every exact
metric on the validation split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ethicsweep.data import PreparedData, Split
from ethicsweep.objectives.base import Batch, TermContext
from ethicsweep.objectives.composite import NonFiniteLoss, Objective, ObjectiveProblem, gradient_shares
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.models import build_model, split_outputs
from ethicsweep.trainables.scoring import validation_metrics


@dataclass(frozen=True)
class EpochReport:
    """What one epoch produced.

    ``losses``: mean per-batch value of each part (``bce``, each term, ``total`` = the
    minimized Lagrangian); ``multipliers``: λ of each constrained term at the epoch's end;
    ``grad_shares``: each part's share of the gradient norm; ``validation``: every metric.
    """

    epoch: int
    losses: dict[str, float]
    validation: dict[str, float]
    seconds: float
    multipliers: dict[str, float] = field(default_factory=dict)
    grad_shares: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """One flat mapping: ``loss/*``, ``lambda/*``, ``grad_share/*``, ``val/*``, ``epoch``, ``epoch_seconds``."""
        return {
            "epoch": self.epoch,
            "epoch_seconds": self.seconds,
            **{f"loss/{k}": v for k, v in self.losses.items()},
            **{f"lambda/{k}": v for k, v in self.multipliers.items()},
            **{f"grad_share/{k}": v for k, v in self.grad_shares.items()},
            **{f"val/{k}": v for k, v in self.validation.items()},
        }


@dataclass
class TrainState:
    """Everything a checkpoint holds: enough to continue training where it stopped."""

    model: nn.Module
    objective: Objective
    problem: ObjectiveProblem
    primal: torch.optim.Optimizer
    epoch: int = 0
    history: list[EpochReport] = field(default_factory=list)
    stopped: str | None = None

    def __post_init__(self) -> None:
        self.optimizer = self.problem.optimizer(self.primal)


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
    return TrainState(model=model, objective=objective, problem=ObjectiveProblem(objective, device), primal=primal)


def _tensors(split: Split, device: str | torch.device) -> dict[str, torch.Tensor | None]:
    return {
        "X": torch.as_tensor(split.X, device=device),
        "y": torch.as_tensor(split.y, device=device),
        "groups": torch.as_tensor(split.groups, device=device),
        "context": torch.as_tensor(split.context, device=device) if split.context is not None else None,
    }


def train(
    config: TrainConfig,
    data: PreparedData,
    *,
    device: str | torch.device = "cpu",
    state: TrainState | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
) -> TrainState:
    """Train for ``config.training.epochs`` epochs (continuing ``state`` if given).

    After each epoch ``on_epoch(state)`` is called with the new report appended to
    ``state.history``. A NaN or infinite loss stops training before the step that would
    apply it; ``state.stopped`` then says why.
    """
    state = state or init_state(config, data, device)
    tensors = _tensors(data.train, device)
    n = len(data.train)
    batch_size = min(config.training.batch_size, n)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + state.epoch)
    model, objective, problem = state.model, state.objective, state.problem
    model.train()

    def batch_of(rows: torch.Tensor) -> Callable[[], Batch]:
        def make() -> Batch:
            context = tensors["context"][rows] if tensors["context"] is not None else None
            logits, abstain_logits = split_outputs(model(tensors["X"][rows]))
            return Batch(logits, tensors["y"][rows], tensors["groups"][rows], context, abstain_logits)

        return make

    while state.epoch < config.training.epochs and state.stopped is None:
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        sums: dict[str, float] = {}
        shares: dict[str, float] = {}
        batches = 0
        for start in range(0, n, batch_size):
            make_batch = batch_of(order[start : start + batch_size])
            if batches == 0:
                shares = gradient_shares(objective, problem, make_batch(), list(model.parameters()))
            try:
                rollout = state.optimizer.roll(compute_cmp_state_kwargs={"make_batch": make_batch})
            except NonFiniteLoss as exc:
                state.stopped = f"non-finite loss at epoch {state.epoch + 1}, batch {batches + 1}: {exc}"
                break
            parts = rollout.cmp_state.misc["parts"]
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["total"] = sums.get("total", 0.0) + float(rollout.primal_lagrangian_store.lagrangian.detach())
            batches += 1
        if state.stopped:
            break
        state.epoch += 1
        state.history.append(
            EpochReport(
                epoch=state.epoch,
                losses={name: value / batches for name, value in sums.items()},
                validation=validation_metrics(model, config, data, device),
                seconds=time.perf_counter() - started,
                multipliers=problem.multiplier_values(),
                grad_shares=shares,
            )
        )
        if on_epoch is not None:
            on_epoch(state)
    return state
