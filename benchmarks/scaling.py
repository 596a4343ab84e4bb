"""Trial throughput with one Ray node and with two, and what the driver spends per trial.

Run from the repository root (no GPU, no network; 2-3 minutes on 2 loaded cores):

    .venv/bin/python benchmarks/scaling.py                   # 8 trials of 10 epochs per setup
    .venv/bin/python benchmarks/scaling.py --trials 12 --epochs 12 --json /tmp/scaling.json

It starts, on this machine, the same local cluster as ``tests/test_multinode.py``: a Ray
head (``ray start --head --num-cpus=1``) and, for the second measurement, a second node
(``ray start --address=... --num-cpus=1``) joining it, both with token authentication on
(a private token passed as ``RAY_AUTH_MODE=token`` / ``RAY_AUTH_TOKEN_PATH``) and a private
``--temp-dir``; and a real ``mlflow server`` (sqlite, localhost). One CPU per node, so the
comparison is 1 against 2 concurrent trials. Everything it starts is killed by process
group when it ends (never a machine-wide ``ray stop``).

Each setup runs one sweep in this process, as ``ethicsweep sweep --address ... --tracking-uri
http://...`` would (prepare, :func:`run_sweep`, :func:`analyze_sweep`), with the driver's
per-trial work timed by wrapping, at class level, the searcher's ``suggest`` and
``on_trial_complete`` (tell) and the MLflow logger's ``on_trial_start`` / ``on_trial_result``
/ ``on_trial_complete`` (every call is an HTTP round trip to the server). Throughput is
the number of trials over the span from the first trial's start to the last one's end,
read from the child runs on the server; epoch time from their ``epoch_seconds`` metric.

Prints a Markdown report (machine, load, command, tables, the fitted model); ``--json``
also writes the raw numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

BIN = Path(sys.executable).parent
TIMINGS: dict[str, list[float]] = defaultdict(list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], env: dict[str, str], log: Path, started: list[subprocess.Popen]) -> subprocess.Popen:
    with log.open("ab") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    started.append(process)
    return process


def _kill_groups(processes: list[subprocess.Popen]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
        time.sleep(2 if sig == signal.SIGTERM else 0)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _agent_port() -> list[str]:
    """A free port for the node's dashboard agent (default 52365: two nodes on one machine,
    or another Ray here, would collide)."""
    return [f"--dashboard-agent-listen-port={_free_port()}"]


def _ray_start(args: list[str], env: dict[str, str], log: Path, started: list[subprocess.Popen]) -> None:
    process = _start([str(BIN / "ray"), "start", *args], env, log, started)
    if process.wait(timeout=180) != 0:
        raise SystemExit(f"ray start failed:\n{log.read_text()[-3000:]}")


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def _timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMINGS[name].append(time.perf_counter() - started)

    return wrapper


def _instrument() -> None:
    """Time the driver's per-trial work: searcher suggest/tell, the MLflow logger's calls."""
    from ethicsweep.search.optuna_searcher import OptunaSearcher
    from ethicsweep.search.tracking import MlflowTrialLogger

    for cls, methods, prefix in (
        (OptunaSearcher, ("suggest", "on_trial_complete"), "searcher."),
        (MlflowTrialLogger, ("on_trial_start", "on_trial_result", "on_trial_complete"), "mlflow."),
    ):
        for method in methods:
            setattr(cls, method, _timed(prefix + method, getattr(cls, method)))


def _searcher_cost(trials: int) -> list[dict]:
    """The searcher alone (no Ray): NSGA-II suggest / tell / save per call as the study grows,
    with random objective values. Ray Tune calls ``save`` whenever it checkpoints the
    experiment's state."""
    import random

    from ethicsweep.search.builders import build_searcher
    from ethicsweep.spec import parse_spec

    spec = parse_spec({
        "name": "searcher-cost", "data": {"dataset": "adult"}, "train": {"terms": [{"kind": "demographic_parity", "weight": 0.5}]},
        "search": {"searcher": "nsga2", "num_trials": trials, "population_size": 20,
                   "space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 5.0, "log": True},
                             "training.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
    }, source="searcher-cost")  # fmt: skip
    searcher = build_searcher(spec)
    rng = random.Random(0)
    marks = sorted({m for m in (100, 250, 500, 1000, 2000, trials) if m <= trials})
    suggest, tell, rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, trials + 1):
            a = time.perf_counter()
            searcher.suggest(f"t{i}")
            b = time.perf_counter()
            searcher.on_trial_complete(f"t{i}", {"val/accuracy": rng.random(), "val/dp_gap": rng.random()})
            suggest.append(b - a)
            tell.append(time.perf_counter() - b)
            if i in marks:
                c = time.perf_counter()
                searcher.save(os.path.join(tmp, "searcher.pkl"))
                window = slice(max(0, i - 50), i)
                rows.append({"trials": i, "suggest_ms": 1000 * sum(suggest[window]) / len(suggest[window]),
                             "tell_ms": 1000 * sum(tell[window]) / len(tell[window]), "save_ms": 1000 * (time.perf_counter() - c)})  # fmt: skip
    return rows


