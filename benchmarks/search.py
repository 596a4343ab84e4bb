"""Search benchmarks on Adult (sex), validation split: every searcher, with and without the
multi-objective early-stopping scheduler, at an equal budget of trials, over seeds; and
the Ray overhead of the demo's sweep against the same configurations in a plain loop.

    python benchmarks/search.py hypervolume [--problem two|long|four] [--seeds 0 1 2] [--budget 24] [--searchers ...] [--asha-budget 48]
    python benchmarks/search.py overhead [--trials 64]
    python benchmarks/search.py curves [--trials 72] [--seed 0]

``hypervolume`` prints, per (searcher, scheduler), the mean and spread over seeds of the
validation hypervolume of the finished, feasible trials and the sweep's wall time, at a
fixed reference point:

- ``two``: accuracy (max) against dp_gap (min): the demo's spec; reference accuracy = the
  validation majority-class rate (0.7592), dp_gap = 0.2.
- ``four``: accuracy, dp_gap, harm, epsilon (DP-SGD trials; per-example terms only, as
  DP-SGD requires); reference accuracy 0.7592, dp_gap 0.2, harm 0.2408 (the majority-class
  error: with the default cost matrix harm is the error rate), epsilon 10.

- ``long``: the demo's space with ``training.epochs`` fixed at 27 (lr 3e-4 to 3e-3): the
  early-stopping scheduler's resource is then the epochs alone (rungs at 1, 3, 9).

``curves`` asks whether any successive-halving setting could reach random search's
hypervolume on ``long`` at half the cost: one random-search sweep (no scheduler) records
every trial's validation objectives after every epoch; successive halving is then replayed
on those learning curves with MO-ASHA's own promotion order, for several rung settings,
counting the epochs it would train.

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
import pandas as pd
import ray
import yaml

from ethicsweep.analysis.pareto import hypervolume, minimization_form
from ethicsweep.data import prepare
from ethicsweep.search import run_sweep
from ethicsweep.search.mo_asha import promotion_order
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
LONG_EPOCHS = 27


def demo_document() -> dict:
    return yaml.safe_load(resources.files("ethicsweep").joinpath("demo.yaml").read_text())


def problem_spec(problem: str, searcher: str, scheduler: bool, seed: int, budget: int, output_dir: str) -> SweepSpec:
    document = demo_document()
    document.update({"name": f"bench-{problem}-{searcher}-{'asha' if scheduler else 'plain'}-{seed}", "seed": seed, "output_dir": output_dir})
    search = document["search"]
    search.update({"searcher": searcher, "num_trials": budget, "population_size": 8})
    if scheduler:  # the demo's epochs range 6-16: rungs at 2, 6 epochs (grace 2, factor 3)
        search["scheduler"] = {"kind": "mo_asha", "grace_period": 2, "reduction_factor": 3}
    if problem == "long":  # the demo's space with training.epochs fixed at LONG_EPOCHS: rungs at 1, 3, 9 epochs
        document["train"]["training"]["epochs"] = LONG_EPOCHS
        del search["space"]["training.epochs"]
        search["space"]["training.lr"] = {"type": "float", "low": 0.0003, "high": 0.003, "log": True}
        if scheduler:
            search["scheduler"] = {"kind": "mo_asha", "grace_period": 1, "reduction_factor": 3}
    if problem == "four":
        document["train"] = FOUR["train"]
        search["objectives"], search["space"] = FOUR["objectives"], FOUR["space"]
        if scheduler:
            search["scheduler"] = {"kind": "mo_asha", "grace_period": 1, "reduction_factor": 3}
    return parse_spec(document, "benchmark spec")


def reference_point(spec: SweepSpec, reference: dict[str, float]) -> np.ndarray:
    """``reference`` (metric: value) in the minimization form of the spec's objectives."""
    return np.array([-reference[o.metric] if o.mode == "max" else reference[o.metric] for o in spec.search.objectives])


