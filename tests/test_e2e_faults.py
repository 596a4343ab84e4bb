"""End to end: a worker process killed mid-sweep is retried (search.max_failures) and the
sweep ends with every trial recorded once; a per-trial time limit cuts trials short."""

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


def _write(root: Path, search: dict) -> Path:
    spec = {
        "name": "ci-faults", "seed": 4, "output_dir": str(root / "runs"),
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "logistic"}, "training": {"epochs": 6, "batch_size": 1024, "lr": 0.01},
                  "terms": [{"kind": "demographic_parity", "weight": 0.5}]},
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
    assert len(children) == len(trials)
    assert sorted(r.info.run_id for r in children.values() if r.info.status == "FINISHED") == sorted(finished["run_id"])
    for version in client.search_model_versions("name='ci-faults'"):
        run = children[version.run_id]
        for key in ("val/accuracy", "val/dp_gap", "val/roc_auc"):
            assert float(version.tags[key]) == pytest.approx(run.data.metrics[key], abs=1e-12), key
