"""Checkpoints as plain files: weights in safetensors, optimizer tensors loaded with
``weights_only=True``, progress in JSON. Nothing is unpickled on load."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ethicsweep.spec import ModelSpec, TrainConfig
from ethicsweep.trainables.models import build_model
from ethicsweep.trainables.train import EpochReport, TrainState, init_state

MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.pt", "state.json"


def save_state(state: TrainState, directory: str | Path) -> None:
    """Write ``state`` into ``directory`` (created if absent)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in state.model.state_dict().items()}
    save_file(weights, directory / MODEL_FILE)
    torch.save(state.optimizer.state_dict(), directory / OPTIMIZER_FILE)
    progress = {"epoch": state.epoch, "stopped": state.stopped, "history": [asdict(r) for r in state.history]}
    (directory / STATE_FILE).write_text(json.dumps(progress))


def load_state(directory: str | Path, config: TrainConfig, n_features: int, device: str | torch.device = "cpu") -> TrainState:
    """Rebuild the model and optimizer of ``config`` and load a checkpoint into them."""
    directory = Path(directory)
    state = init_state(config, n_features, device)
    state.model.load_state_dict(load_file(directory / MODEL_FILE, device=str(device)))
    state.optimizer.load_state_dict(torch.load(directory / OPTIMIZER_FILE, map_location=device, weights_only=True))
    progress = json.loads((directory / STATE_FILE).read_text())
    state.epoch, state.stopped = progress["epoch"], progress["stopped"]
    state.history = [EpochReport(**r) for r in progress["history"]]
    return state


def load_model(weights: str | Path, spec: ModelSpec, n_features: int) -> nn.Module:
    """A model of ``spec`` with weights from a safetensors file, in evaluation mode."""
    model = build_model(spec, n_features)
    model.load_state_dict(load_file(Path(weights)))
    return model.eval()
