"""MLflow on the driver, the only writer: the sweep's parent run and one child run per trial.

Workers never reach MLflow; a Ray Tune callback on the driver turns each trial's reports
into its child run's params, per-epoch metrics and tags.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

import ethicsweep
from ethicsweep.errors import EthicsweepError
from ethicsweep.spec import Parameter, SweepSpec, TrainConfig
from ethicsweep.trainables.tune import STOPPED_KEY

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run would break the progress display

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ethicsweep.trial_id"
#: Result keys logged as per-epoch metrics.
METRIC_PREFIXES = ("loss/", "lambda/", "grad_share/", "val/", "epoch_seconds")
MAX_PARAM_LENGTH = 6000
#: Config mappings whose keys are data values, not field names.
DATA_KEYED = ("group_weights", "by_context")


def default_tracking_uri(sweep_dir: Path) -> str:
    """``sqlite:///<sweep dir>/mlflow.db``: an embedded store beside the sweep."""
    return f"sqlite:///{sweep_dir / 'mlflow.db'}"


def git_commit() -> str:
    """The commit of the ethicsweep source tree when it is a git checkout, else ''."""
    source = Path(ethicsweep.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def provenance_tags(spec: SweepSpec, data_sha256: str) -> dict[str, str]:
    """Tags that trace a run to its spec, data, code and seed."""
    return {
        "ethicsweep.spec_sha256": spec.spec_hash,
        "ethicsweep.data_sha256": data_sha256,
        "ethicsweep.version": ethicsweep.__version__,
        "ethicsweep.git_commit": git_commit(),
        "ethicsweep.seed": str(spec.seed),
    }


def governance_tags(spec: SweepSpec) -> dict[str, str]:
    """Tags that carry the spec's governance block and the stakeholder weights in use."""
    weights = {t.key: t.group_weights for t in spec.train.terms if getattr(t, "group_weights", None)}
    if spec.train.harm.group_weights:
        weights["harm"] = spec.train.harm.group_weights
    governance = spec.governance
    return {
        "governance.rationale": governance.rationale,
        "governance.owner": governance.owner,
        "governance.acceptable_risk": json.dumps(governance.acceptable_risk, sort_keys=True),
        "governance.stakeholder_weights": json.dumps(weights, sort_keys=True),
    }


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → ``{"a.b": value}``; a list of terms is keyed by each term's name.
    Mappings keyed by data values (``group_weights``, ``by_context``: group names like
    ``sex=Female`` cannot be MLflow keys) stay whole, as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key == "terms" and isinstance(value, list):
            for term in value:
                flat.update(flatten({k: v for k, v in term.items() if k != "name"}, f"{path}.{term.get('name') or term['kind']}."))
        elif key in DATA_KEYED and isinstance(value, dict):
            flat[path] = json.dumps(value, sort_keys=True)
        elif isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _describe(parameter: Parameter) -> str:
    """A searched parameter in words: ``float in [0.01, 3] (log)``, ``int in [4, 16]``, ``one of [...]``."""
    if parameter.type == "categorical":
        return f"one of {parameter.choices}"
    low, high = parameter.extremes()
    return f"{parameter.type} in [{low:g}, {high:g}]" + (" (log)" if parameter.log else "")


def check_server(uri: str, timeout_s: float = 10.0, resuming: bool = False) -> None:
    """Fail fast when an MLflow server does not answer (its client retries for minutes).
    ``resuming``: the sweep's runs are on that server, so the advice is to start it again."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # it answered; the API calls that follow will say what is wrong
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        advice = (
            "the sweep's runs are there: start it again (same store), then resume with the same --tracking-uri"
            if resuming
            else "start one with `mlflow server`, or leave --tracking-uri out for the embedded store"
        )
        raise EthicsweepError(f"tracking_uri: no MLflow server answers at {uri!r} ({reason}); {advice}") from None


def existing_store(uri: str) -> MlflowClient:
    """A client of an MLflow store that must already exist (commands that read a finished
    sweep): a sqlite file is not created, a server must answer."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise EthicsweepError(f"tracking_uri: no MLflow store at {str(path)!r}; run the sweep first, or pass its --tracking-uri")
    elif uri.startswith(("http://", "https://")):
        check_server(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def local_artifacts(tracking_uri: str, artifact_root: Path) -> str | None:
    """Where a new experiment keeps its artifacts: beside an embedded (sqlite or file)
    store, ``artifact_root``; with a tracking server, wherever the server says (None), so
    that registered models live in its artifact store, not on the driver's disk."""
    return None if tracking_uri.startswith(("http://", "https://")) else artifact_root.as_uri()


class Tracker:
    """The driver's MLflow client, bound to one experiment and one parent run."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path):
        self.tracking_uri = tracking_uri
        if tracking_uri.startswith(("http://", "https://")):
            check_server(tracking_uri)
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(experiment, artifact_location=local_artifacts(tracking_uri, artifact_root))
            )
        except Exception as exc:  # any failure to reach the store is the user's setting
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            if tracking_uri.startswith("sqlite:///") and Path(tracking_uri.removeprefix("sqlite:///")).is_file():
                raise EthicsweepError(
                    f"tracking_uri: the MLflow store {tracking_uri.removeprefix('sqlite:///')!r} cannot be opened: {reason}. "
                    "If a sweep was stopped while creating it, it is incomplete: move it away (or choose another --output-dir) and run again"
                ) from None
            raise EthicsweepError(
                f"tracking_uri: cannot use MLflow at {tracking_uri!r}: {reason}. "
                "Allowed: sqlite:///path/mlflow.db, http(s)://server, or leave it out for the embedded store"
            ) from None
        self.parent_run_id: str | None = None

    def start_parent(self, spec: SweepSpec, tags: dict[str, str], spec_yaml: str, label: str) -> str:
        """Create the sweep's parent run, named ``<sweep name>-<label>``."""
        run = self.client.create_run(self.experiment_id, run_name=f"{spec.name}-{label}", tags={**tags, "ethicsweep.role": "sweep"})
        self.parent_run_id = run.info.run_id
        params = {
            "searcher": spec.search.searcher,
            "num_trials": spec.search.num_trials,
            "objectives": ",".join(f"{o.metric}:{o.mode}" for o in spec.search.objectives),
            "dataset": spec.data.dataset,
            "sensitive": ",".join(spec.data.sensitive or []),
            **{f"space.{k}": _describe(v) for k, v in spec.search.space.items()},
        }
        self.log_params(self.parent_run_id, params)
        self.client.log_text(self.parent_run_id, spec_yaml, "spec.yaml")
        return self.parent_run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        log_params(self.client, run_id, params)

    def resume_parent(self, run_id: str) -> None:
        """Re-open the parent run ``run_id`` of an interrupted execution (``--resume``)."""
        self.parent_run_id = run_id
        self.client.update_run(run_id, status="RUNNING")

    def drop_orphans(self, kept: set[str]) -> list[str]:
        """Delete (MLflow's soft delete) the parent run's child runs that no trial of the
        execution owns: trials a killed driver had started but not yet saved in Ray's
        state, which a resumed sweep ran again under new ids. Returns their run ids."""
        children = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'", max_results=50_000)
        orphans = [run.info.run_id for run in children if run.info.run_id not in kept]
        for run_id in orphans:
            self.client.set_tag(run_id, "ethicsweep.orphan", "started before the driver was killed, not in Ray's saved state; run again as another trial")
            self.client.set_terminated(run_id, status="KILLED")
            self.client.delete_run(run_id)
        return orphans

    def end_parent(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` (values cut to MLflow's length limit) in batches of 100."""
    batch = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for start in range(0, len(batch), 100):
        client.log_batch(run_id, params=batch[start : start + 100])


@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    """MLflow's HTTP client without its own retries (7, over about 4 minutes, by default)
    and with a 15 s timeout: the trial logger retries on its own schedule, and the sweep
    must not stall on a server that is down."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="15")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unreachable_reason(exc: BaseException) -> str | None:
    """Why the MLflow server did not serve the request that raised ``exc``, in a few words
    (``[Errno 111] Connection refused``, ``Timeout``...), when it did not answer (a refused
    or reset connection, a timeout) or answered that it cannot serve now (HTTP 429 or 5xx,
    which MLflow's client reports as a failed retry): worth trying again later. None for
    an error about the request itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)):
            errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(seen))
            return errno.group(0) if errno else type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


class MlflowTrialLogger(Callback):
    """Ray Tune callback: one child run per trial, metrics logged per epoch.

    Only the driver runs it. It holds the store's URI and run ids, not a client (Ray
    pickles callbacks in its experiment state, and unpickles them on ``Tuner.restore``); the
    client is made when needed. Its state (run ids, finished trials, writes not yet made)
    is checkpointed with the experiment. A trial that starts without a known run — a
    resumed sweep whose state predates it — gets the child run that already carries its
    trial id, if there is one: no trial is recorded twice.

    A trial that goes on from a checkpoint older than its last logged epoch (its worker or
    the driver died between a report and the checkpoint Ray saved) trains those epochs
    again, and they are logged again: a second value at the same step, with a later
    timestamp, so the run's metrics are those of the model it ends with.

    Every write goes through ``pending``, in order: when the server does not answer
    (:func:`unreachable_reason`), the writes wait there and are retried, no sooner than 1, 2,
    4 ... 30 s after the last failure, at the next trial event or by :meth:`drain`. Each
    write can be made again without harm (a trial's run is looked up by its trial id
    before one is created; MLflow keeps one copy of a metric value logged twice at the same
    step and time), so writes restored from a saved state that had already been made are
    harmless.
    """

    def __init__(self, tracker: Tracker, base: TrainConfig, tags: dict[str, str]):
        self._uri = tracker.tracking_uri
        self._experiment_id = tracker.experiment_id
        self._parent_run_id = tracker.parent_run_id
        self._base = base
        self._tags = tags
        self.run_ids: dict[str, str] = {}
        self.finished: set[str] = set()
        self.pending: list[dict[str, Any]] = []
        self.last_error = ""
        self._failures = 0
        self._retry_at = 0.0
        self._mlflow: MlflowClient | None = None
        self._existing: dict[str, str] | None = None  # trial id -> run id of runs made before this process

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mlflow": None, "_existing": None, "_failures": 0, "_retry_at": 0.0}

    def get_state(self) -> dict[str, Any]:
        return {"run_ids": dict(self.run_ids), "finished": set(self.finished), "pending": list(self.pending)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.run_ids, self.finished = dict(state["run_ids"]), set(state["finished"])
        self.pending = list(state.get("pending", []))

    def _client(self) -> MlflowClient:
        if self._mlflow is None:
            self._mlflow = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        return self._mlflow

    def _existing_run(self, trial_id: str) -> str | None:
        """The child run already carrying ``trial_id``. The parent's child runs are read
        once per process (one query, not one per trial): only a resumed sweep has any."""
        if self._existing is None:
            children = self._client().search_runs(
                [self._experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self._parent_run_id}'", max_results=50_000
            )
            self._existing = {run.data.tags.get(TRIAL_TAG): run.info.run_id for run in children}
        return self._existing.get(trial_id)

    # ------------------------------------------------------------------ the write buffer

    def _write(self, op: dict[str, Any]) -> None:
        self.pending.append(op)
        self.flush()

    def flush(self, *, now: bool = False) -> bool:
        """Make the pending writes, in order, until the server stops answering. Waits for
        the retry time unless ``now``. True when none is left. Raises what is not a
        server that does not answer."""
        if not self.pending:
            return True
        if not now and time.monotonic() < self._retry_at:
            return False
        with _fail_fast():
            while self.pending:
                try:
                    self._apply(self.pending[0])
                except Exception as exc:
                    reason = unreachable_reason(exc)
                    if reason is None:
                        raise
                    self._failures += 1
                    self._retry_at = time.monotonic() + min(30.0, 2.0 ** (self._failures - 1))
                    self.last_error = reason
                    return False
                self.pending.pop(0)
        self._failures, self.last_error = 0, ""
        return True

    def drain(self, wait_s: float, on_wait: Callable[[int, float], None] | None = None) -> bool:
        """Flush until no write is pending or ``wait_s`` seconds have passed; between tries
        ``on_wait(pending writes, seconds left)`` is called. True when none is left."""
        deadline = time.monotonic() + wait_s
        while not self.flush(now=True):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if on_wait is not None:
                on_wait(len(self.pending), left)
            time.sleep(min(max(self._retry_at - time.monotonic(), 0.5), left))
        return True

    def _apply(self, op: dict[str, Any]) -> None:
        client, trial_id = self._client(), op["trial"]
        if op["op"] == "start":
            run_id = self.run_ids.get(trial_id) or self._existing_run(trial_id)
            if run_id is None:
                run_id = client.create_run(self._experiment_id, run_name=f"trial-{trial_id}", tags=op["tags"]).info.run_id
                self.run_ids[trial_id] = run_id
            else:  # a trial resumed or retried (or this start written before): its run goes on
                self.run_ids[trial_id] = run_id
                client.update_run(run_id, status="RUNNING")
            log_params(client, run_id, op["params"])
            return
        run_id = self.run_ids[trial_id]  # every trial's start comes before its other writes
        if op["op"] == "metrics":
            client.log_batch(run_id, metrics=[Metric(*m) for m in op["metrics"]])
        elif op["op"] == "end":
            if op["tags"]:
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
            client.set_terminated(run_id, status=op["status"])

    # ------------------------------------------------------------------ Ray Tune events

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.finished.discard(trial.trial_id)
        self._write(self._start_op(trial))

    def _start_op(self, trial: Trial) -> dict[str, Any]:
        tags = {**self._tags, PARENT_TAG: self._parent_run_id, TRIAL_TAG: trial.trial_id, "ethicsweep.role": "trial"}
        resolved = self._base.with_params(trial.config).model_dump(mode="json")
        return {"op": "start", "trial": trial.trial_id, "tags": tags, "params": flatten(resolved)}

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        stamp = int(result.get("timestamp", 0) * 1000)
        metrics = [
            (key, float(value), stamp, step)
            for key, value in result.items()
            if key.startswith(METRIC_PREFIXES) and isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        if metrics:
            self._write({"op": "metrics", "trial": trial.trial_id, "metrics": metrics})

    def _finish(self, trial: Trial, status: str, extra: dict[str, str]) -> None:
        if trial.trial_id in self.finished:
            return
        last = trial.last_result or {}
        tags = {f"ethicsweep.{key}": str(last[key]) for key in ("node_ip", "hostname", "node_id", "device") if key in last}
        tags.update(extra)
        self.finished.add(trial.trial_id)
        if trial.trial_id not in self.run_ids and not any(op["op"] == "start" and op["trial"] == trial.trial_id for op in self.pending):
            self.pending.append(self._start_op(trial))  # it failed before it started: it still gets its run, FAILED
        self._write({"op": "end", "trial": trial.trial_id, "status": status, "tags": tags})

    def close_unfinished(self, status: str = "KILLED") -> None:
        """End the runs of trials that started but did not finish (the sweep was stopped)."""
        started = {op["trial"] for op in self.pending if op["op"] == "start"} | set(self.run_ids)
        for trial_id in sorted(started - self.finished):
            self.finished.add(trial_id)
            self.pending.append({"op": "end", "trial": trial_id, "status": status, "tags": {}})

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        stopped = (trial.last_result or {}).get(STOPPED_KEY)
        if stopped:  # training stopped on a non-finite loss: the trial failed, with its reason
            self._finish(trial, "FAILED", {"ethicsweep.error": f"training stopped: {stopped}"[:500]})
        else:
            self._finish(trial, "FINISHED", {})

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FAILED", {"ethicsweep.error": trial_error(trial)})


def trial_error(trial: Trial) -> str:
    """The last line of the trial's error; without one (Ray gives none for a trial it could
    not start, as on a reused worker that died while idle), that it failed before starting."""
    error = trial.get_error()
    if error and str(error).strip():
        return str(error).strip().splitlines()[-1][:500]
    return "failed before it started, and Ray Tune gave no error (e.g. its reused worker died while idle)"