def volume(trials, spec: SweepSpec, reference: dict[str, float]) -> float:
    """Validation hypervolume of the finished trials (no constraints here) at ``reference``."""
    done = trials[trials["status"] == "ok"]
    objectives = [(f"val/{o.metric}", o.mode) for o in spec.search.objectives]
    points = minimization_form(done, objectives)
    ref = reference_point(spec, reference)
    return hypervolume(points, ref)


def _running_volumes(done: list[tuple[float, dict]], spec: SweepSpec, reference: dict[str, float]) -> list[tuple[float, float]]:
    """(seconds since the sweep started, hypervolume of the trials finished by then), after each finished trial."""
    objectives = [(f"val/{o.metric}", o.mode) for o in spec.search.objectives]
    ref = reference_point(spec, reference)
    curve = []
    for i, (seconds, _) in enumerate(done):
        frame = pd.DataFrame([result for _, result in done[: i + 1]])
        finite = frame[[key for key, _ in objectives]].apply(np.isfinite).all(axis=1)
        curve.append((seconds, hypervolume(minimization_form(frame[finite], objectives), ref) if finite.any() else 0.0))
    return curve


def _time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first time the running hypervolume reaches ``target`` (None: never)."""
    return next((seconds for seconds, value in curve if value >= target - 1e-12), None)


def hypervolume_table(problem: str, seeds: list[int], budget: int, searchers: list[str], asha_budget: int | None = None) -> str:
    """Per (searcher, scheduler): validation hypervolume and wall time over seeds; and for each
    sweep, when its running hypervolume (over the trials finished so far) first reached the
    final hypervolume of random search without the scheduler on the same seed, as a
    fraction of that random search's wall time. ``asha_budget``: one more row, random
    search with the scheduler given that many trials (the time it saves buys more trials)."""
    reference = FOUR["reference"] if problem == "four" else TWO_REFERENCE
    rows, runs = [], {}
    searchers = ["random", *[s for s in searchers if s != "random"]]  # random first: the target of the others
    plan = [(searcher, scheduler, budget) for searcher in searchers for scheduler in (False, True)]
    if asha_budget:
        plan.append(("random", True, asha_budget))
    with tempfile.TemporaryDirectory() as tmp:
        for searcher, scheduler, trials in plan:
            volumes, walls, reached = [], [], []
            for seed in seeds:
                spec = problem_spec(problem, searcher, scheduler, seed, trials, tmp)
                data = prepare(spec.data, spec.seed)
                done: list[tuple[float, dict]] = []
                started = time.perf_counter()

                def on_event(event, done=done, started=started) -> None:
                    if event.kind == "done":
                        done.append((time.perf_counter() - started, dict(event.result)))

                outcome = run_sweep(spec, data, on_event=on_event)
                volumes.append(volume(outcome.trials, spec, reference))
                walls.append(outcome.wall_seconds)
                curve = _running_volumes(done, spec, reference)
                runs.setdefault((searcher, scheduler, seed), (volumes[-1], walls[-1], curve))
                target_hv, target_wall, _ = runs[("random", False, seed)]
                at = _time_to_reach(curve, target_hv)
                reached.append(None if at is None else at / target_wall)
                shown = "never" if at is None else f"{at:.0f} s = {at / target_wall:.2f} of random's wall"
                print(f"  {searcher} {'mo_asha' if scheduler else 'none'} ({trials} trials) seed {seed}: HV {volumes[-1]:.6f}, "
                      f"{walls[-1]:.0f} s; reached random's HV {target_hv:.6f}: {shown}", flush=True)  # fmt: skip
            rows.append((searcher, "mo_asha" if scheduler else "none", trials, volumes, walls, reached))
    lines = [
        f"reference point: {', '.join(f'{k} {v:g}' for k, v in reference.items())}; budget {budget} trials; seeds {seeds}",
        "",
        "| searcher | scheduler | trials | validation hypervolume, mean (min-max) | wall s, mean (min-max) | reached random's hypervolume at (fraction of random's wall, per seed) |",
        "|---|---|---|---|---|---|",
    ]
    for searcher, scheduler, trials, volumes, walls, reached in rows:
        shown = ", ".join("never" if r is None else f"{r:.2f}" for r in reached)
        lines.append(
            f"| {searcher} | {scheduler} | {trials} | {statistics.mean(volumes):.6f} ({min(volumes):.6f}-{max(volumes):.6f}) | "
            f"{statistics.mean(walls):.0f} ({min(walls):.0f}-{max(walls):.0f}) | {shown} |"
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


def _sweep_once(document: dict, tmp: str) -> tuple[float, float, list[str]]:
    """One demo sweep into ``tmp``: Ray start-up seconds, sweep wall seconds, the trials' configurations."""
    spec = parse_spec({**document, "output_dir": tmp})
    data = prepare(spec.data, spec.seed)
    started = time.perf_counter()
    connect(None)
    ray_start = time.perf_counter() - started
    outcome = run_sweep(spec, data)
    ray.shutdown()
    return ray_start, outcome.wall_seconds, [spec.train.with_params(json.loads(p)).model_dump_json() for p in outcome.trials["params"]]


