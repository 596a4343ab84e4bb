"""End to end: sweeps on real Adult data through the other searchers, constraints, a warm
start and multi-objective early stopping; checked against the trials' own records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

BOUND = 0.08
INITIAL = {"terms.demographic_parity.weight": 0.01, "training.epochs": 4}


def _sweep(root: Path, name: str, search: dict, terms: list[dict] | None = None) -> tuple[pd.DataFrame, MlflowClient]:
    spec = {
        "name": name, "seed": 1, "output_dir": str(root / "runs"),
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "logistic"}, "training": {"epochs": 2, "batch_size": 2048, "lr": 0.01},
                  "terms": terms or [{"kind": "demographic_parity", "weight": 0.5}]},
        "search": {"space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 5.0, "log": True},
                             "training.epochs": {"type": "int", "low": 1, "high": 4}}, **search},
    }  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run([sys.executable, "-m", "ethicsweep.cli", "sweep", str(path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = [p for p in (root / "runs" / name).iterdir() if p.is_dir() and p.name[0].isdigit()]
    uri = f"sqlite:///{root / 'runs' / name / 'mlflow.db'}"
    return pd.read_csv(run_dir / "trials.csv"), MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def constrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, MlflowClient]:
    search = {"searcher": "tpe", "num_trials": 8, "max_concurrent": 1, "constraints": [f"dp_gap <= {BOUND}"],
              "initial": [INITIAL], "scheduler": {"kind": "mo_asha", "grace_period": 1, "reduction_factor": 2}}  # fmt: skip
    return _sweep(tmp_path_factory.mktemp("constrained"), "ci-constrained", search)


def test_the_warm_start_configuration_is_tried(constrained: tuple[pd.DataFrame, MlflowClient]) -> None:
    trials, _ = constrained
    assert len(trials) == 8 and (trials["status"] == "ok").all()
    params = [json.loads(p) for p in trials["params"]]
    assert INITIAL in params


def test_infeasible_trials_are_kept_off_the_front(constrained: tuple[pd.DataFrame, MlflowClient]) -> None:
    trials, client = constrained
    feasible = trials["val/dp_gap"] <= BOUND
    assert list(trials["feasible"]) == list(feasible)
    assert (~feasible).any(), "the test needs at least one trial that breaks the constraint"
    acc, gap = trials["val/accuracy"].to_numpy(), trials["val/dp_gap"].to_numpy()
    expected = [
        bool(feasible[i]) and not any(feasible[j] and acc[j] >= acc[i] and gap[j] <= gap[i] and (acc[j] > acc[i] or gap[j] < gap[i])
                                      for j in range(len(trials)))
        for i in range(len(trials))
    ]  # fmt: skip
    assert list(trials["front_rank"] == 0) == expected
    # one version per distinct front point (trials with the same objective values count once)
    front = trials[trials["front_rank"] == 0]
    registered = {v.tags["trial_id"] for v in client.search_model_versions("name='ci-constrained'")}
    assert registered <= set(front["trial_id"])
    points = {(a, g) for a, g in zip(front["val/accuracy"], front["val/dp_gap"])}
    assert len(registered) == len(points)


def test_early_stopping_cuts_some_trials_short(constrained: tuple[pd.DataFrame, MlflowClient]) -> None:
    trials, _ = constrained
    planned = [json.loads(p)["training.epochs"] for p in trials["params"]]
    trained = list(trials["epochs"])
    assert all(t <= p for t, p in zip(trained, planned))
    assert any(t < p for t, p in zip(trained, planned)), (trained, planned)


def test_a_pymoo_searcher_runs_a_whole_sweep_with_stakeholder_weights(tmp_path: Path) -> None:
    search = {"searcher": "pymoo-nsga2", "num_trials": 4, "population_size": 2, "max_concurrent": 2}
    weights = {"sex=Female": 2.0}
    trials, client = _sweep(tmp_path, "ci-pymoo", search, [{"kind": "demographic_parity", "weight": 0.5, "group_weights": weights}])
    assert len(trials) == 4 and (trials["status"] == "ok").all()
    runs = client.search_runs([client.get_experiment_by_name("ci-pymoo").experiment_id])
    children = [r for r in runs if r.data.tags.get("ethicsweep.role") == "trial"]
    assert len(children) == 4
    # group names are not MLflow keys: the mapping is one parameter, as JSON
    assert all(json.loads(r.data.params["terms.demographic_parity.group_weights"]) == weights for r in children)


def test_the_same_spec_and_seed_give_the_same_trials_on_cpu(tmp_path: Path) -> None:
    """Determinism (one trial at a time, so the searcher sees results in the same order):
    the same configurations, and validation metrics equal to 1e-9."""
    search = {"searcher": "nsga2", "num_trials": 4, "population_size": 2, "max_concurrent": 1}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, _ = _sweep(tmp_path / "a", "ci-determinism", search)
    again, _ = _sweep(tmp_path / "b", "ci-determinism", search)
    assert list(first["params"]) == list(again["params"])
    for column in ("val/accuracy", "val/dp_gap", "val/roc_auc", "loss/bce"):
        assert first[column].to_numpy() == pytest.approx(again[column].to_numpy(), abs=1e-9), column
