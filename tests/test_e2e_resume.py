"""End to end: the driver of a real sweep is killed mid-sweep (SIGKILL to its whole process
group, Ray included); `--resume` finishes it with exactly the requested trials, each
recorded once in MLflow."""

from __future__ import annotations

import os
import pickle
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

N_TRIALS = 8


def _spec(root: Path) -> Path:
    spec = {
        "name": "ci-resume", "seed": 2, "output_dir": str(root / "runs"),
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "logistic"}, "training": {"epochs": 3, "batch_size": 2048, "lr": 0.01},
                  "terms": [{"kind": "demographic_parity", "weight": 0.5}]},
        "search": {"searcher": "nsga2", "num_trials": N_TRIALS, "population_size": 4, "max_concurrent": 2,
                   "scheduler": {"kind": "mo_asha", "grace_period": 1, "reduction_factor": 3},
                   "space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 5.0, "log": True},
                             "training.epochs": {"type": "int", "low": 3, "high": 6}}},
    }  # fmt: skip
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _kill_after(path: Path, finished: int, timeout_s: float = 600) -> str:
    """Start the sweep, SIGKILL its process group once ``finished`` trials have ended; its output."""
    command = [sys.executable, "-m", "ethicsweep.cli", "sweep", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, deadline = [], time.monotonic() + timeout_s
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith(f"[{finished}/{N_TRIALS}]") or time.monotonic() > deadline:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    return "".join(lines)


def test_resume_after_the_driver_is_killed(tmp_path: Path) -> None:
    path = _spec(tmp_path)
    before = _kill_after(path, finished=3)
    assert f"[3/{N_TRIALS}]" in before, before[-3000:]
    done = subprocess.run([sys.executable, "-m", "ethicsweep.cli", "sweep", str(path), "--resume"],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    sweep_dir = tmp_path / "runs" / "ci-resume"
    (run_dir,) = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()]  # resumed in place
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == N_TRIALS and trials["trial_id"].is_unique and (trials["status"] == "ok").all()

    uri = f"sqlite:///{sweep_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ci-resume").experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ethicsweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["ethicsweep.trial_id"] for r in children) == sorted(trials["trial_id"])
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.info.run_id for r in children} == set(trials["run_id"])
    # every epoch logged (one that was trained again after the resume, from an older
    # checkpoint, is logged again, later); the run's metric is the trial's final one
    final = trials.set_index("run_id")["val/accuracy"]
    epochs = trials.set_index("run_id")["epochs"]
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")]
        assert sorted(set(steps)) == list(range(1, int(epochs[run.info.run_id]) + 1))
        assert run.data.metrics["val/accuracy"] == pytest.approx(final[run.info.run_id], abs=1e-12)
    versions = client.search_model_versions("name='ci-resume'")
    assert {v.tags["trial_id"] for v in versions} <= set(trials.loc[trials["front_rank"] == 0, "trial_id"])
    # the early-stopping scheduler went on from its saved records: every trial reached the
    # first rung (1 epoch), those finished before the kill included
    (saved,) = [s for s in _callback_states(run_dir).values() if s and "scheduler" in s]
    assert set(saved["scheduler"]["recorded"][1]) == set(trials["trial_id"])

    # now finished: --resume refuses in one line
    again = subprocess.run([sys.executable, "-m", "ethicsweep.cli", "sweep", str(path), "--resume"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 2 and "finished; there is nothing to resume" in again.stderr, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr


def _callback_states(run_dir: Path) -> dict:
    """The callbacks' states saved by Ray Tune's latest session (files are named by the
    session's start time; their mtimes are not reliable: syncing touches them all)."""
    (latest,) = sorted((run_dir / "tune").glob("callback-states-*.pkl"))[-1:]
    with latest.open("rb") as handle:
        return pickle.load(handle)


def test_resume_without_an_interrupted_execution_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ethicsweep.cli", "sweep", str(_spec(tmp_path)), "--resume"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "--resume" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