def overhead(trials: int) -> str:
    """The demo sweep against a plain loop of its configurations, in the order sweep, loop,
    loop, sweep (ABBA: a load that drifts during the run weighs on both sides alike); both
    loops train the first sweep's configurations."""
    document = demo_document()
    document["search"]["num_trials"] = trials
    concurrency = document["search"].get("max_concurrent") or os.cpu_count()
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        start_a, sweep_a, configs = _sweep_once(document, first)
        with ProcessPoolExecutor(max_workers=concurrency, initializer=_init_worker, initargs=(document,)) as pool:
            list(pool.map(_train, configs[:concurrency]))  # warm the workers (imports, data) outside the timing
            loops = []
            for _ in range(2):
                started = time.perf_counter()
                seconds = list(pool.map(_train, configs))
                loops.append((time.perf_counter() - started, sum(seconds)))
        start_b, sweep_b, _ = _sweep_once(document, second)
    ratio = (sweep_a + sweep_b) / (loops[0][0] + loops[1][0])
    return "\n".join([
        f"demo sweep, {trials} trials, {concurrency} concurrent (one CPU each); order: sweep, loop, loop, sweep", "",
        "| measure | first | second |", "|---|---|---|",
        f"| Ray start-up (ray.init, before the sweep) | {start_a:.1f} | {start_b:.1f} |",
        f"| sweep wall time (Tune, searcher, MLflow logging, checkpoints) | {sweep_a:.1f} | {sweep_b:.1f} |",
        f"| plain loop, the first sweep's configurations, {concurrency} processes: wall | {loops[0][0]:.1f} | {loops[1][0]:.1f} |",
        f"| plain loop: sum of the trials' training times | {loops[0][1]:.1f} | {loops[1][1]:.1f} |",
        "", (f"ratio (sum of sweep walls) / (sum of plain-loop walls): **{ratio:.2f}** (target <= 1.3); "
             f"pairs: {sweep_a / loops[0][0]:.2f} (sweep first), {sweep_b / loops[1][0]:.2f} (loop first)"),
    ])  # fmt: skip


