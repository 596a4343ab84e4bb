"""Run one sweep: Ray Tune schedules trials, an Optuna searcher proposes them, the driver
logs them to MLflow. Returns one row per trial; analysis of the front happens elsewhere."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import yaml
from ray import tune
from ray.tune.experiment import Trial

from ethicsweep.data import PreparedData
from ethicsweep.errors import EthicsweepError
from ethicsweep.search.optuna_searcher import OptunaSearcher, SamplerSpec, objective_problem
from ethicsweep.search.space import to_distributions
from ethicsweep.search.tracking import MlflowTrialLogger, Tracker, default_tracking_uri, governance_tags, provenance_tags
from ethicsweep.spec import SweepSpec
from ethicsweep.trainables.tune import run_trial

TUNE_DIR = "tune"


@dataclass(frozen=True)
class TrialEvent:
    """A trial's progress, for a progress display: a finished epoch or a finished trial."""

    trial_id: str
    kind: str  # "epoch", "done" or "error"
    epoch: int
    finished: int
    total: int
    result: dict[str, Any]


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep produced: one row per trial and where it was recorded."""

    trials: pd.DataFrame
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    wall_seconds: float
    run_dir: Path


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when ``host:port`` (or ``ray://host:port``) does not answer:
    Ray itself would retry for minutes."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise EthicsweepError(f"--address: {address!r} is not a Ray address; use auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise EthicsweepError(
            f"--address: no Ray cluster answers at {address!r} ({exc.strerror or exc}); "
            "start one with `ray start --head`, or leave --address out to run Ray on this machine"
        ) from None


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``), or
    start a local one when ``address`` is None.

    The dashboard is not started (it would listen on a port); worker logs stay on the workers.
    """
    if ray.is_initialized():
        return
    if address and address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except ConnectionError as exc:
        raise EthicsweepError(f"--address: cannot join a Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None


class _TrialCollector(tune.Callback):
    """Keeps each trial's final state and forwards progress to an optional hook."""

    def __init__(self, total: int, objective_keys: list[str], run_ids: dict[str, str], hook: Callable[[TrialEvent], None] | None):
        self.total, self.objective_keys, self.run_ids, self.hook = total, objective_keys, run_ids, hook
        self.rows: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "hook": None}

    def _emit(self, trial: Trial, kind: str, result: dict[str, Any]) -> None:
        if self.hook is not None:
            self.hook(TrialEvent(trial.trial_id, kind, int(result.get("epoch", 0)), len(self.rows), self.total, result))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self._emit(trial, "epoch", result)

    def _record(self, trial: Trial, status: str, error: str) -> None:
        last = trial.last_result or {}
        row = {
            "trial_id": trial.trial_id,
            "run_id": self.run_ids.get(trial.trial_id, ""),
            "status": status,
            "error": error,
            "epochs": int(last.get("epoch", 0)),
            "checkpoint": trial.checkpoint.path if trial.checkpoint is not None else "",
            "params": json.dumps(trial.config, sort_keys=True),
            **{f"param:{k}": v for k, v in trial.config.items()},
            **{k: v for k, v in last.items() if k.startswith(("val/", "loss/", "lambda/", "grad_share/"))},
        }
        self.rows[trial.trial_id] = row
        self._emit(trial, "done" if status == "ok" else "error", last)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        problem = objective_problem(trial.last_result, self.objective_keys)
        self._record(trial, "ok" if problem is None else "failed", problem or "")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        error = trial.get_error()
        self._record(trial, "failed", str(error).strip().splitlines()[-1][:500] if error else "unknown error")


def run_sweep(
    spec: SweepSpec,
    data: PreparedData,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    on_event: Callable[[TrialEvent], None] | None = None,
) -> SweepOutcome:
    """Run the sweep ``spec`` describes on prepared ``data``.

    The data go into Ray's object store once (without the test split). Every trial is a
    child run of one parent run in the MLflow experiment named after the sweep. Each
    execution writes under ``<sweep dir>/<UTC start time>/``; the MLflow store (by
    default ``<sweep dir>/mlflow.db``) and its artifacts are shared by the executions.
    """
    started = time.perf_counter()
    connect(address)  # before anything is written: a bad address leaves no trace
    sweep_dir = spec.sweep_dir
    run_dir = sweep_dir / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=False)
    uri = tracking_uri or spec.tracking_uri or default_tracking_uri(sweep_dir)
    tracker = Tracker(uri, spec.name, sweep_dir / "artifacts")
    tags = provenance_tags(spec, data.sha256)
    parent_tags = {**tags, **governance_tags(spec), "ethicsweep.run_dir": str(run_dir)}
    tracker.start_parent(spec, parent_tags, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    search = spec.search
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    max_concurrent = search.max_concurrent or max(1, int(cluster_cpus // search.cpus_per_trial))
    objectives = [(f"val/{o.metric}", o.mode) for o in search.objectives]
    searcher = OptunaSearcher(
        to_distributions(search.space),
        objectives,
        SamplerSpec(search.searcher, spec.seed, search.population_size),
    )
    logger = MlflowTrialLogger(tracker, spec.train, tags)
    collector = _TrialCollector(search.num_trials, [k for k, _ in objectives], logger.run_ids, on_event)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=data.for_workers(), base=spec.train),
        {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=search.num_trials,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(run_dir),
            callbacks=[logger, collector],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    status = "FAILED"
    try:
        tuner.fit()
        status = "FINISHED"
    finally:
        tracker.end_parent(status)
    trials = pd.DataFrame(list(collector.rows.values()))
    return SweepOutcome(trials, uri, tracker.experiment_id, tracker.parent_run_id, time.perf_counter() - started, run_dir)
