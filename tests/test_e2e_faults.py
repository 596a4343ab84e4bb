"""End to end: a worker process killed mid-sweep is retried (search.max_failures) and the
sweep ends with every trial recorded once; a trial that raises fails with its reason and
the sweep goes on; a NaN loss mid-training stops its trial cleanly, with its reason; a
per-trial time limit cuts trials short."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

N_TRIALS = 6
FAULTS = Path(__file__).parent / "faults"  # a sitecustomize that injects faults, by environment variables


def _write(root: Path, search: dict, **train: dict) -> Path:
    spec = {
        "name": "ci-faults", "seed": 4, "output_dir": str(root / "runs"),
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "logistic"}, "training": {"epochs": 6, "batch_size": 1024, "lr": 0.01},
                  "terms": [{"kind": "demographic_parity", "weight": 0.5}], **train},
        "search": {"num_trials": N_TRIALS, "max_concurrent": 2, "population_size": 3,
                   "space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 5.0, "log": True}},
                   **search},
    }  # fmt: skip
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _workers(session: int) -> list[int]:
    """Ray's trial actors (``ray::ImplicitFunc``) in the sweep's process session."""
    found = subprocess.run(["pgrep", "-s", str(session), "-f", "ray::ImplicitFunc"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_worker(session: int, window_s: float = 0.5) -> int | None:
    """The trial actor that is training now (the one burning CPU). Ray Tune retries a
    running trial whose worker dies; a reused actor killed while idle fails the trial it
    was about to start, which Ray does not retry."""
    try:
        before = {pid: _cpu_seconds(pid) for pid in _workers(session)}
        time.sleep(window_s)
        used = {pid: _cpu_seconds(pid) - start for pid, start in before.items()}
    except (FileNotFoundError, ProcessLookupError):
        return None
    pid = max(used, key=used.get, default=None)
    return pid if pid is not None and used[pid] > 0.1 * window_s else None


def _sweep_killing_workers(path: Path, at: tuple[str, ...], timeout_s: float = 1200) -> list[int]:
    """Run the sweep at ``path``; when a progress line starts with one of ``at``, SIGKILL the
    worker that is training then. Asserts the sweep still exits 0; the pids killed."""
    command = [sys.executable, "-m", "ethicsweep.cli", "sweep", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, killed = [], []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith(at):
                deadline, before = time.monotonic() + 30, len(killed)
                while len(killed) == before and time.monotonic() < deadline:
                    pid = _busy_worker(process.pid)
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
        assert process.wait(timeout=timeout_s) == 0, "".join(lines)[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return killed


def test_a_killed_worker_is_retried_and_every_trial_is_recorded_once(tmp_path: Path) -> None:
    path = _write(tmp_path, {"max_failures": 2})
    killed = _sweep_killing_workers(path, (f"[1/{N_TRIALS}]",))
    assert len(killed) == 1, "no worker was found to kill"
    (run_dir,) = [p for p in (tmp_path / "runs" / "ci-faults").iterdir() if p.is_dir() and p.name[0].isdigit()]
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == N_TRIALS and (trials["status"] == "ok").all() and trials["trial_id"].is_unique, trials[["status", "error"]]
    assert trials["retries"].sum() >= 1  # a trial failed with its worker and was retried...
    assert (trials["epochs"] == 6).all()  # ...from its checkpoint, to the end
    uri = f"sqlite:///{tmp_path / 'runs' / 'ci-faults' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ci-faults").experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("ethicsweep.role") == "trial"]
    assert sorted(r.data.tags["ethicsweep.trial_id"] for r in children) == sorted(trials["trial_id"])
    assert {r.info.status for r in children} == {"FINISHED"}


def _run(path: Path, env: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Run the sweep at ``path`` (asserting it exits 0): its trials.csv and its child runs by trial id."""
    done = subprocess.run([sys.executable, "-m", "ethicsweep.cli", "sweep", str(path)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, **(env or {})})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = [p for p in (path.parent / "runs" / "ci-faults").iterdir() if p.is_dir() and p.name[0].isdigit()]
    uri = f"sqlite:///{path.parent / 'runs' / 'ci-faults' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ci-faults").experiment_id], max_results=1000)
    children = {r.data.tags["ethicsweep.trial_id"]: r for r in runs if r.data.tags.get("ethicsweep.role") == "trial"}
    return pd.read_csv(run_dir / "trials.csv"), {"children": children, "client": client, "stdout": done.stdout}


def _check_versions(found: dict, finished: pd.DataFrame) -> None:
    """Registered versions come from finished trials only, each with its run's metrics as tags."""
    versions = found["client"].search_model_versions("name='ci-faults'")
    assert versions and {v.tags["trial_id"] for v in versions} <= set(finished["trial_id"])
    for version in versions:
        run = found["children"][version.tags["trial_id"]]
        assert version.run_id == run.info.run_id
        for key in ("val/accuracy", "val/dp_gap"):
            assert float(version.tags[key]) == pytest.approx(run.data.metrics[key], abs=1e-12), key


