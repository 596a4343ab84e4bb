"""Trial throughput when 1, 2 or 4 trials share one GPU (``--gpus-per-trial 1, 0.5, 0.25``).

A prepared script for a machine with an NVIDIA GPU and the CUDA build of torch installed
before ethicsweep (see the README). Run from the repository root:

    .venv/bin/python benchmarks/gpu_throughput.py                       # 12 trials per setting
    .venv/bin/python benchmarks/gpu_throughput.py --trials 16 --epochs 8 --hidden 512

For each share g in 1, 0.5, 0.25 it runs a real sweep through the CLI on this machine
(``ethicsweep sweep SPEC --gpus-per-trial g --cpus-per-trial C``, its own embedded Ray and
MLflow store under a temporary directory), with ``search.max_concurrent`` = 1 / g so that
1, 2 or 4 trials train on the GPU at once. The same spec and seed in every setting: an MLP
on the bundled Adult data with a demographic-parity penalty, NSGA-II over its weight and
the learning rate, a fixed number of epochs. From the sweep's MLflow store it reads, per
trial, the start and end of its child run, its ``epoch_seconds`` history and its
``ethicsweep.device`` tag (every trial must report ``cuda``), and writes a Markdown table:
trials per minute (trials over the span from the first start to the last end), mean trial
time, median epoch time, and the speed-up over one trial per GPU.

Exits with status 2 and a one-line message, before starting anything, when no GPU is
visible (torch.cuda.is_available() is False). (A sweep asking for a GPU share on a Ray
that sees none is refused by ethicsweep itself, and this script stops there.)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
SHARES = (1.0, 0.5, 0.25)


def _gpu_or_exit() -> dict:
    import torch

    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if torch.version.cuda else ", a CPU-only build")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        sys.stderr.write(
            f"gpu_throughput: no GPU is visible ({build}{where}): nothing was run. Run this on a machine with an "
            "NVIDIA GPU, with the CUDA build of torch installed before ethicsweep (`pip install torch==2.13.0` on Linux).\n"
        )
        raise SystemExit(2)
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "memory_gib": props.total_memory / 2**30, "count": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda}  # fmt: skip


def _spec(name: str, args: argparse.Namespace, concurrent: int) -> dict:
    return {
        "name": name, "seed": 0,
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "mlp", "hidden": args.hidden, "layers": args.layers},
                  "training": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 0.002},
                  "terms": [{"kind": "demographic_parity", "weight": 0.5}]},
        "search": {"searcher": "nsga2", "num_trials": args.trials, "population_size": 4, "max_concurrent": concurrent,
                   "space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 3.0, "log": True},
                             "training.lr": {"type": "float", "low": 0.0005, "high": 0.01, "log": True}}},
    }  # fmt: skip


def _ethicsweep() -> list[str]:
    script = BIN / "ethicsweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ethicsweep.cli"]


def _measure(share: float, args: argparse.Namespace, root: Path) -> dict:
    import numpy as np
    from mlflow.tracking import MlflowClient

    concurrent = round(1 / share)
    name = f"gpu-share-{concurrent}"
    spec_path = root / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(name, args, concurrent)))
    command = [*_ethicsweep(), "sweep", str(spec_path), "--output-dir", str(root / "runs"),
               "--gpus-per-trial", f"{share:g}", "--cpus-per-trial", f"{args.cpus_per_trial:g}"]  # fmt: skip
    print(f"{concurrent} trial(s) per GPU: {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"gpu_throughput: the sweep with --gpus-per-trial {share:g} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")  # fmt: skip
    uri = f"sqlite:///{root / 'runs' / name / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=10_000) if r.data.tags.get("ethicsweep.role") == "trial"]
    devices = sorted({r.data.tags.get("ethicsweep.device", "?") for r in runs})
    if devices != ["cuda"]:
        raise SystemExit(f"gpu_throughput: trials with --gpus-per-trial {share:g} ran on {devices}, not only on cuda")
    starts = [r.info.start_time / 1000 for r in runs]
    ends = [r.info.end_time / 1000 for r in runs]
    epochs = [m.value for r in runs for m in client.get_metric_history(r.info.run_id, "epoch_seconds")]
    span = max(ends) - min(starts)
    return {"share": share, "concurrent": concurrent, "trials": len(runs), "span_s": span,
            "trials_per_min": 60 * len(runs) / span, "trial_s": float(np.mean([e - s for s, e in zip(starts, ends)])),
            "epoch_s_median": float(np.median(epochs)), "epoch_s_p90": float(np.percentile(epochs, 90)), "wall_s": wall}  # fmt: skip


def _table(gpu: dict, args: argparse.Namespace, command: str, rows: list[dict]) -> str:
    base = rows[0]["trials_per_min"]
    load = os.getloadavg()
    lines = [
        f"## GPU trial throughput ({time.strftime('%Y-%m-%d', time.gmtime())})",
        "",
        f"GPU: {gpu['name']} ({gpu['memory_gib']:.0f} GiB; {gpu['count']} visible, one used by Ray per trial share); "
        f"torch {gpu['torch']}, CUDA {gpu['cuda']}; {os.cpu_count()} CPU cores; Linux {platform.release()}; "
        f"load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} at the end.",
        f"Trials: MLP {args.layers}x{args.hidden} on Adult, {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.trials} trials per setting, {args.cpus_per_trial:g} CPU per trial.",
        f"Command: `{command}`",
        "",
        "| --gpus-per-trial | trials at once | trials | span (s) | trials / min | speed-up | trial (s) | epoch (s, median) | epoch (s, p90) | sweep wall (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['share']:g} | {r['concurrent']} | {r['trials']} | {r['span_s']:.1f} | **{r['trials_per_min']:.1f}** | "
                     f"{r['trials_per_min'] / base:.2f}x | {r['trial_s']:.1f} | {r['epoch_s_median']:.3f} | {r['epoch_s_p90']:.3f} | {r['wall_s']:.0f} |")  # fmt: skip
    lines += ["", "Trials per minute count the span from the first trial's start to the last one's end (Ray's and the "
              "driver's start-up excluded; the sweep wall time includes them)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per setting (default 12)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (4 trials at once need 4)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per sweep before giving up")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/RESULTS-gpu-throughput.md"), help="the Markdown table is written here")
    args = parser.parse_args()
    gpu = _gpu_or_exit()
    python = sys.executable
    try:
        python = str(Path(sys.executable).relative_to(Path.cwd()))
    except ValueError:
        pass
    command = " ".join([python, *sys.argv])
    with tempfile.TemporaryDirectory(prefix="es-gpu-") as tmp:
        rows = [_measure(share, args, Path(tmp)) for share in SHARES]
    table = _table(gpu, args, command, rows)
    args.output.write_text(table)
    print(table)
    print(f"written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
