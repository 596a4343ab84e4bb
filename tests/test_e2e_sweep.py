"""End to end: `ethicsweep sweep` on real Adult data, small enough for CI, then the MLflow
store, the registry and the front are checked against independent computations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score

from ethicsweep.data import prepare
from ethicsweep.data.prepare import load
from ethicsweep.spec import DataSpec, parse_spec

pytestmark = pytest.mark.e2e

N_TRIALS = 6
RATIONALE = "Hiring <script>alert(1)</script> & lending: parity matters"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    spec = {
        "name": "ci-e2e",
        "seed": 3,
        "output_dir": str(root / "runs"),
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "governance": {"rationale": RATIONALE, "owner": "ci", "acceptable_risk": {"dp_gap": 0.1, "accuracy": 0.8}},
        "train": {
            "model": {"kind": "mlp", "hidden": 16},
            "training": {"epochs": 2, "batch_size": 1024, "lr": 0.003},
            "terms": [{"kind": "demographic_parity", "weight": 0.5}],
        },
        "search": {
            "searcher": "nsga2",
            "num_trials": N_TRIALS,
            "population_size": 3,
            "max_concurrent": 2,
            "space": {
                "terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 3.0, "log": True},
                "training.epochs": {"type": "int", "low": 2, "high": 3},
            },
        },
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ethicsweep.cli", "sweep", str(path)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = root / "runs" / "ci-e2e"
    (run_dir,) = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()]
    uri = f"sqlite:///{sweep_dir / 'mlflow.db'}"
    return {
        "spec": parse_spec(spec),
        "sweep_dir": sweep_dir,
        "uri": uri,
        "run_dir": run_dir,
        "client": MlflowClient(tracking_uri=uri, registry_uri=uri),
        "stdout": done.stdout,
        "trials": pd.read_csv(run_dir / "trials.csv"),
    }


def _runs(sweep: dict) -> list:
    client = sweep["client"]
    experiment = client.get_experiment_by_name("ci-e2e")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_one_parent_run_and_a_child_run_per_trial(sweep: dict) -> None:
    runs = _runs(sweep)
    parents = [r for r in runs if r.data.tags.get("ethicsweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == N_TRIALS
    assert {r.info.status for r in children} == {"FINISHED"}
    assert len({r.data.tags["ethicsweep.trial_id"] for r in children}) == N_TRIALS
    for run in children + parents:
        for tag in ("ethicsweep.spec_sha256", "ethicsweep.data_sha256", "ethicsweep.version", "ethicsweep.seed"):
            assert run.data.tags.get(tag), f"{tag} missing on {run.info.run_id}"
        assert run.data.tags["ethicsweep.seed"] == "3"


def test_child_runs_hold_params_and_per_epoch_metrics(sweep: dict) -> None:
    client = sweep["client"]
    children = [r for r in _runs(sweep) if r.data.tags.get("ethicsweep.role") == "trial"]
    for run in children:
        epochs = int(run.data.params["training.epochs"])
        assert epochs in (2, 3)
        assert 0.01 <= float(run.data.params["terms.demographic_parity.weight"]) <= 3.0
        assert run.data.params["model.hidden"] == "16"
        for key in ("val/accuracy", "val/dp_gap", "loss/bce", "loss/demographic_parity", "loss/total"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), key


def test_trials_csv_front_is_exactly_the_non_dominated_set(sweep: dict) -> None:
    trials = sweep["trials"]
    assert len(trials) == N_TRIALS and (trials["status"] == "ok").all()
    acc, gap = trials["val/accuracy"].to_numpy(), trials["val/dp_gap"].to_numpy()
    dominated = [
        any(acc[j] >= acc[i] and gap[j] <= gap[i] and (acc[j] > acc[i] or gap[j] < gap[i]) for j in range(len(acc)))
        for i in range(len(acc))
    ]
    assert list(trials["front_rank"] == 0) == [not d for d in dominated]


def _independent_test_metrics(version_dir: Path, spec) -> tuple[float, float]:
    """Rebuild the network by hand from the version's files and score the test split."""
    config = json.loads((version_dir / "train_config.json").read_text())
    weights = load_file(version_dir / "model.safetensors")
    data = prepare(spec.data, spec.seed)
    x = torch.as_tensor(data.test.X)
    hidden = torch.relu(x @ weights["0.weight"].T + weights["0.bias"])
    proba = torch.sigmoid(hidden @ weights["2.weight"].T + weights["2.bias"]).ravel().numpy()
    y_hat = (proba >= config["model"]["threshold"]).astype(int)
    frame = pd.DataFrame({"y_hat": y_hat, "group": data.test.groups})
    rates = frame.groupby("group")["y_hat"].mean()
    return accuracy_score(data.test.y, y_hat), float(rates.max() - rates.min())


