"""The plain training loop: one model, one composite objective, no Ray.

:func:`train` is what every trial runs; the Ray Tune trainable in
:mod:`ethicsweep.trainables.tune` only wraps it with reporting and checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ethicsweep.data import PreparedData, Split
from ethicsweep.objectives import evaluate
from ethicsweep.objectives.terms import TERM_TYPES, CompositeLoss, WeightedTerm
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.models import build_model, predict_proba


@dataclass(frozen=True)
class EpochReport:
    """What one epoch produced: mean per-batch loss parts and every validation metric."""

    epoch: int
    losses: dict[str, float]
    validation: dict[str, float]
    seconds: float

    def flat(self) -> dict[str, float]:
        """One flat mapping: ``loss/<part>``, ``val/<metric>``, ``epoch``, ``epoch_seconds``."""
        return {
            "epoch": self.epoch,
            "epoch_seconds": self.seconds,
            **{f"loss/{k}": v for k, v in self.losses.items()},
            **{f"val/{k}": v for k, v in self.validation.items()},
        }


@dataclass
class TrainState:
    """What a checkpoint holds: enough to continue training where it stopped."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    history: list[EpochReport] = field(default_factory=list)
    stopped: str | None = None


def build_loss(config: TrainConfig, n_groups: int) -> CompositeLoss:
    """The composite objective a config describes."""
    return CompositeLoss([WeightedTerm(t.key, t.weight, TERM_TYPES[t.kind](n_groups)) for t in config.terms])


def init_state(config: TrainConfig, n_features: int, device: str | torch.device = "cpu") -> TrainState:
    """A fresh model and optimizer, seeded by ``config.seed``."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, n_features).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.training.lr, weight_decay=config.training.weight_decay)
    return TrainState(model=model, optimizer=optimizer)


def _tensors(split: Split, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(split.X, device=device),
        torch.as_tensor(split.y, device=device),
        torch.as_tensor(split.groups, device=device),
    )


def validation_metrics(model: nn.Module, data: PreparedData, threshold: float, device: str | torch.device = "cpu") -> dict[str, float]:
    """Every exact metric of ``model`` on the validation split."""
    X = torch.as_tensor(data.validation.X, device=device)
    proba = predict_proba(model, X).cpu().numpy()
    return evaluate(data.validation.y, proba, data.validation.groups, data.group_names, threshold, data.min_group_size).values


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
    ``state.history``. A non-finite loss stops training; ``state.stopped`` then says why.
    """
    state = state or init_state(config, data.train.X.shape[1], device)
    loss_fn = build_loss(config, len(data.group_names))
    X, y, groups = _tensors(data.train, device)
    n, batch_size = len(y), min(config.training.batch_size, len(y))
    generator = torch.Generator().manual_seed(config.seed * 100_003 + state.epoch)
    model, optimizer = state.model, state.optimizer
    model.train()
    while state.epoch < config.training.epochs and state.stopped is None:
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        sums: dict[str, float] = {}
        batches = 0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            total, parts = loss_fn(model(X[rows]), y[rows], groups[rows])
            if not torch.isfinite(total):
                state.stopped = f"non-finite loss ({total.item()}) at epoch {state.epoch + 1}, batch {batches + 1}"
                break
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            for name, value in {**parts, "total": total}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            batches += 1
        if state.stopped:
            break
        state.epoch += 1
        losses = {name: value / batches for name, value in sums.items()}
        metrics = validation_metrics(model, data, config.model.threshold, device)
        state.history.append(EpochReport(state.epoch, losses, metrics, time.perf_counter() - started))
        if on_epoch is not None:
            on_epoch(state)
    return state
