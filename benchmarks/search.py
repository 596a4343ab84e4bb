"""Search benchmarks on Adult (sex), validation split: every searcher, with and without the
multi-objective early-stopping scheduler, at an equal budget of trials, over seeds; and
the Ray overhead of the demo's sweep against the same configurations in a plain loop.

    python benchmarks/search.py hypervolume [--problem two|four] [--seeds 0 1 2] [--budget 24] [--searchers ...]
    python benchmarks/search.py overhead [--trials 64]

``hypervolume`` prints, per (searcher, scheduler), the mean and spread over seeds of the
validation hypervolume of the finished, feasible trials and the sweep's wall time, at a
fixed reference point:

- ``two``: accuracy (max) against dp_gap (min): the demo's spec; reference accuracy = the
  validation majority-class rate (0.7592), dp_gap = 0.2.
- ``four``: accuracy, dp_gap, harm, epsilon (DP-SGD trials; per-example terms only, as
  DP-SGD requires); reference accuracy 0.7592, dp_gap 0.2, harm 0.2408 (the majority-class
  error: with the default cost matrix harm is the error rate), epsilon 10.

``overhead`` runs the demo's sweep (embedded Ray, MLflow logging), then trains the very
configurations it ran in a plain loop with the same number of processes (one torch thread
each, as Ray gives a one-CPU trial), and prints wall(sweep) / wall(plain loop); the sweep's
wall time is shown with and without Ray's start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from importlib.metadata import version

import numpy as np
import ray
import yaml

from ethicsweep.analysis.pareto import hypervolume, minimization_form
from ethicsweep.data import prepare
from ethicsweep.search import run_sweep
from ethicsweep.search.runner import connect
from ethicsweep.spec import SweepSpec, TrainConfig, parse_spec

SEARCHERS = ["random", "nsga2", "tpe", "pymoo-nsga2"]
FOUR = {
    "objectives": [{"metric": "accuracy"}, {"metric": "dp_gap"}, {"metric": "harm"}, {"metric": "epsilon"}],
    "train": {
        "model": {"kind": "mlp", "hidden": 16},
        "training": {"epochs": 10, "batch_size": 4096, "lr": 0.02},
        "terms": [{"kind": "expected_cost", "weight": 0.5}, {"kind": "confident_error", "weight": 1.0}],
        "privacy": {"dp_sgd": True, "noise_multiplier": 1.0, "delta": 1e-5},
    },
    "space": {
        "privacy.noise_multiplier": {"type": "float", "low": 0.4, "high": 4.0, "log": True},
        "terms.expected_cost.weight": {"type": "float", "low": 0.01, "high": 2.0, "log": True},
        "training.lr": {"type": "float", "low": 0.005, "high": 0.05, "log": True},
        "training.epochs": {"type": "int", "low": 3, "high": 12},
    },
    "reference": {"accuracy": 0.7592, "dp_gap": 0.2, "harm": 0.2408, "epsilon": 10.0},
}
TWO_REFERENCE = {"accuracy": 0.7592, "dp_gap": 0.2}


def demo_document() -> dict:
    return yaml.safe_load(resources.files("ethicsweep").joinpath("demo.yaml").read_text())


def problem_spec(problem: str, searcher: str, scheduler: bool, seed: int, budget: int, output_dir: str) -> SweepSpec:
    document = demo_document()
    document.update({"name": f"bench-{problem}-{searcher}-{'asha' if scheduler else 'plain'}-{seed}", "seed": seed, "output_dir": output_dir})
    search = document["search"]
    search.update({"searcher": searcher, "num_trials": budget, "population_size": 8})
    if scheduler:  # the demo's epochs range 6-16: rungs at 2, 6 epochs (grace 2, factor 3)
        search["scheduler"] = {"kind": "mo_asha", "grace_period": 2, "reduction_factor": 3}
    if problem == "four":
        document["train"] = FOUR["train"]
        search["objectives"], search["space"] = FOUR["objectives"], FOUR["space"]
        if scheduler:
            search["scheduler"] = {"kind": "mo_asha", "grace_period": 1, "reduction_factor": 3}
    return parse_spec(document, "benchmark spec")


def volume(trials, spec: SweepSpec, reference: dict[str, float]) -> float:
    """Validation hypervolume of the finished trials (no constraints here) at ``reference``."""
    done = trials[trials["status"] == "ok"]
    objectives = [(f"val/{o.metric}", o.mode) for o in spec.search.objectives]
    points = minimization_form(done, objectives)
    ref = np.array([-reference[o.metric] if o.mode == "max" else reference[o.metric] for o in spec.search.objectives])
    return hypervolume(points, ref)


def hypervolume_table(problem: str, seeds: list[int], budget: int, searchers: list[str]) -> str:
    reference = FOUR["reference"] if problem == "four" else TWO_REFERENCE
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for searcher in searchers:
            for scheduler in (False, True):
                volumes, walls = [], []
                for seed in seeds:
                    spec = problem_spec(problem, searcher, scheduler, seed, budget, tmp)
                    data = prepare(spec.data, spec.seed)
                    outcome = run_sweep(spec, data)
                    volumes.append(volume(outcome.trials, spec, reference))
                    walls.append(outcome.wall_seconds)
                    print(f"  {searcher} {'mo_asha' if scheduler else 'none'} seed {seed}: HV {volumes[-1]:.6f}, {walls[-1]:.0f} s", flush=True)
                rows.append((searcher, "mo_asha" if scheduler else "none", volumes, walls))
    lines = [
        f"reference point: {', '.join(f'{k} {v:g}' for k, v in reference.items())}; budget {budget} trials; seeds {seeds}",
        "",
        "| searcher | scheduler | validation hypervolume, mean (min-max) | wall s, mean (min-max) |",
        "|---|---|---|---|",
    ]
    for searcher, scheduler, volumes, walls in rows:
        lines.append(
            f"| {searcher} | {scheduler} | {statistics.mean(volumes):.6f} ({min(volumes):.6f}-{max(volumes):.6f}) | "
            f"{statistics.mean(walls):.0f} ({min(walls):.0f}-{max(walls):.0f}) |"
        )
    return "\n".join(lines)


_WORKER_DATA = None


def _init_worker(document: dict) -> None:
    global _WORKER_DATA
    import torch

    torch.set_num_threads(1)
    spec = parse_spec(document)
    _WORKER_DATA = prepare(spec.data, spec.seed)


def _train(config_json: str) -> float:
    from ethicsweep.trainables.train import train

    started = time.perf_counter()
    train(TrainConfig.model_validate_json(config_json), _WORKER_DATA)
    return time.perf_counter() - started


def overhead(trials: int) -> str:
    document = demo_document()
    document["search"]["num_trials"] = trials
    with tempfile.TemporaryDirectory() as tmp:
        document["output_dir"] = tmp
        spec = parse_spec(document)
        data = prepare(spec.data, spec.seed)
        started = time.perf_counter()
        connect(None)
        ray_start = time.perf_counter() - started
        outcome = run_sweep(spec, data)
        concurrency = spec.search.max_concurrent or int(ray.cluster_resources().get("CPU", 1))
        configs = [spec.train.with_params(json.loads(p)).model_dump_json() for p in outcome.trials["params"]]
        with ProcessPoolExecutor(max_workers=concurrency, initializer=_init_worker, initargs=(document,)) as pool:
            list(pool.map(_train, configs[:concurrency]))  # warm the workers (imports, data) outside the timing
            started = time.perf_counter()
            seconds = list(pool.map(_train, configs))
            plain = time.perf_counter() - started
    return "\n".join([
        f"demo sweep, {trials} trials, {concurrency} concurrent (one CPU each)", "",
        "| measure | seconds |", "|---|---|",
        f"| Ray start-up (ray.init, before the sweep) | {ray_start:.1f} |",
        f"| sweep wall time (Tune, searcher, MLflow logging, checkpoints) | {outcome.wall_seconds:.1f} |",
        f"| plain loop, same configurations, {concurrency} processes: wall | {plain:.1f} |",
        f"| plain loop: sum of the trials' training times | {sum(seconds):.1f} |",
        "", f"ratio sweep wall / plain-loop wall: **{outcome.wall_seconds / plain:.2f}** (target <= 1.3)",
    ])  # fmt: skip


def machine() -> str:
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "ray", "optuna", "pymoo", "mlflow", "ethicsweep"))
    return f"python {platform.python_version()}, {platform.platform()}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    hv = sub.add_parser("hypervolume")
    hv.add_argument("--problem", choices=["two", "four"], default="two")
    hv.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    hv.add_argument("--budget", type=int, default=24)
    hv.add_argument("--searchers", nargs="+", default=None)
    ov = sub.add_parser("overhead")
    ov.add_argument("--trials", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {machine()}\n", flush=True)
    if args.command == "overhead":
        print(overhead(args.trials))
    else:
        searchers = args.searchers or (SEARCHERS + ["pymoo-nsga3"] if args.problem == "four" else SEARCHERS)
        print(hypervolume_table(args.problem, args.seeds, args.budget, searchers))


if __name__ == "__main__":
    main()