def test_front_models_are_registered_with_test_metrics_that_reproduce(sweep: dict, tmp_path: Path) -> None:
    client, trials = sweep["client"], sweep["trials"]
    front = trials[trials["front_rank"] == 0]
    versions = client.search_model_versions("name='ci-e2e'")
    assert len(versions) == len(front) >= 1
    assert {v.tags["trial_id"] for v in versions} == set(front["trial_id"])
    model = client.get_registered_model("ci-e2e")
    assert set(model.aliases) == {f"candidate-{k}" for k in range(1, len(front) + 1)}
    for version in versions:
        for key in ("val/accuracy", "val/dp_gap", "test/accuracy", "test/dp_gap", "test/eo_gap", "test/leakage", "front_rank"):
            assert key in version.tags, key
        assert version.tags["governance.rationale"] == RATIONALE
        assert json.loads(version.tags["governance.acceptable_risk"]) == {"dp_gap": 0.1, "accuracy": 0.8}
        met = float(version.tags["test/dp_gap"]) <= 0.1 and float(version.tags["test/accuracy"]) >= 0.8
        assert version.tags["acceptable_risk_met"] == str(met).lower()
        local = client.download_artifacts(version.run_id, "model", str(tmp_path / str(version.version)))
        accuracy, dp_gap = _independent_test_metrics(Path(local) / "data" / "ethicsweep", sweep["spec"])
        assert float(version.tags["test/accuracy"]) == pytest.approx(accuracy, abs=1e-5)
        assert float(version.tags["test/dp_gap"]) == pytest.approx(dp_gap, abs=1e-5)


CHAMPION_SCRIPT = """
import json, sys
import mlflow.pyfunc
from ethicsweep.data.prepare import load
from ethicsweep.spec import DataSpec
model = mlflow.pyfunc.load_model("models:/ci-e2e@champion")
table = load(DataSpec(dataset="adult"))
test = table.frame[table.is_test]
out = model.predict(test)
json.dump({"decision": out["decision"].tolist(), "y": (test[table.label] == table.positive_label).astype(int).tolist(),
           "sex": test["sex"].tolist()}, sys.stdout)
"""