def _halving(curves: list[list[tuple[float, float]]], rungs: list[int], factor: int, max_t: int) -> tuple[list[tuple[float, float]], int]:
    """Synchronous successive halving replayed on recorded learning curves: at each rung all
    surviving trials are ranked with MO-ASHA's :func:`promotion_order` and the best
    ``len // factor`` go on. Returns the models it ends with (each trial's (accuracy, dp_gap)
    at the epoch it stopped) and the epochs it trained. Every decision sees the whole rung, so
    this is an idealised, fully informed form of the asynchronous scheduler."""
    alive, models, cost, previous = list(range(len(curves))), [], 0, 0
    for rung in [*rungs, max_t]:
        cost += (rung - previous) * len(alive)
        previous = rung
        if rung == max_t:
            return models + [curves[i][rung - 1] for i in alive], cost
        order = promotion_order([(-curves[i][rung - 1][0], curves[i][rung - 1][1]) for i in alive])
        kept = {alive[j] for j in order[: max(1, len(alive) // factor)]}
        models += [curves[i][rung - 1] for i in alive if i not in kept]
        alive = [i for i in alive if i in kept]
    return models, cost


def learning_curves(trials: int, seed: int) -> str:
    """Record a random search's learning curves on ``long``, then replay successive halving on them."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = problem_spec("long", "random", False, seed, trials, tmp)
        epochs: dict[str, dict[int, tuple[float, float]]] = {}

        def on_event(event) -> None:
            if event.kind == "epoch":
                epochs.setdefault(event.trial_id, {})[event.epoch] = (event.result["val/accuracy"], event.result["val/dp_gap"])

        outcome = run_sweep(spec, prepare(spec.data, spec.seed), on_event=on_event)
    order = [t for t in outcome.trials["trial_id"] if len(epochs.get(t, {})) == LONG_EPOCHS]  # in the order they finished
    curves = [[epochs[t][e] for e in range(1, LONG_EPOCHS + 1)] for t in order]
    ref = reference_point(spec, TWO_REFERENCE)  # objectives: accuracy (max), dp_gap (min)

    def hv(models: list[tuple[float, float]]) -> float:
        return hypervolume(np.array([(-a, g) for a, g in models]), ref)

    full = 24 * LONG_EPOCHS
    lines = [
        (f"random search on `long`, {len(curves)} trials of {trials} with all {LONG_EPOCHS} epochs recorded, seed {seed}, "
         f"sweep {outcome.wall_seconds:.0f} s; reference accuracy {TWO_REFERENCE['accuracy']}, dp_gap {TWO_REFERENCE['dp_gap']}"),
        "",
        "| models | validation hypervolume |", "|---|---|",
        *[f"| first 24 trials at epoch {k} | {hv([c[k - 1] for c in curves[:24]]):.6f} |" for k in (1, 3, 9, LONG_EPOCHS)],
        f"| all {len(curves)} trials at epoch {LONG_EPOCHS} | {hv([c[-1] for c in curves]):.6f} |",
        f"| first 24 trials, every epoch a model | {hv([p for c in curves[:24] for p in c]):.6f} |",
        "",
        f"successive halving replayed (cost: epochs trained, as a fraction of 24 trials x {LONG_EPOCHS} epochs = {full}):", "",
        "| trials | rungs | reduction factor | validation hypervolume | cost |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for n in (24, 48, len(curves)):
        for rungs, factor in (([1, 3, 9], 3), ([3, 9], 3), ([3], 3), ([9], 3), ([1, 2, 4, 8, 16], 2)):
            models, cost = _halving(curves[:n], rungs, factor, LONG_EPOCHS)
            lines.append(f"| {n} | {rungs} | {factor} | {hv(models):.6f} | {cost / full:.2f} |")
    return "\n".join(lines)


def machine() -> str:
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "ray", "optuna", "pymoo", "mlflow", "ethicsweep"))
    return f"python {platform.python_version()}, {platform.platform()}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    hv = sub.add_parser("hypervolume")
    hv.add_argument("--problem", choices=["two", "long", "four"], default="two")
    hv.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    hv.add_argument("--budget", type=int, default=24)
    hv.add_argument("--searchers", nargs="+", default=None)
    hv.add_argument("--asha-budget", type=int, default=None, help="also run random search with MO-ASHA at this many trials")
    ov = sub.add_parser("overhead")
    ov.add_argument("--trials", type=int, default=64)
    cu = sub.add_parser("curves")
    cu.add_argument("--trials", type=int, default=72)
    cu.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {machine()}\n", flush=True)
    if args.command == "overhead":
        print(overhead(args.trials))
    elif args.command == "curves":
        print(learning_curves(args.trials, args.seed))
    else:
        searchers = args.searchers or (SEARCHERS + ["pymoo-nsga3"] if args.problem == "four" else SEARCHERS)
        print(hypervolume_table(args.problem, args.seeds, args.budget, searchers, args.asha_budget))


if __name__ == "__main__":
    main()
