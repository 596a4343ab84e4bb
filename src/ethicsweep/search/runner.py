"""Run one sweep: Ray Tune schedules trials, an Optuna or pymoo searcher proposes them (an
early-stopping scheduler may cut them short), the driver logs them to MLflow. Returns one row per trial; analysis of the front happens elsewhere."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import yaml
from ray import tune
from ray.tune.experiment import Trial

from ethicsweep.data import PreparedData
from ethicsweep.errors import EthicsweepError
from ethicsweep.objectives.metrics import GROUP_METRICS
from ethicsweep.search.builders import build_scheduler, build_searcher, objective_keys
from ethicsweep.search.mo_asha import MultiObjectiveASHA
from ethicsweep.search.optuna_searcher import objective_problem
from ethicsweep.search.tracking import (
    MlflowTrialLogger,
    Tracker,
    check_server,
    default_tracking_uri,
    governance_tags,
    provenance_tags,
    trial_error,
)
from ethicsweep.spec import SweepSpec
from ethicsweep.trainables.train import init_state
from ethicsweep.trainables.tune import run_trial

TUNE_DIR = "tune"
# Ray Tune's own CSV/JSON/TensorBoard result files: MLflow is the record, and the
# TensorBoard writer warns on every NaN metric (an undefined gap is a NaN by design).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# A trial whose loss turned non-finite ends with a report that holds only its reason and
# epoch, without objectives (every searcher reads the reason): Ray Tune's strict check
# would stop the whole sweep on it. The spec already checks every objective's name.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


@dataclass(frozen=True)
class TrialEvent:
    """A trial's progress, for a progress display: a finished epoch or a finished trial; or,
    after the last trial, a wait for an MLflow server that stopped answering."""

    trial_id: str
    kind: str  # "epoch", "done", "error", or "tracking": the sweep ended, MLflow writes wait (result: left_s, error)
    epoch: int
    finished: int
    total: int
    result: dict[str, Any]
    unwritten: int = 0  # MLflow writes waiting for a server that stopped answering


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep produced: one row per trial and where it was recorded."""

    trials: pd.DataFrame
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    wall_seconds: float
    run_dir: Path
    interrupted: bool = False


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
        hint = "" if os.environ.get("RAY_AUTH_MODE") else (
            "; if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
        )
        raise EthicsweepError(f"--address: cannot join a Ray cluster at {address!r}: {str(exc).splitlines()[0]}{hint}") from None


def checkpoint_uri(checkpoint: tune.Checkpoint) -> str:
    """Where a checkpoint is: a local path, or ``<scheme>://<path>`` on remote storage."""
    scheme = checkpoint.filesystem.type_name
    return checkpoint.path if scheme == "local" else f"{scheme}://{checkpoint.path}"


def tune_storage(spec: SweepSpec, run_dir: Path) -> str:
    """Where Ray Tune keeps an execution's trials: ``<storage_path>/<name>/<start time>`` when
    the spec names shared storage (every node writes checkpoints there), else ``run_dir``."""
    if spec.storage_path:
        return f"{spec.storage_path.rstrip('/')}/{spec.name}/{run_dir.name}"
    return str(run_dir)


#: By run directory, the progress hook of each sweep running in this process, and the
#: collector Ray Tune actually drives: on ``Tuner.restore`` Ray unpickles its own copies
#: of the callbacks, and a live hook cannot travel in a pickle.
_HOOKS: dict[str, Callable[[TrialEvent], None]] = {}
_ACTIVE: dict[str, _TrialCollector] = {}


