"""ethicsweep against fairlearn's reductions and a post-processing reference, side by side:
the same data set, the same seeded splits and preprocessed features, one run, one machine.

Run from the repository root (fairlearn: ``.venv/bin/pip install fairlearn``, or
``pip install -e ".[bench]"``):

    python benchmarks/fairlearn_compare.py --dataset adult --budget 48
    python benchmarks/fairlearn_compare.py --dataset compas --budget 48
    python benchmarks/fairlearn_compare.py --dataset adult --quick     # a small smoke run

Writes (or replaces) the data set's section of ``benchmarks/RESULTS-fairlearn.md`` (with
``--quick``: ``RESULTS-fairlearn-quick.md``), PNG figures of the test fronts beside it,
and the raw numbers as JSON. Methods, for each fairness criterion c in {dp_gap, eo_gap}:

- ethicsweep: a real sweep through the CLI (``ethicsweep sweep SPEC.yaml``: Ray Tune,
  Optuna NSGA-II, MLflow) of ``--budget`` trials, an MLP with the matching fairness penalty
  (demographic parity for dp_gap, equalized odds for eo_gap), objectives accuracy and c on
  validation; its registered front is scored on test. The models do not read the sensitive
  attribute (``sensitive_as_feature: false``, ethicsweep's default).
- plain Optuna: the same trainable (``ethicsweep.trainables.train.train``) and search space
  in a loop driven by Optuna's NSGA-II, no Ray, same budget and population: the difference
  in wall time is Ray's (and MLflow's, and the CLI's) overhead.
- fairlearn ``ExponentiatedGradient`` and ``GridSearch`` with ``DemographicParity`` /
  ``EqualizedOdds`` over scikit-learn ``LogisticRegression`` and ``MLPClassifier``, on the
  same features (``data.train.X`` as float64); a sweep of the bound (EG) or the grid of
  Lagrange multipliers (GridSearch: every grid point's model) traces the front. EG's
  classifier is randomized: its ``predict(X, random_state=0)`` is reported (seeded, so the
  numbers repeat), and the deterministic rule ``P(ŷ=1) >= 0.5`` on its ``_pmf_predict``
  as a second row.
- post-processing reference: group-specific thresholds on the best unconstrained model
  (the most accurate on validation of: ethicsweep's MLP without terms, sklearn LR, sklearn
  MLP), chosen on validation — for each target gap the most accurate thresholds whose
  validation gap is within it — and evaluated on test. It reads the sensitive attribute at
  prediction time; the other methods do not.

Every method's candidate models are treated alike: the models non-dominated on validation
(error, c) are kept, as ethicsweep's front is, and their test (error, c) give the
hypervolume. Reference point: (majority-class error of the test split, gap 0.2). Metrics
are ethicsweep's own (``GroupRates``: groups with fewer than ``min_group_size`` rows in a
split are left out of its gaps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

import ethicsweep
from ethicsweep.analysis.pareto import front_ranks, hypervolume, minimization_form
from ethicsweep.data import PreparedData, Split, prepare
from ethicsweep.objectives.metrics import GroupRates, dp_gap, eo_gap
from ethicsweep.spec import DataSpec, TrainConfig
from ethicsweep.trainables.checkpoint import MODEL_FILE, load_model
from ethicsweep.trainables.scoring import outputs, test_metrics
from ethicsweep.trainables.train import train

SEED = 0
HERE = Path(__file__).resolve().parent
GAP_REFERENCE = 0.2
SENSITIVE = {"adult": "sex", "compas": "race"}
CRITERIA = ("dp", "eo")
GAP = {"dp": "dp_gap", "eo": "eo_gap"}
TERM = {"dp": "demographic_parity", "eo": "equalized_odds"}

# Hand check of the hypervolume code path used below (ethicsweep.analysis.pareto.hypervolume,
# minimization form (error, gap)): points (0.10, 0.10) and (0.15, 0.05) against the
# reference (0.2, 0.2) dominate [0.10, 0.2]x[0.10, 0.2] (area 0.1 * 0.1 = 0.01) and
# [0.15, 0.2]x[0.05, 0.2] (0.05 * 0.15 = 0.0075), which overlap in [0.15, 0.2]x[0.10, 0.2]
# (0.05 * 0.1 = 0.005): 0.01 + 0.0075 - 0.005 = 0.0125. A point beyond the reference
# (0.25, 0.01) adds nothing; neither does a dominated one (0.16, 0.12).
assert math.isclose(hypervolume(np.array([[0.10, 0.10], [0.15, 0.05]]), np.array([0.2, 0.2])), 0.0125, rel_tol=1e-12)
assert math.isclose(
    hypervolume(np.array([[0.10, 0.10], [0.15, 0.05], [0.25, 0.01], [0.16, 0.12]]), np.array([0.2, 0.2])), 0.0125, rel_tol=1e-12
)


# ---------------------------------------------------------------------------------------------
# settings: full and --quick

@dataclass(frozen=True)
class Settings:
    budget: int
    population: int
    epochs: tuple[int, int]  # the searched range of training.epochs (ethicsweep and plain Optuna)
    grid_lr: int  # GridSearch grid size over LogisticRegression
    grid_mlp: int  # ... over MLPClassifier
    eg_bounds_lr: tuple[float, ...]
    eg_bounds_mlp: tuple[float, ...]
    eg_max_iter_lr: int
    eg_max_iter_mlp: int
    mlp_epochs: int  # MLPClassifier max_iter (epochs)
    dp_epsilons: tuple[float, ...]
    dp_epochs: int
    targets: int  # post-processing: number of target gaps in (0, 0.2]


def settings(dataset: str, budget: int | None, quick: bool) -> Settings:
    if quick:
        return Settings(budget or 8, 4, (2, 3), 5, 3, (0.02, 0.1), (0.05,), 10, 5, 5, (1.0, 8.0), 3, 8)
    n = budget or 48
    grid_mlp = 11 if dataset == "adult" else 21
    return Settings(
        n, 16 if n >= 32 else 8, (6, 16), 41, grid_mlp,
        (0.002, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1),
        (0.01, 0.03, 0.08) if dataset == "adult" else (0.005, 0.01, 0.02, 0.04, 0.07, 0.1),
        50, 20 if dataset == "adult" else 50, 20 if dataset == "adult" else 100,
        (0.5, 1.0, 3.0, 8.0), 30, 40,
    )  # fmt: skip


def base_train(dataset: str, criterion: str) -> dict[str, Any]:
    """ethicsweep's base training config and searched space (shared by the CLI sweep and
    plain Optuna)."""
    if dataset == "adult":
        model, training = {"kind": "mlp", "hidden": 64}, {"epochs": 10, "batch_size": 512, "lr": 0.002}
        lr = {"type": "float", "low": 0.001, "high": 0.005, "log": True}
        hidden = {"type": "int", "low": 32, "high": 128, "log": True}
    else:
        model, training = {"kind": "mlp", "hidden": 32}, {"epochs": 30, "batch_size": 256, "lr": 0.005}
        lr = {"type": "float", "low": 0.001, "high": 0.02, "log": True}
        hidden = {"type": "int", "low": 8, "high": 64, "log": True}
    return {
        "train": {"model": model, "training": training, "terms": [{"kind": TERM[criterion], "weight": 0.5}]},
        "space": {f"terms.{TERM[criterion]}.weight": {"type": "float", "low": 0.01, "high": 10.0, "log": True}, "training.lr": lr, "model.hidden": hidden},
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# metrics and fronts

@dataclass
class Candidate:
    """One model of one method: its validation and test (error, dp_gap, eo_gap)."""

    method: str
    criterion: str
    setting: str
    val: dict[str, float]
    test: dict[str, float]


@dataclass
class Method:
    name: str
    criterion: str
    seconds: float
    candidates: list[Candidate] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def rates(split: Split, y_hat: np.ndarray, data: PreparedData) -> dict[str, float]:
    r = GroupRates.compute(split.y, np.asarray(y_hat).astype(np.int64), split.groups, data.group_names, data.min_group_size)
    return {"error": float(np.mean(np.asarray(y_hat).astype(np.int64) != split.y.astype(np.int64))), "dp_gap": dp_gap(r), "eo_gap": eo_gap(r)}


def majority_error(split: Split) -> float:
    p = float(np.mean(split.y))
    return min(p, 1.0 - p)


def val_front(candidates: list[Candidate], gap: str) -> list[Candidate]:
    """The candidates non-dominated on validation (error, gap): the front each method offers."""
    if not candidates:
        return []
    frame = pd.DataFrame([{"error": c.val["error"], "gap": c.val[gap]} for c in candidates])
    ranks = front_ranks(frame, [("error", "min"), ("gap", "min")])
    return [c for c, r in zip(candidates, ranks) if r == 0]


def test_hypervolume(candidates: list[Candidate], gap: str, reference: np.ndarray) -> float:
    front = val_front(candidates, gap)
    if not front:
        return 0.0
    frame = pd.DataFrame([{"error": c.test["error"], "gap": c.test[gap]} for c in front])
    return hypervolume(minimization_form(frame, [("error", "min"), ("gap", "min")]), reference)


# ---------------------------------------------------------------------------------------------
# ethicsweep through its CLI

def ethicsweep_cli(data: PreparedData, dataset: str, criterion: str, s: Settings, work: Path) -> Method:
    base = base_train(dataset, criterion)
    name = f"bench-{dataset}-{criterion}"
    spec = {
        "name": name,
        "seed": SEED,
        "output_dir": str(work / "runs"),
        "data": {"dataset": dataset, "sensitive": [SENSITIVE[dataset]]},
        "train": base["train"],
        "search": {
            "searcher": "nsga2",
            "num_trials": s.budget,
            "population_size": s.population,
            "max_concurrent": 2,
            "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": GAP[criterion], "direction": "min"}],
            "space": {**base["space"], "training.epochs": {"type": "int", "low": s.epochs[0], "high": s.epochs[1]}},
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cli = Path(sys.executable).with_name("ethicsweep")
    command = [str(cli) if cli.exists() else sys.executable, *([] if cli.exists() else ["-m", "ethicsweep.cli"]), "sweep", str(path)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ethicsweep sweep failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    sweep_dir = work / "runs" / name
    (run_dir,) = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()]
    trials = pd.read_csv(run_dir / "trials.csv")
    candidates, registered = [], []
    base_config = TrainConfig.model_validate({**base["train"], "seed": SEED})
    for _, row in trials[trials["status"] == "ok"].iterrows():
        config = base_config.with_params(json.loads(row["params"]))
        model = load_model(Path(row["checkpoint"]) / MODEL_FILE, config.model, data.train.X.shape[1])
        val_hat = outputs(model, data.validation).proba >= config.model.threshold
        test_hat = outputs(model, data.test).proba >= config.model.threshold
        c = Candidate("ethicsweep", criterion, row["params"], rates(data.validation, val_hat, data), rates(data.test, test_hat, data))
        # the checkpoint reproduces the sweep's own validation numbers
        assert math.isclose(c.val["error"], 1 - row["val/accuracy"], abs_tol=1e-9), (c.val, row["val/accuracy"])
        candidates.append(c)
        if row["front_rank"] == 0:
            registered.append(c)
    wall = re.search(r"in (\d+) s\.", done.stdout)
    hv_logged = registered_hypervolume(sweep_dir, name)
    return Method(
        "ethicsweep (CLI: Ray Tune + Optuna NSGA-II + MLflow)", criterion, seconds, candidates,
        note=f"{len(trials)} trials ({int((trials['status'] == 'ok').sum())} ok), {len(registered)} on the registered front; "
        f"wall time of the whole command (Ray start, sweep, test scoring, MLflow registration, report); the sweep itself: "
        f"{wall.group(1) if wall else '?'} s",
        extra={"sweep_seconds_reported": int(wall.group(1)) if wall else None, "hypervolume_test_logged": hv_logged,
               "registered": registered},
    )  # fmt: skip


def registered_hypervolume(sweep_dir: Path, name: str) -> float | None:
    """The test hypervolume the sweep itself logged on its parent run (accuracy, gap;
    reference: the majority rate, 0.2): a cross-check of the computation here."""
    try:
        from mlflow.tracking import MlflowClient

        uri = f"sqlite:///{sweep_dir / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id], "tags.`ethicsweep.role` = 'sweep'")
        return float(runs[0].data.metrics["hypervolume/test"])
    except Exception as error:  # noqa: BLE001 - a cross-check only
        print(f"  (could not read the logged hypervolume: {error})", flush=True)
        return None


# ---------------------------------------------------------------------------------------------
# plain Optuna, no Ray

def plain_optuna(data: PreparedData, dataset: str, criterion: str, s: Settings) -> Method:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = base_train(dataset, criterion)
    space = {**base["space"], "training.epochs": {"type": "int", "low": s.epochs[0], "high": s.epochs[1]}}
    base_config = TrainConfig.model_validate({**base["train"], "seed": SEED})
    candidates: list[Candidate] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        params = {}
        for path, p in space.items():
            suggest = trial.suggest_float if p["type"] == "float" else trial.suggest_int
            params[path] = suggest(path, p["low"], p["high"], log=p.get("log", False))
        config = base_config.with_params(params)
        state = train(config, data)
        val = state.history[-1].validation
        test_hat = outputs(state.model, data.test).proba >= config.model.threshold
        val_hat = outputs(state.model, data.validation).proba >= config.model.threshold
        candidates.append(Candidate("plain Optuna", criterion, json.dumps(params), rates(data.validation, val_hat, data), rates(data.test, test_hat, data)))
        return val["accuracy"], val[GAP[criterion]]

    sampler = optuna.samplers.NSGAIISampler(population_size=s.population, seed=SEED)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    started = time.perf_counter()
    # two trials at a time, as the sweep runs two (one per core); torch uses one thread each
    study.optimize(objective, n_trials=s.budget, n_jobs=2)
    return Method("plain Optuna NSGA-II, same trainable, no Ray", criterion, time.perf_counter() - started, candidates,
                  note=f"{s.budget} trials, 2 threads (n_jobs=2), no MLflow")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# fairlearn

def _estimators(s: Settings, dataset: str) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    hidden = 64 if dataset == "adult" else 32
    return {
        "LR": lambda: LogisticRegression(solver="liblinear"),
        "MLP": lambda: MLPClassifier(hidden_layer_sizes=(hidden,), batch_size=512 if dataset == "adult" else 256,
                                     learning_rate_init=0.002, max_iter=s.mlp_epochs, random_state=SEED),
    }  # fmt: skip


def _moment(criterion: str, bound: float | None = None):
    from fairlearn.reductions import DemographicParity, EqualizedOdds

    cls = DemographicParity if criterion == "dp" else EqualizedOdds
    return cls() if bound is None else cls(difference_bound=bound)


def fairlearn_grid(data: PreparedData, criterion: str, learner: str, s: Settings, dataset: str) -> Method:
    from fairlearn.reductions import GridSearch

    X, Xv, Xt = (split.X.astype(np.float64) for split in (data.train, data.validation, data.test))
    size = s.grid_lr if learner == "LR" else s.grid_mlp
    started = time.perf_counter()
    search = GridSearch(_estimators(s, dataset)[learner](), _moment(criterion), grid_size=size)
    search.fit(X, data.train.y.astype(np.int64), sensitive_features=data.train.groups)
    candidates = [
        Candidate(f"GridSearch-{learner}", criterion, f"grid point {i}", rates(data.validation, p.predict(Xv), data), rates(data.test, p.predict(Xt), data))
        for i, p in enumerate(search.predictors_)
    ]
    return Method(f"fairlearn GridSearch, {learner}", criterion, time.perf_counter() - started, candidates,
                  note=f"grid_size {size} ({len(search.predictors_)} models), every grid point's model a candidate")  # fmt: skip


def fairlearn_eg(data: PreparedData, criterion: str, learner: str, s: Settings, dataset: str) -> tuple[Method, Method]:
    from fairlearn.reductions import ExponentiatedGradient

    X, Xv, Xt = (split.X.astype(np.float64) for split in (data.train, data.validation, data.test))
    bounds = s.eg_bounds_lr if learner == "LR" else s.eg_bounds_mlp
    max_iter = s.eg_max_iter_lr if learner == "LR" else s.eg_max_iter_mlp
    seeded, pmf = [], []
    started = time.perf_counter()
    for bound in bounds:
        eg = ExponentiatedGradient(_estimators(s, dataset)[learner](), _moment(criterion, bound), max_iter=max_iter)
        eg.fit(X, data.train.y.astype(np.int64), sensitive_features=data.train.groups)
        seeded.append(Candidate(f"EG-{learner}", criterion, f"bound {bound}",
                                rates(data.validation, eg.predict(Xv, random_state=SEED), data), rates(data.test, eg.predict(Xt, random_state=SEED), data)))  # fmt: skip
        pmf.append(Candidate(f"EG-{learner}-pmf", criterion, f"bound {bound}",
                             rates(data.validation, eg._pmf_predict(Xv)[:, 1] >= 0.5, data), rates(data.test, eg._pmf_predict(Xt)[:, 1] >= 0.5, data)))  # fmt: skip
    seconds = time.perf_counter() - started
    note = f"bounds {list(bounds)}, max_iter {max_iter}"
    return (
        Method(f"fairlearn ExponentiatedGradient, {learner} (randomized predict, random_state=0)", criterion, seconds, seeded, note=note),
        Method(f"fairlearn ExponentiatedGradient, {learner} (deterministic: P(ŷ=1) >= 0.5)", criterion, seconds, pmf, note="same fits as the row above"),
    )


# ---------------------------------------------------------------------------------------------
# post-processing: group-specific thresholds on the best unconstrained model

def unconstrained(data: PreparedData, dataset: str, s: Settings) -> tuple[str, dict[str, np.ndarray], dict[str, float], float]:
    """The most accurate model on validation among three unconstrained ones; its scores on
    validation and test, every model's validation accuracy, and the seconds all took."""
    started = time.perf_counter()
    base = base_train(dataset, "dp")["train"]
    config = TrainConfig.model_validate({**base, "terms": [], "seed": SEED})
    state = train(config, data)
    scores = {"ethicsweep MLP, no terms": {k: outputs(state.model, getattr(data, k)).proba for k in ("validation", "test")}}
    X = data.train.X.astype(np.float64)
    for learner, make in _estimators(s, dataset).items():
        model = make().fit(X, data.train.y.astype(np.int64))
        scores[f"sklearn {learner}"] = {k: model.predict_proba(getattr(data, k).X.astype(np.float64))[:, 1] for k in ("validation", "test")}
    accuracy = {name: float(np.mean((v["validation"] >= 0.5) == data.validation.y.astype(bool))) for name, v in scores.items()}
    best = max(accuracy, key=accuracy.get)
    return best, scores[best], accuracy, time.perf_counter() - started