def test_a_trial_that_raises_fails_with_its_reason_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # ε = 1e-4 in 3 epochs: Opacus finds no noise multiplier that reaches it and raises, in the worker
    path = _write(
        tmp_path,
        {"num_trials": 4, "max_failures": 1, "searcher": "tpe", "initial": [{"privacy.target_epsilon": 1e-4}],
         "space": {"privacy.target_epsilon": {"type": "float", "low": 1e-4, "high": 8.0, "log": True}}},
        training={"epochs": 3, "batch_size": 1024, "lr": 0.01}, terms=[],
        privacy={"dp_sgd": True, "target_epsilon": 2.0},
    )  # fmt: skip
    trials, found = _run(path)
    assert len(trials) == 4 and trials["trial_id"].is_unique
    raised = trials["param:privacy.target_epsilon"] < 2e-4
    assert raised.sum() == 1, trials[["param:privacy.target_epsilon", "status"]]
    (failed,) = trials[raised].itertuples()
    assert failed.status == "failed" and "privacy.target_epsilon: 0.0001 cannot be reached in 3 epochs" in failed.error
    assert failed.retries == 1  # retried once (max_failures), failed again
    assert (trials[~raised]["status"] == "ok").all() and (trials[~raised]["epochs"] == 3).all()
    children = found["children"]
    assert sorted(children) == sorted(trials["trial_id"])  # one run per trial: the retry went on in the same run
    run = children[failed.trial_id]
    assert run.info.status == "FAILED" and "cannot be reached" in run.data.tags["ethicsweep.error"]
    assert {children[t].info.status for t in trials[~raised]["trial_id"]} == {"FINISHED"}
    _check_versions(found, trials[~raised])


def test_a_nan_loss_stops_its_trial_with_the_reason_and_keeps_its_epochs(tmp_path: Path) -> None:
    # the fault injector makes every model with hidden == 13 output NaN from its 40th training
    # forward pass (about 29 batches an epoch here): that trial's loss turns NaN in epoch 2
    path = _write(
        tmp_path,
        {"num_trials": 4, "searcher": "tpe", "initial": [{"model.hidden": 13}],
         "space": {"model.hidden": {"type": "int", "low": 8, "high": 16}}},
        model={"kind": "mlp", "hidden": 8}, training={"epochs": 3, "batch_size": 1024, "lr": 0.01},
    )  # fmt: skip
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
           "ETHICSWEEP_FAULT_NAN_HIDDEN": "13", "ETHICSWEEP_FAULT_NAN_AFTER": "40"}  # fmt: skip
    trials, found = _run(path, env)
    assert len(trials) == 4
    diverged = trials["param:model.hidden"] == 13
    assert diverged.sum() >= 1
    assert (trials[~diverged]["status"] == "ok").all() and (trials[~diverged]["epochs"] == 3).all()
    for row in trials[diverged].itertuples():
        assert row.status == "failed" and row.retries == 0  # stopped, not raised: nothing to retry
        assert "training stopped: non-finite loss at epoch 2" in row.error and "bce is nan" in row.error, row.error
        assert row.epochs == 1  # the epoch before the NaN is kept...
        run = found["children"][row.trial_id]
        assert run.info.status == "FAILED" and run.data.tags["ethicsweep.error"] == row.error
        history = found["client"].get_metric_history(run.info.run_id, "val/accuracy")
        assert [m.step for m in history] == [1]  # ...and logged; the NaN epoch is not
    assert {found["children"][t].info.status for t in trials[~diverged]["trial_id"]} == {"FINISHED"}
    _check_versions(found, trials[~diverged])


def test_the_time_limit_stops_each_trial_after_the_epoch_that_passes_it(tmp_path: Path) -> None:
    path = _write(tmp_path, {"time_limit_s": 0.001, "searcher": "random"})
    done = subprocess.run([sys.executable, "-m", "ethicsweep.cli", "sweep", str(path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "runs" / "ci-faults").iterdir() if p.is_dir() and p.name[0].isdigit()]
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == N_TRIALS and (trials["status"] == "ok").all()
    assert (trials["epochs"] == 1).all()


def test_chaos_three_workers_killed_in_a_20_trial_sweep_lose_nothing(tmp_path: Path) -> None:
    """Integrity after faults: every finished trial has exactly one FINISHED run, and each
    registered version's tags equal its run's final metrics."""
    path = _write(tmp_path, {"num_trials": 20, "max_failures": 3, "population_size": 5})
    killed = _sweep_killing_workers(path, ("[3/20]", "[8/20]", "[13/20]"))
    assert len(killed) == 3, killed
    (run_dir,) = [p for p in (tmp_path / "runs" / "ci-faults").iterdir() if p.is_dir() and p.name[0].isdigit()]
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 20 and trials["trial_id"].is_unique
    assert trials["retries"].sum() >= 1
    finished = trials[trials["status"] == "ok"]
    uri = f"sqlite:///{tmp_path / 'runs' / 'ci-faults' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ci-faults").experiment_id], max_results=1000)
    children = {r.info.run_id: r for r in runs if r.data.tags.get("ethicsweep.role") == "trial"}
    assert len(children) == len(trials) and set(children) == set(trials["run_id"])  # every trial has its run, even one that failed unstarted
    assert {children[r].info.status for r in trials.loc[trials["status"] != "ok", "run_id"]} <= {"FAILED"}
    assert sorted(r.info.run_id for r in children.values() if r.info.status == "FINISHED") == sorted(finished["run_id"])
    for version in client.search_model_versions("name='ci-faults'"):
        run = children[version.run_id]
        for key in ("val/accuracy", "val/dp_gap", "val/roc_auc"):
            assert float(version.tags[key]) == pytest.approx(run.data.metrics[key], abs=1e-12), key