class _TrialCollector(tune.Callback):
    """Keeps each trial's final state and the early-stopping scheduler's records (both
    checkpointed with the experiment: Ray Tune saves callbacks' states, not a scheduler's)
    and forwards progress to the hook registered for its run directory.

    ``scheduler`` is the very object the Tuner is given: Ray pickles the Tuner's
    configuration, callbacks included, in one piece, so after ``Tuner.restore`` this
    reference is still the scheduler Ray Tune drives."""

    def __init__(
        self, total: int, objective_keys: list[str], logger: MlflowTrialLogger, run_dir: Path, scheduler: MultiObjectiveASHA | None
    ):
        self.total, self.objective_keys, self.logger, self.key = total, objective_keys, logger, str(run_dir)
        self.scheduler = scheduler
        self.rows: dict[str, dict[str, Any]] = {}

    def setup(self, **info: Any) -> None:
        _ACTIVE[self.key] = self

    def get_state(self) -> dict[str, Any]:
        return {"rows": dict(self.rows), "scheduler": self.scheduler.get_state() if self.scheduler is not None else None}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rows = dict(state["rows"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.set_state(state["scheduler"])

    def _emit(self, trial: Trial, kind: str, result: dict[str, Any]) -> None:
        hook = _HOOKS.get(self.key)
        if hook is not None:
            unwritten = len(self.logger.pending)
            hook(TrialEvent(trial.trial_id, kind, int(result.get("epoch", 0)), len(self.rows), self.total, result, unwritten))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self._emit(trial, "epoch", result)

    def _record(self, trial: Trial, status: str, error: str, errored: bool = False) -> None:
        """``errored``: the trial ended on an error, its last attempt one of its failures."""
        last = trial.last_result or {}
        row = {
            "trial_id": trial.trial_id,
            "run_id": self.logger.run_ids.get(trial.trial_id, ""),
            "status": status,
            "error": error,
            "epochs": int(last.get("epoch", 0)),
            "retries": trial.num_failures - errored,
            "checkpoint": checkpoint_uri(trial.checkpoint) if trial.checkpoint is not None else "",
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
        self._record(trial, "failed", trial_error(trial), errored=True)


def _check_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Refuse trials no node of the cluster can hold: Ray would wait for them forever."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    most_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    most_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    if cpus_per_trial > most_cpus:
        raise EthicsweepError(
            f"search.cpus_per_trial: {cpus_per_trial:g} CPUs per trial, but the largest node of the cluster has {most_cpus:g}; "
            f"allowed: at most {most_cpus:g}"
        )
    if gpus_per_trial > most_gpus:
        have = f"the largest node has {most_gpus:g}" if most_gpus else "the cluster has none"
        raise EthicsweepError(f"search.gpus_per_trial: {gpus_per_trial:g} GPUs per trial, but {have}; allowed: at most {most_gpus:g}")


#: URI schemes of the filesystems Ray Tune stores checkpoints with (pyarrow's).
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "file")
_STORAGE_ALLOWED = "a directory that can be created and written (shared by every node on a cluster), or " + ", ".join(
    f"{scheme}://..." for scheme in STORAGE_SCHEMES[:-1]
)


def _check_storage(storage_path: str | None) -> None:
    """A local (or mounted shared) storage path must be a directory the driver can create:
    it reads the trials' checkpoints back. A remote URI must name a filesystem Ray Tune
    knows (``STORAGE_SCHEMES``); whether its bucket answers is Ray's to find out."""
    if not storage_path:
        return
    if "://" in storage_path:
        scheme = storage_path.split("://", 1)[0].lower()
        if scheme not in STORAGE_SCHEMES:
            raise EthicsweepError(
                f"storage_path: {storage_path!r} names the filesystem {scheme!r}, which Ray Tune cannot store checkpoints on; "
                f"allowed: {_STORAGE_ALLOWED}"
            )
        return
    try:
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EthicsweepError(
            f"storage_path: cannot use {storage_path!r} for the trials' checkpoints ({exc.strerror or exc}); allowed: {_STORAGE_ALLOWED}"
        ) from None


def _sweep_dir(spec: SweepSpec) -> Path:
    """The sweep's directory, created; a clear error when a file stands in the way."""
    sweep_dir = spec.sweep_dir
    for path in (sweep_dir, *sweep_dir.parents):
        if path.exists() and not path.is_dir():
            raise EthicsweepError(f"output_dir: {str(path)!r} is a file, not a directory; choose another --output-dir")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EthicsweepError(f"output_dir: cannot create {str(sweep_dir)!r}: {exc.strerror or exc}") from None
    return sweep_dir


def _new_run_dir(sweep_dir: Path) -> Path:
    """``<sweep dir>/<UTC time>`` (with ``-1``, ``-2``... if a sweep started in the same second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for suffix in ("", *(f"-{i}" for i in range(1, 1000))):
        path = sweep_dir / f"{stamp}{suffix}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise EthicsweepError(f"output_dir: too many sweeps started at {stamp} in {str(sweep_dir)!r}")


def check_objectives_defined(spec: SweepSpec, data: PreparedData) -> None:
    """Refuse a sweep whose group objectives cannot be computed on the validation split
    (fewer than two groups with ``min_group_size`` rows): every trial would fail."""
    needs_groups = [o.metric for o in spec.search.objectives if o.metric in GROUP_METRICS]
    if not needs_groups:
        return
    sizes = np.bincount(data.validation.groups, minlength=len(data.group_names))
    if (sizes >= data.min_group_size).sum() < 2:
        shown = ", ".join(f"{name} {size}" for name, size in zip(data.group_names, sizes))
        raise EthicsweepError(
            f"data.min_group_size: the objective {needs_groups[0]} needs two groups with at least "
            f"{data.min_group_size} rows in the validation split; group sizes there: {shown}. "
            "Lower data.min_group_size, raise data.validation_fraction, or use more data"
        )


def latest_execution(spec: SweepSpec) -> Path:
    """The run directory of the sweep's latest execution, if Ray Tune can restore it (for
    ``--resume``; checked on files alone, before Ray starts). Raises EthicsweepError."""
    sweep_dir = spec.sweep_dir
    runs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name[:1].isdigit()), reverse=True) if sweep_dir.is_dir() else []
    if not runs:
        raise EthicsweepError(f"--resume: sweep {spec.name!r} has no execution in {str(sweep_dir)!r} to resume; run it without --resume")
    if not tune.Tuner.can_restore(f"{tune_storage(spec, runs[0])}/{TUNE_DIR}"):
        raise EthicsweepError(f"--resume: execution {runs[0].name} left no Ray Tune state to restore (it stopped before the first trial); run without --resume")
    return runs[0]


def resumable_parent(spec: SweepSpec, tracker: Tracker, run_dir: Path) -> str:
    """The parent run of the execution in ``run_dir``, if it can be resumed: it did not
    finish and the spec is unchanged (same hash). Raises EthicsweepError."""
    found = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`ethicsweep.run_dir` = '{run_dir}' and tags.`ethicsweep.role` = 'sweep'", max_results=1
    )
    if not found:
        raise EthicsweepError(
            f"--resume: execution {run_dir.name} has no parent run in {tracker.tracking_uri}; if the sweep ran with --tracking-uri, "
            "resume it with the same one; else run without --resume"
        )
    parent = found[0]
    if parent.info.status == "FINISHED":
        raise EthicsweepError(f"--resume: the latest execution {run_dir.name} finished; there is nothing to resume (run without --resume for a new one)")
    if parent.data.tags.get("ethicsweep.spec_sha256") != spec.spec_hash:
        raise EthicsweepError(f"--resume: the spec changed since execution {run_dir.name} started (its hash differs); resume it with the same spec, or run without --resume")
    return parent.info.run_id


def run_sweep(
    spec: SweepSpec,
    data: PreparedData,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    on_event: Callable[[TrialEvent], None] | None = None,
    resume: bool = False,
) -> SweepOutcome:
    """Run the sweep ``spec`` describes on prepared ``data``.

    The data go into Ray's object store once (without the test split). Every trial is a
    child run of one parent run in the MLflow experiment named after the sweep. Each
    execution writes under ``<sweep dir>/<UTC start time>/``; the MLflow store (by
    default ``<sweep dir>/mlflow.db``) and its artifacts are shared by the executions.
    Everything that can be checked — the cluster, the resources, the output directory,
    the tracking store — is checked before anything is written to MLflow.

    When the sweep is interrupted (Ctrl-C), the finished trials stay recorded, the runs of
    unfinished trials and the parent run end as KILLED, and ``interrupted`` is set.

    An MLflow server that stops answering does not stop the sweep: its writes are held and
    retried (see :class:`MlflowTrialLogger`), at the end for up to ``spec.tracking_wait_s``
    seconds; if some are still held then, EthicsweepError says so and the parent run stays
    open, for ``resume`` to write them.

    ``resume``: continue the latest execution instead (interrupted, or its driver killed):
    Ray Tune's experiment state — trials, searcher, callbacks — is restored from its run
    directory, unfinished trials go on from their last checkpoints, the parent run and the
    trials' child runs are re-opened rather than created again, and the sweep ends with the
    spec's number of trials.
    """
    started = time.perf_counter()
    search = spec.search
    check_objectives_defined(spec, data)
    init_state(spec.train, data)  # the terms against the data (group and context names), before any worker starts
    resumed = latest_execution(spec) if resume else None
    uri = tracking_uri or spec.tracking_uri or default_tracking_uri(spec.sweep_dir)
    if uri.startswith(("http://", "https://")):
        check_server(uri, resuming=resume)  # before Ray starts: a server that is down is the first thing to know
    _check_storage(spec.storage_path)
    sweep_dir = _sweep_dir(spec)
    tracker, parent_id = None, None
    if resumed is not None:  # a finished or changed execution is refused before Ray starts
        tracker = Tracker(uri, spec.name, sweep_dir / "artifacts")
        parent_id = resumable_parent(spec, tracker, resumed)
    connect(address)
    _check_resources(search.cpus_per_trial, search.gpus_per_trial)
    tracker = tracker or Tracker(uri, spec.name, sweep_dir / "artifacts")
    tags = provenance_tags(spec, data.sha256)
    if resumed is not None:
        run_dir = resumed
        tracker.resume_parent(parent_id)
    else:
        run_dir = _new_run_dir(sweep_dir)
        parent_tags = {**tags, **governance_tags(spec), "ethicsweep.run_dir": str(run_dir)}
        tracker.start_parent(spec, parent_tags, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), run_dir.name)

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=data.for_workers(), base=spec.train),
        {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
    )
    logger = MlflowTrialLogger(tracker, spec.train, tags)
    scheduler = None if resume else build_scheduler(spec)
    collector = _TrialCollector(search.num_trials, [k for k, _ in objective_keys(spec)], logger, run_dir, scheduler)
    if resume:  # Ray restores its pickled configuration, callbacks and scheduler included
        tuner = tune.Tuner.restore(f"{tune_storage(spec, run_dir)}/{TUNE_DIR}", trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = _new_tuner(spec, trainable, run_dir, scheduler, [logger, collector])
    key = str(run_dir)
    if on_event is not None:
        _HOOKS[key] = on_event
    status, written = "FAILED", False
    try:
        tuner.fit()  # on Ctrl-C, Ray Tune stops the trials and returns
        collector = _ACTIVE.get(key, collector)
        status = "FINISHED" if len(collector.rows) >= search.num_trials else "KILLED"
    except KeyboardInterrupt:
        status = "KILLED"
    finally:
        collector = _ACTIVE.pop(key, collector)
        hook = _HOOKS.pop(key, None)
        written = _write_out(collector, status, spec.tracking_wait_s if status != "FAILED" else 0.0, hook)
        if written:
            if resume and status == "FINISHED":
                tracker.drop_orphans({row["run_id"] for row in collector.rows.values()})
            tracker.end_parent(status)
    if not written:
        logger = collector.logger
        raise EthicsweepError(
            f"tracking_uri: the MLflow server at {uri} stopped answering ({logger.last_error}) and did not answer again within "
            f"tracking_wait_s ({spec.tracking_wait_s:g} s); {len(logger.pending)} writes of trial results are kept in Ray Tune's "
            f"saved state under {tune_storage(spec, run_dir)}. When the server answers again, run the same command with --resume "
            "to write them and finish the sweep"
        )
    trials = pd.DataFrame(list(collector.rows.values()))
    return SweepOutcome(
        trials, uri, tracker.experiment_id, tracker.parent_run_id, time.perf_counter() - started, run_dir, status == "KILLED"
    )


def _write_out(collector: _TrialCollector, status: str, wait_s: float, hook: Callable[[TrialEvent], None] | None) -> bool:
    """End the runs of unfinished trials and make every write still pending, retrying a
    server that stopped answering for up to ``wait_s`` seconds (each wait is shown as a
    ``tracking`` event). Fills in the run ids of trials whose run was created late. True
    when nothing is left unwritten."""
    logger = collector.logger
    logger.close_unfinished("KILLED" if status != "FAILED" else "FAILED")

    def on_wait(pending: int, left_s: float) -> None:
        if hook is not None:
            result = {"left_s": left_s, "error": logger.last_error}
            hook(TrialEvent("", "tracking", 0, len(collector.rows), collector.total, result, pending))

    written = logger.drain(wait_s, on_wait)
    for row in collector.rows.values():
        row["run_id"] = row["run_id"] or logger.run_ids.get(row["trial_id"], "")
    return written


def _new_tuner(spec: SweepSpec, trainable: Any, run_dir: Path, scheduler: MultiObjectiveASHA | None, callbacks: list[tune.Callback]) -> tune.Tuner:
    """A Tuner for a new execution: the spec's searcher and scheduler, actors reused or not, a
    checkpoint per trial kept, crashed trials retried, the per-trial time limit."""
    search = spec.search
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    max_concurrent = search.max_concurrent or max(1, int(cluster_cpus // search.cpus_per_trial))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(spec),
            num_samples=search.num_trials,
            max_concurrent_trials=max_concurrent,
            scheduler=scheduler,
            reuse_actors=search.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=tune_storage(spec, run_dir),
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            stop={"time_total_s": search.time_limit_s} if search.time_limit_s else None,
            verbose=0,
        ),
    )