def _spec(name: str, root: Path, trials: int, epochs: int, concurrent: int, storage: Path):
    from ethicsweep.spec import parse_spec

    return parse_spec({
        "name": name, "seed": 4, "output_dir": str(root / "runs"), "storage_path": str(storage),
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "logistic"}, "training": {"epochs": epochs, "batch_size": 128, "lr": 0.01},
                  "terms": [{"kind": "demographic_parity", "weight": 0.5}]},
        "search": {"searcher": "nsga2", "num_trials": trials, "population_size": 4, "max_concurrent": concurrent,
                   "cpus_per_trial": 1,
                   "space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 5.0, "log": True}}},
    }, source=name)  # fmt: skip


def _measure(label: str, nodes: int, args: argparse.Namespace, root: Path, address: str, mlflow_uri: str) -> dict:
    import numpy as np
    from mlflow.tracking import MlflowClient

    from ethicsweep.analysis import analyze_sweep
    from ethicsweep.data import prepare
    from ethicsweep.search import run_sweep

    TIMINGS.clear()
    spec = _spec(f"scaling-{label}", root, args.trials, args.epochs, nodes, root / "shared")
    data = prepare(spec.data, spec.seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    outcome = run_sweep(spec, data, address=address, tracking_uri=mlflow_uri)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    analysis = analyze_sweep(spec, data, outcome)
    wall2 = time.perf_counter()
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name(spec.name)
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000) if r.data.tags.get("ethicsweep.role") == "trial"]
    starts = [r.info.start_time / 1000 for r in runs]
    ends = [r.info.end_time / 1000 for r in runs]
    epoch_seconds = [m.value for r in runs for m in client.get_metric_history(r.info.run_id, "epoch_seconds")]
    span = max(ends) - min(starts)
    timings = {k: {"calls": len(v), "mean_ms": 1000 * float(np.mean(v)), "total_s": float(np.sum(v))} for k, v in TIMINGS.items()}
    per_trial_ms = sum(v["total_s"] for v in timings.values()) * 1000 / len(runs)
    return {
        "label": label, "nodes": nodes, "concurrent": nodes, "trials": len(runs), "epochs": args.epochs,
        "nodes_used": len({r.data.tags.get("ethicsweep.node_id") for r in runs}),
        "span_s": span, "trials_per_min": 60 * len(runs) / span,
        "trial_s_mean": float(np.mean([e - s for s, e in zip(starts, ends)])),
        "epoch_s_mean": float(np.mean(epoch_seconds)), "epoch_s_median": float(np.median(epoch_seconds)),
        "sweep_wall_s": wall1 - wall0, "analysis_s": wall2 - wall1, "registered": int(len(analysis.front)),
        "driver_cpu_s": cpu1 - cpu0, "driver_cpu_per_trial_ms": 1000 * (cpu1 - cpu0) / len(runs),
        "driver_timed_per_trial_ms": per_trial_ms, "timings": timings,
        "results_per_trial": timings.get("mlflow.on_trial_result", {}).get("calls", 0) / len(runs),
    }  # fmt: skip