def _group_tables(score: np.ndarray, split: Split, group: int, steps: int = 200) -> dict[str, np.ndarray]:
    """For candidate thresholds of one group: correct decisions, selection rate, TPR, FPR."""
    mask = split.groups == group
    s, y = score[mask], split.y[mask].astype(bool)
    thresholds = np.unique(np.concatenate([np.quantile(s, np.linspace(0, 1, steps)), [0.5, np.inf]]))
    decide = s[None, :] >= thresholds[:, None]
    positives, negatives = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return {
        "t": thresholds,
        "correct": (decide == y[None, :]).sum(axis=1).astype(np.float64),
        "sr": decide.mean(axis=1),
        "tpr": (decide & y[None, :]).sum(axis=1) / positives,
        "fpr": (decide & ~y[None, :]).sum(axis=1) / negatives,
    }


def choose_thresholds(score: np.ndarray, split: Split, data: PreparedData, criterion: str, target: float) -> np.ndarray | None:
    """Per-group thresholds with the most correct validation decisions whose gap (selection
    rates for dp; TPR and FPR for eo) is within ``target`` on ``split``; a group left out
    of the gaps (fewer than min_group_size rows) gets its own most accurate threshold.
    Every feasible set has its rates in some window [r, r + target]; for each window on a
    grid the groups decouple, so the best threshold per group is exact for that window."""
    k = len(data.group_names)
    counts = np.bincount(split.groups, minlength=k)
    tables = {g: _group_tables(score, split, g) for g in range(k) if counts[g] > 0}
    chosen = np.full(k, 0.5)
    for g, tab in tables.items():
        chosen[g] = tab["t"][np.argmax(tab["correct"])]
    included = [g for g in tables if counts[g] >= data.min_group_size]
    grid = np.linspace(0.0, 1.0, 201)
    if criterion == "dp":
        total = np.zeros(len(grid))
        picks = {}
        for g in included:
            tab = tables[g]
            ok = (tab["sr"][None, :] >= grid[:, None] - 1e-12) & (tab["sr"][None, :] <= grid[:, None] + target + 1e-12)
            value = np.where(ok, tab["correct"][None, :], -np.inf)
            picks[g] = np.argmax(value, axis=1)
            total = total + value.max(axis=1)
        if not np.isfinite(total).any():
            return None
        w = int(np.argmax(total))
        for g in included:
            chosen[g] = tables[g]["t"][picks[g][w]]
        return chosen
    coarse = np.linspace(0.0, 1.0, 101)
    a, b = coarse[:, None, None], coarse[None, :, None]
    total = np.zeros((len(coarse), len(coarse)))
    picks = {}
    for g in included:
        tab = tables[g]
        tpr, fpr = tab["tpr"][None, None, :], tab["fpr"][None, None, :]
        ok = (tpr >= a - 1e-12) & (tpr <= a + target + 1e-12) & (fpr >= b - 1e-12) & (fpr <= b + target + 1e-12)
        value = np.where(ok, tab["correct"][None, None, :], -np.inf)
        picks[g] = np.argmax(value, axis=2)
        total = total + value.max(axis=2)
    if not np.isfinite(total).any():
        return None
    i, j = np.unravel_index(int(np.argmax(total)), total.shape)
    for g in included:
        chosen[g] = tables[g]["t"][picks[g][i, j]]
    return chosen


