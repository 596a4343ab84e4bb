"""Privacy benchmarks on real data: test split, seed 0, the package's own splits.

(a) Adult: DP-SGD at ε <= 1 (δ = 1e-5) against the same model trained without it — test
    accuracy, and the time per epoch at the same batch size, measured side by side as a
    ratio: the two models train in alternating blocks of epochs (both see the same machine
    load), once as ethicsweep trains (validation scoring after every epoch) and once with
    scoring switched off, which leaves the optimization alone.
(b) German credit: an MLP trained to overfit (wide, many epochs, no regularization) — the
    loss-threshold membership attack's test ``mia_auc`` without and with DP-SGD at ε <= 1.

DP-SGD draws its sampling and noise from OS entropy, so each DP-SGD setting is run
``--repeats`` times and every run is shown. Prints a Markdown report. ``--tune`` instead
runs the settings tried while tuning, once each, with the validation numbers the chosen
settings were picked on.

    python benchmarks/privacy.py [--repeats 3] [--json results.json]
    python benchmarks/privacy.py --tune
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from importlib.metadata import version

import torch

from ethicsweep.data import prepare
from ethicsweep.spec import DataSpec, TrainConfig
from ethicsweep.trainables import scoring
from ethicsweep.trainables import train as training
from ethicsweep.trainables.train import init_state, train

SEED = 0
PRIVATE = {"dp_sgd": True, "target_epsilon": 1.0, "delta": 1e-5, "max_grad_norm": 1.0, "accountant": "prv"}
# chosen on DP-SGD validation accuracy among ADULT_TRIED (python benchmarks/privacy.py --tune)
ADULT = {"model": {"kind": "mlp", "hidden": 16}, "training": {"epochs": 30, "batch_size": 4096, "lr": 0.02}}
# timed too: the logistic model, the least per-example-gradient work
ADULT_LOGISTIC = {"model": {"kind": "logistic"}, "training": {"epochs": 30, "batch_size": 4096, "lr": 0.05}}
# wide, long, no dropout or weight decay: it drives training loss to ~0
GERMAN = {"model": {"kind": "mlp", "hidden": 256, "layers": 2}, "training": {"epochs": 100, "batch_size": 64, "lr": 0.003}}


def _setting(kind: str, batch_size: int, lr: float, epochs: int, hidden: int = 64, layers: int = 1) -> dict:
    model = {"kind": kind} if kind == "logistic" else {"kind": kind, "hidden": hidden, "layers": layers}
    return {"model": model, "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr}}


#: (setting, clipping norm C) tried on Adult under DP-SGD at ε <= 1
ADULT_TRIED = [
    (_setting("logistic", 1024, 0.01, 15), 1.0), (_setting("logistic", 2048, 0.02, 20), 1.0),
    (_setting("logistic", 4096, 0.05, 30), 1.0), (_setting("logistic", 4096, 0.1, 30), 1.0),
    (_setting("logistic", 8192, 0.1, 40), 1.0), (_setting("logistic", 4096, 0.05, 30), 0.5),
    (_setting("logistic", 4096, 0.05, 30), 2.0), (_setting("mlp", 1024, 0.01, 15), 1.0),
    (_setting("mlp", 2048, 0.005, 20), 1.0), (_setting("mlp", 2048, 0.01, 20, hidden=16), 1.0),
    (ADULT, 1.0),
]  # fmt: skip
#: overfitting settings tried on German credit without DP-SGD
GERMAN_TRIED = [GERMAN, _setting("mlp", 32, 0.003, 60, hidden=512), _setting("mlp", 32, 0.003, 50, hidden=256, layers=2)]
BLOCKS, BLOCK_EPOCHS = 3, 6  # timing: per model, 3 blocks of 6 epochs, the blocks alternating


def configs(base: dict, clip: float = 1.0) -> tuple[TrainConfig, TrainConfig]:
    """(non-private, DP-SGD with clipping norm ``clip``) configs of one setting."""
    plain = TrainConfig.model_validate({**base, "seed": SEED})
    return plain, TrainConfig.model_validate({**base, "seed": SEED, "privacy": {**PRIVATE, "max_grad_norm": clip}})


def run(config: TrainConfig, data) -> dict:
    """Train ``config`` once; its test metrics and final ε."""
    started = time.perf_counter()
    state = train(config, data)
    test = scoring.test_metrics(state.model, config, data, epsilon=state.epsilon()).values
    return {
        "test": test,
        "val_accuracy": state.history[-1].validation["accuracy"],
        "val_mia_auc": state.history[-1].validation["mia_auc"],
        "final_train_bce": state.history[-1].losses["bce"],
        "seconds": time.perf_counter() - started,
    }


@contextmanager
def scoring_off() -> Iterator[None]:
    """Epochs without validation scoring: what remains is the optimization (ε is still
    accounted, outside the timed steps)."""
    original = training.validation_metrics
    training.validation_metrics = lambda *args, epsilon, **kwargs: {"epsilon": epsilon}
    try:
        yield
    finally:
        training.validation_metrics = original


def epoch_times(plain: TrainConfig, private: TrainConfig, data, scored: bool) -> dict:
    """Median seconds per epoch of each model, trained in alternating blocks of epochs:
    the optimization steps, and the whole epoch (with validation scoring when ``scored``;
    the DP-SGD epoch also computes ε)."""
    configs = {"plain": plain, "dp": private}
    states = {name: init_state(config, data) for name, config in configs.items()}
    with nullcontext() if scored else scoring_off():
        for _ in range(BLOCKS):
            for name, config in configs.items():
                epochs = states[name].epoch + BLOCK_EPOCHS
                states[name] = train(config.with_params({"training.epochs": epochs}), data, state=states[name])
    times = {
        name: {
            "step_seconds": statistics.median(r.step_seconds for r in state.history),
            "epoch_seconds": statistics.median(r.seconds for r in state.history),
        }
        for name, state in states.items()
    }
    times["step_ratio"] = times["dp"]["step_seconds"] / times["plain"]["step_seconds"]
    times["epoch_ratio"] = times["dp"]["epoch_seconds"] / times["plain"]["epoch_seconds"]
    return times


def adult(repeats: int) -> dict:
    data = prepare(DataSpec(dataset="adult"), SEED)
    plain, private = configs(ADULT)
    return {
        "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "plain": run(plain, data),
        "dp": [run(private, data) for _ in range(repeats)],
        "time": {
            model: {scored: epoch_times(*configs(setting), data, scored == "scored") for scored in ("scored", "unscored")}
            for model, setting in (("mlp-16", ADULT), ("logistic", ADULT_LOGISTIC))
        },
    }


def german(repeats: int) -> dict:
    data = prepare(DataSpec(dataset="german"), SEED)
    plain, private = configs(GERMAN)
    return {
        "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "plain": run(plain, data),
        "dp": [run(private, data) for _ in range(repeats)],
    }


def tune() -> str:
    """The settings tried, once each: DP-SGD on Adult, non-private overfitting on German."""
    lines = ["| Adult setting (DP-SGD, ε <= 1) | C | val accuracy | test accuracy | ε |", "|---|---|---|---|---|"]
    data = prepare(DataSpec(dataset="adult"), SEED)
    for setting, clip in ADULT_TRIED:
        r = run(configs(setting, clip)[1], data)
        lines.append(f"| {json.dumps(setting)} | {clip} | {r['val_accuracy']:.4f} | {r['test']['accuracy']:.4f} | {r['test']['epsilon']:.3f} |")
    lines += ["", "| German setting (non-private) | val mia_auc | test mia_auc | final train BCE |", "|---|---|---|---|"]
    data = prepare(DataSpec(dataset="german"), SEED)
    for setting in GERMAN_TRIED:
        r = run(configs(setting)[0], data)
        lines.append(f"| {json.dumps(setting)} | {r['val_mia_auc']:.4f} | {r['test']['mia_auc']:.4f} | {r['final_train_bce']:.4f} |")
    return "\n".join(lines)


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **{name: version(name) for name in ("torch", "opacus", "scikit-learn", "numpy", "ethicsweep")},
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: dict) -> str:
    a, g, m = results["adult"], results["german"], results["machine"]
    lines = [
        "## Machine", "",
        ", ".join(f"{k} {v}" for k, v in m.items()) + f"; benchmark wall time {results['wall_seconds']:.0f} s", "",
        f"## (a) Adult, DP-SGD at ε <= 1 (δ = 1e-5): {json.dumps(ADULT)}", "",
        f"rows: {a['rows']}; DP-SGD: {json.dumps(PRIVATE)}", "",
        "| run | val accuracy | test accuracy | test ε | train seconds |", "|---|---|---|---|---|",
        f"| non-private | {a['plain']['val_accuracy']:.4f} | {a['plain']['test']['accuracy']:.4f} | ∞ | {a['plain']['seconds']:.1f} |",
    ]  # fmt: skip
    for i, r in enumerate(a["dp"], 1):
        lines.append(f"| DP-SGD #{i} | {r['val_accuracy']:.4f} | {r['test']['accuracy']:.4f} | {r['test']['epsilon']:.3f} | {r['seconds']:.1f} |")
    worst = min(r["test"]["accuracy"] for r in a["dp"])
    eps = max(r["test"]["epsilon"] for r in a["dp"])
    lines += [
        "",
        f"Target test accuracy >= 0.845 at ε <= 1: {verdict(worst >= 0.845 and eps <= 1.0)} (lowest DP-SGD run {worst:.4f}, largest ε {eps:.3f}).",
        "",
        f"Seconds per epoch at batch size {ADULT['training']['batch_size']}: medians of {BLOCKS * BLOCK_EPOCHS} epochs per model, "
        f"the non-private and DP-SGD models trained in alternating blocks of {BLOCK_EPOCHS} epochs "
        f"(mlp-16: the model above; logistic: {json.dumps(ADULT_LOGISTIC)}):",
        "",
        "| model | measure | non-private | DP-SGD | ratio | target <= 3× |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for model, times in a["time"].items():
        for label, measured, key in (
            ("whole epoch as ethicsweep trains it (steps, validation scoring; ε for DP-SGD)", times["scored"], "epoch"),
            ("its optimization steps", times["scored"], "step"),
            ("optimization steps, scoring switched off between epochs", times["unscored"], "step"),
        ):
            plain, dp, ratio = measured["plain"][f"{key}_seconds"], measured["dp"][f"{key}_seconds"], measured[f"{key}_ratio"]
            lines.append(f"| {model} | {label} | {plain:.3f} s | {dp:.3f} s | {ratio:.2f}× | {verdict(ratio <= 3.0)} |")
    lines += [
        "",
        f"## (b) German credit, an overfit MLP: {json.dumps(GERMAN)}", "",
        f"rows: {g['rows']}; members: a seeded sample of {g['rows']['test']} training rows against the {g['rows']['test']} test rows", "",
        "| run | final train BCE | test accuracy | test mia_auc | mia_advantage | mia_tpr_at_1pct_fpr | test ε |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, r in [("non-private", g["plain"]), *((f"DP-SGD #{i}", r) for i, r in enumerate(g["dp"], 1))]:
        v = r["test"]
        lines.append(
            f"| {name} | {r['final_train_bce']:.4f} | {v['accuracy']:.4f} | {v['mia_auc']:.4f} | {v['mia_advantage']:.4f} "
            f"| {v['mia_tpr_at_1pct_fpr']:.4f} | {v['epsilon']:.3f} |"
        )
    worst = max(r["test"]["mia_auc"] for r in g["dp"])
    eps = max(r["test"]["epsilon"] for r in g["dp"])
    lines += [
        "",
        f"Target mia_auc > 0.6 without DP: {verdict(g['plain']['test']['mia_auc'] > 0.6)} ({g['plain']['test']['mia_auc']:.4f}); "
        f"<= 0.55 with DP-SGD at ε <= 1: {verdict(worst <= 0.55 and eps <= 1.0)} (highest run {worst:.4f}, largest ε {eps:.3f}).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each DP-SGD setting (fresh noise each)")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--tune", action="store_true", help="run the settings tried while tuning instead")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="opacus")  # secure-RNG notice; full-backward-hook notices
    warnings.filterwarnings("ignore", message="Full backward hook")
    if args.tune:
        print(tune())
        return
    started = time.perf_counter()
    results = {"adult": adult(args.repeats), "german": german(args.repeats)}
    results["wall_seconds"] = time.perf_counter() - started
    results["machine"] = machine()
    results["command"] = " ".join(["python", *sys.argv])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=float)
    print(report(results))


if __name__ == "__main__":
    main()
