"""Checkpoints as plain files: weights in safetensors, optimizer tensors loaded with
``weights_only=True``, progress and the DP accountant's history in JSON. Nothing is
unpickled on load."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ethicsweep.data import PreparedData
from ethicsweep.spec import ModelSpec, TrainConfig
from ethicsweep.trainables.models import build_model
from ethicsweep.trainables.train import EpochReport, TrainState, init_state

MODEL_FILE = "model.safetensors"
TERMS_FILE = "terms.safetensors"  # parameters of terms (e.g. an adversary) and multipliers
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
ACCOUNTANT_FILE = "accountant.json"  # DP-SGD only: the Opacus accountant's mechanism and history


def _tensors(module_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module_state.items()}


def save_state(state: TrainState, directory: str | Path) -> None:
    """Write ``state`` into ``directory`` (created if absent)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(state.model.state_dict()), directory / MODEL_FILE)
    terms = {f"objective.{k}": v for k, v in _tensors(state.objective.state_dict()).items()}
    for name, multiplier in state.problem.named_multipliers():
        terms.update({f"multiplier.{name}.{k}": v for k, v in _tensors(multiplier.state_dict()).items()})
    save_file(terms, directory / TERMS_FILE)
    optimizers = state.optimizer.state_dict()
    torch.save(
        {"primal": list(optimizers["primal_optimizer_states"]), "dual": list(optimizers["dual_optimizer_states"] or [])},
        directory / OPTIMIZER_FILE,
    )
    progress = {"epoch": state.epoch, "stopped": state.stopped, "history": [asdict(r) for r in state.history]}
    (directory / STATE_FILE).write_text(json.dumps(progress))
    if state.private is not None:
        accountant = state.private.engine.accountant.state_dict()
        (directory / ACCOUNTANT_FILE).write_text(json.dumps({"mechanism": accountant["mechanism"], "history": accountant["history"]}))


def load_state(directory: str | Path, config: TrainConfig, data: PreparedData, device: str | torch.device = "cpu") -> TrainState:
    """Rebuild the model, objective and optimizers of ``config`` and load a checkpoint into them."""
    directory = Path(directory)
    state = init_state(config, data, device)
    state.model.load_state_dict(load_file(directory / MODEL_FILE, device=str(device)))
    terms = load_file(directory / TERMS_FILE, device=str(device))
    state.objective.load_state_dict({k.removeprefix("objective."): v for k, v in terms.items() if k.startswith("objective.")})
    for name, multiplier in state.problem.named_multipliers():
        prefix = f"multiplier.{name}."
        multiplier.load_state_dict({k.removeprefix(prefix): v for k, v in terms.items() if k.startswith(prefix)})
    optimizers = torch.load(directory / OPTIMIZER_FILE, map_location=device, weights_only=True)
    state.optimizer.load_state_dict(
        {"primal_optimizer_states": optimizers["primal"], "dual_optimizer_states": optimizers["dual"] or None}
    )
    progress = json.loads((directory / STATE_FILE).read_text())
    state.epoch, state.stopped = progress["epoch"], progress["stopped"]
    state.history = [EpochReport(**r) for r in progress["history"]]
    if state.private is not None:
        accountant = json.loads((directory / ACCOUNTANT_FILE).read_text())
        history = [tuple(step) for step in accountant["history"]]  # (noise multiplier, sample rate, steps)
        state.private.engine.accountant.load_state_dict({"mechanism": accountant["mechanism"], "history": history})
    return state


def load_model(weights: str | Path, spec: ModelSpec, n_features: int) -> nn.Module:
    """A model of ``spec`` with weights from a safetensors file, in evaluation mode."""
    model = build_model(spec, n_features)
    model.load_state_dict(load_file(Path(weights)))
    return model.eval()
