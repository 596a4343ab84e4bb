"""The Ray Tune trainable: :func:`ethicsweep.trainables.train.train` with a report and a
checkpoint after every epoch. It never touches MLflow; the driver logs what it reports."""

from __future__ import annotations

import tempfile
from typing import Any

import ray
import torch
from ray import tune

from ethicsweep.data import PreparedData
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.checkpoint import load_state, save_state
from ethicsweep.trainables.train import TrainState, train

#: Result key that carries why a trial stopped early ("" when it ran to the end).
STOPPED_KEY = "stopped_reason"


def trial_device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_trial(params: dict[str, Any], *, data: PreparedData, base: TrainConfig) -> None:
    """Train the model that ``base`` with the searched ``params`` describes.

    Reports every epoch (``loss/*``, ``val/*``, ``epoch``) with a checkpoint; continues
    from the trial's checkpoint when Ray restores it. Training stopped by a non-finite loss
    ends with a last report that holds only ``epoch`` and the reason (``STOPPED_KEY``).
    """
    config = base.with_params(params)
    device = trial_device()
    node_id = ray.get_runtime_context().get_node_id()
    checkpoint = tune.get_checkpoint()
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory, config, data, device)

    def report(state: TrainState) -> None:
        metrics = {**state.history[-1].flat(), STOPPED_KEY: state.stopped or "", "device": device.type, "node_id": node_id}
        with tempfile.TemporaryDirectory() as directory:
            save_state(state, directory)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    state = train(config, data, device=device, state=state, on_epoch=report)
    if state.stopped:  # reported, not raised: Ray would retry a trial that raises, and it would stop again
        tune.report({STOPPED_KEY: state.stopped, "epoch": state.epoch})