def _machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    import mlflow
    import ray
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(),
            "ray": ray.__version__, "mlflow": mlflow.__version__, "torch": torch.__version__, "kernel": platform.release()}  # fmt: skip


def _model(one: dict, two: dict) -> dict:
    """Throughput of N concurrent trials: R(N) = min(N / T, 1 / d), T the wall time of one
    trial on its worker (with its share of Tune's per-trial overhead), d the driver's serial
    time per trial (Tune's controller loop, the searcher, the MLflow calls)."""
    trial_s = 60 / one["trials_per_min"]  # one at a time: the span is the sum of the trials
    d_timed = two["driver_timed_per_trial_ms"] / 1000
    d_cpu = max(one["driver_cpu_per_trial_ms"], two["driver_cpu_per_trial_ms"]) / 1000
    d = max(d_timed, d_cpu)
    out = {"T_s": trial_s, "d_timed_s": d_timed, "d_cpu_s": d_cpu, "d_s": d, "ceiling_trials_per_min": 60 / d}
    out["predicted_2"] = 60 * min(2 / trial_s, 1 / d)
    out["at_100"] = {"ideal_trials_per_min": 60 * 100 / trial_s, "driver_demand": 100 * d / trial_s,
                     "predicted_trials_per_min": 60 * min(100 / trial_s, 1 / d)}  # fmt: skip
    out["nodes_at_ceiling"] = trial_s / d
    result_ms = two["timings"].get("mlflow.on_trial_result", {}).get("mean_ms", 0.0)
    out["results_per_s_at_100"] = 100 * two["results_per_trial"] / trial_s
    out["mlflow_result_load_at_100"] = out["results_per_s_at_100"] * result_ms / 1000
    return out