def test_select_sets_a_champion_that_reproduces_its_test_metrics_in_a_fresh_process(sweep: dict) -> None:
    client = sweep["client"]
    done = subprocess.run(
        [sys.executable, "-m", "ethicsweep.cli", "select", str(sweep["sweep_dir"]), "--where", "dp_gap <= 0.2", "--prefer", "accuracy"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    versions = client.search_model_versions("name='ci-e2e'")
    eligible = [v for v in versions if float(v.tags["test/dp_gap"]) <= 0.2]
    expected = max(eligible, key=lambda v: (float(v.tags["test/accuracy"]), -int(v.version)))
    champion = client.get_model_version_by_alias("ci-e2e", "champion")
    assert champion.version == expected.version
    env = {**os.environ, "MLFLOW_TRACKING_URI": sweep["uri"], "MLFLOW_REGISTRY_URI": sweep["uri"]}
    loaded = subprocess.run([sys.executable, "-c", CHAMPION_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    scored = pd.DataFrame(json.loads(loaded.stdout))
    rates = scored.groupby("sex")["decision"].mean()
    assert accuracy_score(scored["y"], scored["decision"]) == float(champion.tags["test/accuracy"])
    assert float(rates.max() - rates.min()) == pytest.approx(float(champion.tags["test/dp_gap"]), abs=1e-12)


def test_select_with_unmeetable_rules_exits_1_and_names_the_closest(sweep: dict) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ethicsweep.cli", "select", str(sweep["sweep_dir"]), "--where", "accuracy >= 0.99", "--alias", "never"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "no candidate meets every rule" in done.stderr and "Closest: candidate-" in done.stderr
    assert "never" not in sweep["client"].get_registered_model("ci-e2e").aliases


def _audit(sweep: dict, data: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ethicsweep.cli", "audit", "ci-e2e@candidate-1", str(data), "--tracking-uri", sweep["uri"], *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_audit_passes_the_test_split_and_fails_it_after_labels_of_one_group_are_flipped(sweep: dict, tmp_path: Path) -> None:
    table = load(DataSpec(dataset="adult"))
    test = table.frame[table.is_test].copy()
    test.to_csv(tmp_path / "test.csv", index=False)
    done = _audit(sweep, tmp_path / "test.csv", "--json", str(tmp_path / "audit.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {c["metric"]: c for c in json.loads((tmp_path / "audit.json").read_text())["checks"]}
    version = sweep["client"].get_model_version_by_alias("ci-e2e", "candidate-1")
    assert checks["accuracy"]["observed"] == float(version.tags["test/accuracy"])

    female = np.flatnonzero(test["sex"].to_numpy() == "Female")
    flipped = np.random.default_rng(0).choice(female, size=len(female) // 5, replace=False)
    labels = test[table.label].to_numpy().copy()
    labels[flipped] = np.where(labels[flipped] == table.positive_label, "<=50K", table.positive_label)
    test[table.label] = labels
    test.to_csv(tmp_path / "flipped.csv", index=False)
    done = _audit(sweep, tmp_path / "flipped.csv")
    assert done.returncode == 1 and "breach:" in done.stderr and "accuracy (" in done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize(
    "extra, message",
    [(("--tolerance-for", "gap=0.1"), "unknown metric 'gap'"), (("--tolerance-for", "dp_gap=-1"), "METRIC=VALUE with VALUE a number >= 0")],
)
def test_audit_mistakes_are_one_line(sweep: dict, tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    done = _audit(sweep, tmp_path / "absent.csv", *extra)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_report_is_self_contained(sweep: dict) -> None:
    page = (sweep["run_dir"] / "report.html").read_text()
    assert "ethicsweep report: ci-e2e" in page
    assert "<script src=" not in page  # plotly.js is inline: the page opens offline
    assert "Plotly.newPlot" in page
    assert "<script>alert(1)</script>" not in page  # user text is escaped
    assert "Hiring &lt;script&gt;alert(1)&lt;/script&gt; &amp; lending" in page
    assert "report.html" in sweep["stdout"]


def test_a_bad_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsearch: {num_trials: -3}\n")
    done = subprocess.run([sys.executable, "-m", "ethicsweep.cli", "sweep", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.num_trials" in lines[0] and "-3" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_ablate_retrains_without_each_term_and_reproduces_the_full_model(sweep: dict, tmp_path: Path) -> None:
    client = sweep["client"]
    command = [sys.executable, "-m", "ethicsweep.cli", "ablate", "ci-e2e@candidate-1", "--tracking-uri", sweep["uri"],
               "--csv", str(tmp_path / "ablation.csv")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "ablation.csv").set_index("metric")
    assert list(table.columns) == ["better", "full", "without demographic_parity", "change demographic_parity"]
    version = client.get_model_version_by_alias("ci-e2e", "candidate-1")
    # the full model, retrained in a plain loop, reproduces what its Ray trial recorded
    for metric in ("accuracy", "dp_gap", "eo_gap", "roc_auc"):
        assert table.loc[metric, "full"] == pytest.approx(float(version.tags[f"test/{metric}"]), abs=1e-6), metric
        change = table.loc[metric, "without demographic_parity"] - table.loc[metric, "full"]
        assert table.loc[metric, "change demographic_parity"] == pytest.approx(change, abs=1e-12)
    assert version.tags["ablation"] == "without demographic_parity"
    logged = client.download_artifacts(version.run_id, "ablation/ablation.csv", str(tmp_path / "logged"))
    assert pd.read_csv(logged).equals(pd.read_csv(tmp_path / "ablation.csv"))
    page = (sweep["run_dir"] / "report.html").read_text()
    assert f"<h4>version {version.version} (candidate-1" in page and "change demographic_parity" in page
