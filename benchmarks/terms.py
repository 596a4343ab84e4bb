"""Each ethics term off versus on, on real data: same seed, same splits, test-split metrics.

Run from the repository root:

    python benchmarks/terms.py            # writes benchmarks/RESULTS-terms.md

Every case trains the same model twice — without the term, then with it — with the plain
training loop (no Ray), and scores the test split. DP-SGD and membership inference are
measured by benchmarks/privacy.py.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import ethicsweep
from ethicsweep.data import PreparedData, prepare
from ethicsweep.spec import DataSpec, TrainConfig
from ethicsweep.trainables.scoring import test_metrics
from ethicsweep.trainables.train import train

SEED = 0
MLP = {"model": {"kind": "mlp", "hidden": 64}, "training": {"epochs": 10, "lr": 0.002, "batch_size": 512}}


@dataclass(frozen=True)
class Case:
    title: str
    data: dict[str, Any]
    base: dict[str, Any]
    term: dict[str, Any]
    metrics: tuple[str, ...]
    target: str

    def config(self, with_term: bool) -> TrainConfig:
        document = {**self.base, "seed": SEED}
        if with_term:
            document = {**document, "terms": [self.term]}
        return TrainConfig.model_validate(document)


CASES = [
    Case(
        "Adult (sex): demographic-parity constraint, bound 0.02, no hand-tuned weight",
        {"dataset": "adult", "sensitive": ["sex"]},
        MLP,
        {"kind": "demographic_parity", "mode": "constraint", "bound": 0.02},
        ("accuracy", "dp_gap"),
        "test dp_gap <= 0.03 at accuracy >= 0.835",
    ),
    Case(
        "Adult (sex): equalized-odds constraint, bound 0.02",
        {"dataset": "adult", "sensitive": ["sex"]},
        MLP,
        {"kind": "equalized_odds", "mode": "constraint", "bound": 0.02, "dual_lr": 0.2},
        ("accuracy", "eo_gap"),
        "test eo_gap <= 0.03 at accuracy >= 0.845",
    ),
    Case(
        "Adult (sex): confident-error penalty, tau 0.9",
        {"dataset": "adult", "sensitive": ["sex"]},
        MLP,
        {"kind": "confident_error", "tau": 0.9, "weight": 10.0},
        ("accuracy", "confident_error_rate"),
        "confident_error_rate halved at <= 1 point of accuracy",
    ),
    Case(
        "COMPAS (race): expected cost, a false positive costs 3x a false negative",
        {"dataset": "compas", "sensitive": ["race"]},
        {
            "model": {"kind": "logistic"},
            "training": {"epochs": 30, "lr": 0.01, "batch_size": 256},
            "harm": {"default": [[0, 3, 1], [1, 0, 1]]},
        },
        {"kind": "expected_cost", "weight": 1.0},
        ("accuracy", "harm"),
        "mean harm at least 20% below plain cross-entropy",
    ),
    Case(
        "Adult (sex): leakage adversary through gradient reversal",
        {"dataset": "adult", "sensitive": ["sex"]},
        MLP,
        {"kind": "leakage_adversary", "weight": 1.0},
        ("accuracy", "leakage"),
        "leakage at least halved",
    ),
]


def run_case(case: Case, data: PreparedData) -> tuple[dict[str, float], dict[str, float], float]:
    results = []
    started = time.perf_counter()
    for with_term in (False, True):
        config = case.config(with_term)
        state = train(config, data)
        results.append(test_metrics(state.model, config, data).values)
    return results[0], results[1], time.perf_counter() - started


def main(out: Path = Path(__file__).with_name("RESULTS-terms.md")) -> None:
    torch.set_num_threads(1)
    lines = [
        "# Ethics terms off versus on (test split)",
        "",
        "Command: `python benchmarks/terms.py` (from the repository root). Seed 0; each case trains",
        "the same model without and with the term on the same splits, and scores the untouched",
        "test split. Plain training loop, one thread.",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread; Python {platform.python_version()}, "
        f"torch {torch.__version__}, ethicsweep {ethicsweep.__version__}.",
        "",
    ]
    cache: dict[str, PreparedData] = {}
    for case in CASES:
        key = repr(sorted(case.data.items()))
        if key not in cache:
            cache[key] = prepare(DataSpec.model_validate(case.data), SEED)
        off, on, seconds = run_case(case, cache[key])
        lines += [f"## {case.title}", "", f"Target: {case.target}. Term: `{case.term}`.", ""]
        lines += ["| metric | term off | term on | change |", "|---|---|---|---|"]
        for metric in case.metrics:
            change = on[metric] - off[metric]
            relative = f" ({change / off[metric]:+.0%})" if off[metric] else ""
            lines.append(f"| {metric} | {off[metric]:.4f} | {on[metric]:.4f} | {change:+.4f}{relative} |")
        lines += ["", f"({seconds:.1f} s for both runs)", ""]
        print(f"{case.title}: " + ", ".join(f"{m} {off[m]:.4f} -> {on[m]:.4f}" for m in case.metrics), flush=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