def _report(machine: dict, load: tuple, load_after: tuple, command: str, one: dict, two: dict, model: dict, searcher: list[dict]) -> str:
    rows = []
    for r in (one, two):
        rows.append(f"| {r['nodes']} | {r['concurrent']} | {r['nodes_used']} | {r['trials']} x {r['epochs']} epochs | {r['span_s']:.1f} | "
                    f"**{r['trials_per_min']:.1f}** | {r['trial_s_mean']:.1f} | {r['epoch_s_median']:.2f} | {r['sweep_wall_s']:.1f} | "
                    f"{r['analysis_s']:.1f} ({r['registered']} versions) |")  # fmt: skip
    names = sorted(set(one["timings"]) | set(two["timings"]))
    timing_rows = []
    for name in names:
        cells = []
        for r in (one, two):
            t = r["timings"].get(name)
            cells.append(f"{t['calls']} | {t['mean_ms']:.1f}" if t else "0 | -")
        timing_rows.append(f"| `{name}` | {' | '.join(cells)} |")
    return "\n".join([
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_mib']} MiB; Linux {machine['kernel']}; "
        f"Python {machine['python']}, Ray {machine['ray']}, MLflow {machine['mlflow']}, torch {machine['torch']}.",
        f"Load average (1, 5, 15 min) before: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}; after: "
        f"{load_after[0]:.2f}, {load_after[1]:.2f}, {load_after[2]:.2f} (other work shared the machine).",
        f"Command: `{command}`",
        "",
        "| nodes | concurrent trials | nodes used | trials | span (s) | trials / min | trial (s) | epoch (s, median) | sweep wall (s) | analysis (s) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Speed-up 1 → 2 nodes: **{two['trials_per_min'] / one['trials_per_min']:.2f}x** (the model predicts "
        f"{model['predicted_2'] / one['trials_per_min']:.2f}x).",
        "",
        "Driver-side cost (measured in the driver, per call):",
        "",
        "| call | calls (1 node) | mean ms (1 node) | calls (2 nodes) | mean ms (2 nodes) |",
        "|---|---:|---:|---:|---:|",
        *timing_rows,
        "",
        f"Per trial on the driver: timed calls {two['driver_timed_per_trial_ms']:.0f} ms (2 nodes), "
        f"{one['driver_timed_per_trial_ms']:.0f} ms (1 node); the driver process's CPU time per trial (Tune's controller, "
        f"Ray's client, the callbacks) {one['driver_cpu_per_trial_ms']:.0f} ms (1 node), {two['driver_cpu_per_trial_ms']:.0f} ms (2 nodes).",
        "",
        f"Model inputs: T = {model['T_s']:.1f} s per trial, d = {1000 * model['d_s']:.0f} ms of serial driver time per trial "
        f"→ driver ceiling {model['ceiling_trials_per_min']:.0f} trials/min, reached at about {model['nodes_at_ceiling']:.0f} "
        f"concurrent trials. At 100 concurrent trials: ideal {model['at_100']['ideal_trials_per_min']:.0f} trials/min, the "
        f"driver would need {model['at_100']['driver_demand']:.1f} s of serial work per second → predicted "
        f"{model['at_100']['predicted_trials_per_min']:.0f} trials/min; the per-epoch MLflow calls alone "
        f"({model['results_per_s_at_100']:.0f}/s) would need {model['mlflow_result_load_at_100']:.1f} s per second.",
        "",
        "The searcher alone (NSGA-II, population 20, no Ray), per call as the study grows (mean of the last 50 calls):",
        "",
        "| trials in the study | suggest (ms) | tell (ms) | save (ms) |",
        "|---:|---:|---:|---:|",
        *(f"| {r['trials']} | {r['suggest_ms']:.2f} | {r['tell_ms']:.2f} | {r['save_ms']:.1f} |" for r in searcher),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per setup (default 8)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial (default 10: trials of a few seconds)")
    parser.add_argument("--searcher-trials", type=int, default=1000, help="trials of the searcher-only measurement (default 1000)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    python = sys.executable
    with contextlib.suppress(ValueError):
        python = str(Path(sys.executable).relative_to(Path.cwd()))
    command = " ".join([python, *sys.argv])
    load = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="es-scaling-"))
    token = root / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI"):
        os.environ.pop(key, None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
                      MLFLOW_DISABLE_TELEMETRY="true", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1")  # fmt: skip
    env = dict(os.environ)
    started: list[subprocess.Popen] = []
    gcs_port, mlflow_port = _free_port(), _free_port()
    address, mlflow_uri = f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{mlflow_port}"
    common = ["--num-cpus=1", f"--temp-dir={root / 'ray'}", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000",
              "--disable-usage-stats"]  # fmt: skip
    try:
        _start([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination", str(root / "mlflow-artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
                "--workers", "1"], env, root / "mlflow.log", started)  # fmt: skip
        from ray._private.utils import get_ray_client_dependency_error

        client = [] if get_ray_client_dependency_error() is not None else [f"--ray-client-server-port={_free_port()}"]
        _ray_start(["--head", f"--port={gcs_port}", "--include-dashboard=false", *client, *common, *_agent_port()], env, root / "head.log", started)
        _wait_http(f"{mlflow_uri}/health", 240)
        import ray

        _instrument()
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        print(f"1 node: {args.trials} trials...", file=sys.stderr)
        one = _measure("1node", 1, args, root, address, mlflow_uri)
        _ray_start([f"--address={address}", *common, *_agent_port()], env, root / "worker.log", started)
        deadline = time.monotonic() + 60
        while sum(1 for n in ray.nodes() if n["Alive"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"2 nodes: {args.trials} trials...", file=sys.stderr)
        two = _measure("2nodes", 2, args, root, address, mlflow_uri)
    except BaseException:
        print(f"failed; logs kept in {root}", file=sys.stderr)
        raise
    finally:
        # disconnect first: a driver whose raylet dies under it is ended by Ray at once,
        # before it could kill the rest
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            with contextlib.suppress(Exception):
                sys.modules["ray"].shutdown()
        _kill_groups(started)
    shutil.rmtree(root, ignore_errors=True)
    model = _model(one, two)
    load_after = os.getloadavg()
    print(f"searcher alone: {args.searcher_trials} trials...", file=sys.stderr)
    searcher = _searcher_cost(args.searcher_trials)
    machine = _machine()
    print(_report(machine, load, load_after, command, one, two, model, searcher))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "load": load, "load_after": load_after, "command": command,
                                         "one": one, "two": two, "model": model, "searcher": searcher}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