def postprocessing(data: PreparedData, criterion: str, best: str, scores: dict[str, np.ndarray], s: Settings, base_seconds: float) -> Method:
    started = time.perf_counter()
    candidates = []
    for target in np.linspace(0.0, GAP_REFERENCE, s.targets + 1):
        thresholds = choose_thresholds(scores["validation"], data.validation, data, criterion, float(target))
        if thresholds is None:
            continue
        decide = {k: scores[k] >= thresholds[getattr(data, k).groups] for k in ("validation", "test")}
        candidates.append(Candidate("post-processing", criterion, f"target {target:.3f}: thresholds {np.round(thresholds, 4).tolist()}",
                                    rates(data.validation, decide["validation"], data), rates(data.test, decide["test"], data)))  # fmt: skip
    seconds = time.perf_counter() - started
    return Method("post-processing: group thresholds on the best unconstrained model (reads the sensitive attribute)", criterion,
                  seconds + base_seconds, candidates,
                  note=f"base model: {best}; {len(candidates)} target gaps in [0, {GAP_REFERENCE}]; time includes training the 3 base models ({base_seconds:.0f} s)")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# DP-SGD

def dp_sgd_curve(data: PreparedData, s: Settings) -> list[dict[str, float]]:
    setting = {"model": {"kind": "mlp", "hidden": 16}, "training": {"epochs": s.dp_epochs, "batch_size": 4096, "lr": 0.02}, "seed": SEED}
    rows = []
    for eps in (math.inf, *s.dp_epsilons):
        privacy = {} if math.isinf(eps) else {"privacy": {"dp_sgd": True, "target_epsilon": eps, "delta": 1e-5, "max_grad_norm": 1.0}}
        config = TrainConfig.model_validate({**setting, **privacy})
        started = time.perf_counter()
        state = train(config, data)
        values = test_metrics(state.model, config, data, epsilon=state.epsilon()).values
        rows.append({"target_epsilon": eps, "epsilon": values["epsilon"], "accuracy": values["accuracy"], "dp_gap": values["dp_gap"],
                     "seconds": time.perf_counter() - started})  # fmt: skip
        print(f"  DP-SGD target ε {eps}: test accuracy {values['accuracy']:.4f}, ε {values['epsilon']:.3f}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# report

def machine() -> dict[str, Any]:
    packages = ("ethicsweep", "torch", "ray", "optuna", "mlflow", "fairlearn", "scikit-learn", "numpy", "pandas", "opacus", "pymoo")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        **{name: version(name) for name in packages},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def figure(path: Path, methods: list[Method], criterion: str, reference: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    markers = "osD^v<>pXh*"
    for i, m in enumerate(methods):
        front = val_front(m.candidates, GAP[criterion])
        if not front:
            continue
        pts = np.array(sorted((c.test[GAP[criterion]], c.test["error"]) for c in front))
        label = m.name.split(" (")[0] if "pmf" not in m.candidates[0].method else m.name.replace("fairlearn ", "")
        # every validation-front model as a marker; the line: the staircase of those not
        # dominated on test, which bounds the area the hypervolume measures
        keep = front_ranks(pd.DataFrame({"gap": pts[:, 0], "error": pts[:, 1]}), [("gap", "min"), ("error", "min")]) == 0
        stairs = pts[keep]
        line = ax.step(stairs[:, 0], stairs[:, 1], where="post", linewidth=1.2, marker=markers[i % len(markers)], markersize=4, label=label)[0]
        ax.plot(pts[:, 0], pts[:, 1], marker=markers[i % len(markers)], linestyle="none", markersize=4, alpha=0.8, color=line.get_color())
    inside = np.array([c.test["error"] for m in methods for c in val_front(m.candidates, GAP[criterion]) if c.test[GAP[criterion]] <= reference[1]])
    lowest = float(inside.min()) if len(inside) else 0.0
    top = min(reference[0] + 0.003, float(np.quantile(inside, 0.9)) + 0.005) if len(inside) else reference[0] + 0.003
    ax.set_ylim(lowest - 0.003, top)
    ax.set_xlim(-0.005, reference[1] + 0.005)
    if top < reference[0]:
        title += f" (error axis cut at {top:.3f})"
    else:
        ax.axhline(reference[0], color="grey", linestyle=":", linewidth=1)
    ax.axvline(reference[1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"test {GAP[criterion]}")
    ax.set_ylabel("test error")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def dp_figure(path: Path, rows: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    private = [r for r in rows if math.isfinite(r["target_epsilon"])]
    plain = [r for r in rows if not math.isfinite(r["target_epsilon"])]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([r["epsilon"] for r in private], [r["accuracy"] for r in private], marker="o", label="DP-SGD")
    for r in plain:
        ax.axhline(r["accuracy"], color="grey", linestyle="--", label="non-private")
    ax.set_xscale("log")
    ax.set_xticks([r["epsilon"] for r in private], [f"{r['target_epsilon']:g}" for r in private])
    ax.minorticks_off()
    ax.set_xlabel("ε spent (δ = 1e-5)")
    ax.set_ylabel("Adult test accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def section(results: dict[str, Any], methods: list[Method], figures: dict[str, str]) -> str:
    d = results["dataset"]
    s = results["settings"]
    ref_error = results["reference_error"]
    lines = [
        f"<!-- section:{d} -->",
        f"## {d.capitalize()} (sensitive: {SENSITIVE[d]})",
        "",
        f"Command: `{results['command']}` — {results['finished']}, total wall time {results['wall_seconds']:.0f} s.",
        "",
        (f"Load average (1, 5, 15 min) at the start: {results['load_start']}; at the end: {results['load_end']} "
         f"({os.cpu_count()} cores; the benchmark's own processes count towards it). "
         + ("The machine was shared with other work: wall times are noisy. " if float(results["load_start"].split(",")[0]) > 1.5 else "")
         + "All methods ran in the same run, one after another."),
        "",
        "Machine and versions: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()) + ".",
        "",
        *([results["note"], ""] if results.get("note") else []),
        f"Splits (seed {SEED}, ethicsweep's own, stratified on group × label): {results['rows']}; groups {results['groups']} "
        f"(groups with fewer than {results['min_group_size']} rows in a split are left out of that split's gaps). "
        f"Features: {results['features']} preprocessed columns (`data.train.X`), the sensitive attribute not among them.",
        "",
        f"Hypervolume: area dominated in (test error, test gap), both minimized, bounded by the reference point "
        f"(error {ref_error:.4f} = the majority-class error of the test split, gap {GAP_REFERENCE}); "
        "computed with `ethicsweep.analysis.pareto.hypervolume` (pymoo HV) on each method's models that are non-dominated on "
        "validation (error, gap) — the same rule ethicsweep uses for its registered front. Higher is better; "
        "the maximum possible is "
        f"{ref_error * GAP_REFERENCE:.4f}.",
        "",
        f"Budget: ethicsweep and plain Optuna {s['budget']} trials per criterion (NSGA-II, population {s['population']}; "
        f"searched: the fairness penalty weight [0.01, 10] (log), lr, hidden width, epochs {list(s['epochs'])}); "
        f"GridSearch grid_size {s['grid_lr']} (LR) / {s['grid_mlp']} (MLP); ExponentiatedGradient bounds {list(s['eg_bounds_lr'])} "
        f"(LR, max_iter {s['eg_max_iter_lr']}) / {list(s['eg_bounds_mlp'])} (MLP, max_iter {s['eg_max_iter_mlp']}); "
        f"sklearn MLPClassifier max_iter {s['mlp_epochs']} epochs; post-processing {s['targets'] + 1} target gaps.",
        "",
    ]
    gs_names = {c: [m for m in methods if m.criterion == c and m.name.startswith("fairlearn GridSearch")] for c in CRITERIA}
    pp = {c: next(m for m in methods if m.criterion == c and m.name.startswith("post-processing")) for c in CRITERIA}
    hv = results["hv"]
    for c in CRITERIA:
        gap = GAP[c]
        best_gs = max(gs_names[c], key=lambda m: hv[c][m.name])
        lines += [
            f"### (error, {gap}) — models trained for {'demographic parity' if c == 'dp' else 'equalized odds'}",
            "",
            f"![test fronts, {gap}]({figures[c]})",
            "",
            f"| method | test HV | ÷ best GridSearch ({best_gs.name.split(', ')[1]}) | ÷ post-processing | wall s | models (val front) | best test error | at {gap} | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for m in (m for m in methods if m.criterion == c):
            front = val_front(m.candidates, gap)
            top = min(front, key=lambda x: x.test["error"]) if front else None
            h = hv[c][m.name]
            lines.append(
                f"| {m.name} | {h:.5f} | {h / hv[c][best_gs.name]:.3f}× | {h / hv[c][pp[c].name]:.3f}× | {m.seconds:.0f} | "
                f"{len(m.candidates)} ({len(front)}) | {top.test['error']:.4f} | {top.test[gap]:.4f} | {m.note} |"
                if top else f"| {m.name} | 0 | | | {m.seconds:.0f} | 0 | | | {m.note} |"
            )
        es = next(m for m in methods if m.criterion == c and m.name.startswith("ethicsweep"))
        logged = es.extra.get("hypervolume_test_logged")
        if logged is not None:
            first: dict[tuple[float, float], Candidate] = {}
            for x in val_front(es.candidates, gap):
                first.setdefault((x.val["error"], x.val[gap]), x)
            frame = pd.DataFrame([{"error": x.test["error"], "gap": x.test[gap]} for x in first.values()])
            deduped = hypervolume(minimization_form(frame, [("error", "min"), ("gap", "min")]), np.array([results["reference_error"], GAP_REFERENCE]))
            lines += ["", f"Cross-check: the sweep's own logged `hypervolume/test` (accuracy, {gap}; reference majority rate, 0.2) "
                          f"is {logged:.5f}; recomputed here from the checkpoints with the sweep's rule (one model per distinct "
                          f"validation point, the earliest trial): {deduped:.5f}. The tables keep every tied model, for every method "
                          f"alike: {hv[c][es.name]:.5f}."]  # fmt: skip
        lines += ["", "Test points of each method's validation front (error, gap):", "", "<details><summary>points</summary>", ""]
        for m in (m for m in methods if m.criterion == c):
            pts = sorted((round(x.test["error"], 4), round(x.test[gap], 4)) for x in val_front(m.candidates, gap))
            lines.append(f"- {m.name}: {pts}")
        lines += ["", "</details>", ""]
    targets = results.get("targets")
    if targets:
        lines += ["### Targets (Adult)", ""]
        for t in targets:
            lines.append(f"- {t}")
        lines.append("")
    dp = results.get("dp_sgd")
    if dp:
        lines += [
            "### DP-SGD: ethicsweep test accuracy against ε (Adult)",
            "",
            f"Setting (from benchmarks/privacy.py): MLP hidden 16, batch 4096, lr 0.02, {s['dp_epochs']} epochs, max_grad_norm 1.0, "
            "δ = 1e-5, PRV accountant, σ calibrated by Opacus to the target ε; one run each (DP-SGD noise is drawn from OS "
            "entropy, so a rerun differs slightly); no fairness term (DP-SGD refuses the batch-level fairness spreads).",
            "",
            f"![DP-SGD accuracy]({figures['dpsgd']})",
            "",
            "| target ε | ε spent | test accuracy | test dp_gap | seconds |",
            "|---|---|---|---|---|",
        ]
        for r in dp:
            eps = "∞ (non-private)" if not math.isfinite(r["target_epsilon"]) else f"{r['target_epsilon']:g}"
            spent = "∞" if not math.isfinite(r["epsilon"]) else f"{r['epsilon']:.3f}"
            lines.append(f"| {eps} | {spent} | {r['accuracy']:.4f} | {r['dp_gap']:.4f} | {r['seconds']:.0f} |")
        lines.append("")
    lines.append(f"<!-- /section:{d} -->")
    return "\n".join(lines)


HEADER = """# ethicsweep against fairlearn (test split)

Written by `python benchmarks/fairlearn_compare.py --dataset adult|compas` (see its docstring for
the protocol). Each section is one run of the command: every method on the same seeded splits and
the same preprocessed features, timed in the same process tree on the same machine.

Caveats that apply throughout:

- ethicsweep, plain Optuna and fairlearn's reductions produce models that do **not** read the
  sensitive attribute at prediction time; the post-processing reference does (a threshold per
  group), so it is a reference, not a like-for-like competitor.
- fairlearn's `ExponentiatedGradient` returns a randomized classifier; the main row uses its
  `predict(X, random_state=0)` (seeded, so the numbers repeat), a second row the deterministic
  rule P(ŷ=1) >= 0.5 on `_pmf_predict`. Its guarantee holds for the randomized classifier in
  expectation, on training data.
- fairlearn is single-process: its BLAS/OpenMP pools were limited to one thread
  (`threadpoolctl`), which on this loaded 2-core machine made a LogisticRegression fit ~6× faster
  than two threads (measured: 0.84 s against 5.4 s, lbfgs). ethicsweep runs two trials at a time (one
  per core), plain Optuna likewise (`n_jobs=2`, one torch thread each).
- fairlearn's `GridSearch` traces its front with a grid of Lagrange multipliers (fairlearn's
  default `grid_limit` 2.0); for equalized odds the grid spans two multiplier dimensions, so
  few of its grid points land near the front (see the point lists).
- The post-processing thresholds are deterministic (no randomization between thresholds), so for
  equalized odds they can only approximate the target gap.
"""


def write_results(out: Path, text: str, dataset: str) -> None:
    current = out.read_text() if out.exists() else HEADER
    pattern = re.compile(rf"<!-- section:{dataset} -->.*?<!-- /section:{dataset} -->", re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: text, current)
    else:
        current = current.rstrip() + "\n\n" + text + "\n"
    out.write_text(current)


def load_triple() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SENSITIVE), default="adult")
    parser.add_argument("--budget", type=int, default=None, help="trials of ethicsweep and of plain Optuna, per criterion (default 48; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (few trials, small grids, 3 DP-SGD epochs)")
    parser.add_argument("--no-dp-sgd", action="store_true", help="skip the DP-SGD curve (Adult only anyway)")
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where the Markdown, PNG and JSON files go")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the sweeps write their runs (default: a temporary directory)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only rebuild the Markdown section and figures from a run's saved JSON")
    args = parser.parse_args()
    if args.render:
        render(json.loads(args.render.read_text()), args.output_dir)
        return
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    started, load_start = time.perf_counter(), load_triple()
    s = settings(args.dataset, args.budget, args.quick)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fairlearn-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    data = prepare(DataSpec(dataset=args.dataset, sensitive=[SENSITIVE[args.dataset]]), SEED)
    reference = np.array([majority_error(data.test), GAP_REFERENCE])
    print(f"{args.dataset}: {len(data.train)}/{len(data.validation)}/{len(data.test)} rows, groups {data.group_names}; "
          f"reference point {reference.tolist()}; work dir {work}", flush=True)  # fmt: skip

    methods: list[Method] = []

    def done(m: Method) -> None:
        methods.append(m)
        print(f"  [{time.perf_counter() - started:6.0f} s] {m.criterion} {m.name}: {m.seconds:.1f} s, "
              f"test HV {test_hypervolume(m.candidates, GAP[m.criterion], reference):.5f}", flush=True)  # fmt: skip

    for c in CRITERIA:
        done(ethicsweep_cli(data, args.dataset, c, s, work))
        done(plain_optuna(data, args.dataset, c, s))
    with threadpool_limits(1):
        best, scores, base_accuracy, base_seconds = unconstrained(data, args.dataset, s)
        print(f"  unconstrained models, validation accuracy: {base_accuracy}; post-processing {best}", flush=True)
        for c in CRITERIA:
            done(postprocessing(data, c, best, scores, s, base_seconds))
            for learner in ("LR", "MLP"):
                done(fairlearn_grid(data, c, learner, s, args.dataset))
            for learner in ("LR", "MLP"):
                for m in fairlearn_eg(data, c, learner, s, args.dataset):
                    done(m)
    dp_rows = dp_sgd_curve(data, s) if args.dataset == "adult" and not args.no_dp_sgd else []

    results = {
        "dataset": args.dataset,
        "quick": args.quick,
        "command": " ".join(["python", "benchmarks/fairlearn_compare.py", *sys.argv[1:]]),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_seconds": time.perf_counter() - started,
        "load_start": load_start,
        "load_end": load_triple(),
        "machine": machine(),
        "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "groups": list(data.group_names),
        "min_group_size": data.min_group_size,
        "features": data.train.X.shape[1],
        "reference_error": float(reference[0]),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()},
        "dp_sgd": dp_rows,
        "unconstrained_val_accuracy": base_accuracy,
        "methods": [
            {"name": m.name, "criterion": m.criterion, "seconds": m.seconds, "note": m.note,
             "extra": {k: v for k, v in m.extra.items() if k != "registered"}, "candidates": [c.__dict__ for c in m.candidates]}
            for m in methods
        ],
    }  # fmt: skip
    suffix = "-quick" if args.quick else ""
    (args.output_dir / f"fairlearn-{args.dataset}{suffix}.json").write_text(json.dumps(results, indent=1, default=float))
    render(results, args.output_dir)


def render(results: dict[str, Any], output_dir: Path) -> None:
    """Hypervolumes, verdicts, figures and the Markdown section from the recorded numbers
    (``results``: what the run saved as JSON)."""
    dataset = results["dataset"]
    methods = [
        Method(m["name"], m["criterion"], m["seconds"], [Candidate(**c) for c in m["candidates"]], m["note"], m.get("extra", {}))
        for m in results["methods"]
    ]
    reference = np.array([results["reference_error"], GAP_REFERENCE])
    hv = {c: {m.name: test_hypervolume(m.candidates, GAP[c], reference) for m in methods if m.criterion == c} for c in CRITERIA}
    suffix = "-quick" if results.get("quick") else ""
    figures = {c: f"fairlearn-{dataset}-{c}{suffix}.png" for c in CRITERIA}
    for c in CRITERIA:
        figure(output_dir / figures[c], [m for m in methods if m.criterion == c], c, reference,
               f"{dataset.capitalize()} test fronts (validation-front models), error vs {GAP[c]}")  # fmt: skip
    if results["dp_sgd"]:
        figures["dpsgd"] = f"fairlearn-{dataset}-dpsgd{suffix}.png"
        dp_figure(output_dir / figures["dpsgd"], results["dp_sgd"])

    targets = []
    for c in CRITERIA:
        by = {m.name: m for m in methods if m.criterion == c}
        es = next(n for n in by if n.startswith("ethicsweep"))
        gs = max((n for n in by if n.startswith("fairlearn GridSearch")), key=lambda n: hv[c][n])
        pp = next(n for n in by if n.startswith("post-processing"))
        egs = [n for n in by if n.startswith("fairlearn ExponentiatedGradient") and "deterministic" not in n]
        r_gs, r_pp = hv[c][es] / hv[c][gs], hv[c][es] / hv[c][pp]
        eg_times = {n.split(", ")[1].split(" ")[0]: by[n].seconds for n in egs}
        targets += [
            f"{GAP[c]}: ethicsweep test HV >= 1.02× the best fairlearn GridSearch ({gs.split(', ')[1]}): {verdict(r_gs >= 1.02)} ({r_gs:.3f}×)",
            f"{GAP[c]}: ethicsweep test HV >= 0.99× the post-processing reference: {verdict(r_pp >= 0.99)} ({r_pp:.3f}×)",
            f"{GAP[c]}: ethicsweep wall time ({by[es].seconds:.0f} s, the whole CLI command) <= ExponentiatedGradient's: "
            + "; ".join(f"{verdict(by[es].seconds <= t)} against EG-{k} ({t:.0f} s)" for k, t in eg_times.items()),
        ]
    text = section({**results, "hv": hv, "targets": targets}, methods, figures)
    if dataset != "adult":
        text = text.replace("### Targets (Adult)", "### Adult's targets, checked here too (they are set for Adult)")
    out = output_dir / f"RESULTS-fairlearn{suffix}.md"
    write_results(out, text, dataset)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
