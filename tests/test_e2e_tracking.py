"""End to end: the MLflow server is lost mid-sweep. A real `mlflow server` is killed
(SIGKILL) while trials run; the sweep goes on, holds its writes and retries them. When the
server comes back during the sweep, every write is made and the sweep ends normally;
when it is still down at the end, the sweep says so and `--resume` writes them once it is
back. Either way nothing is lost or written twice: one run per trial, every epoch's
metrics once, the registered versions' tags equal to their runs' metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from processes import free_port, kill_groups, start_mlflow, wait_http

pytestmark = pytest.mark.e2e

EPOCHS = 4


class Server:
    """An `mlflow server` on one port that can be killed and started again on its store."""

    def __init__(self, root: Path, port: int, env: dict[str, str]):
        self.root, self.port, self.env, self.started = root, port, env, []
        self.uri = f"http://127.0.0.1:{port}"
        root.mkdir()

    def start(self) -> None:
        process = start_mlflow(self.root, self.port, self.env, self.started)
        wait_http(f"{self.uri}/health", process, self.root / "mlflow.log", 180)

    def kill(self) -> None:
        kill_groups(self.started, grace_s=0)
        self.started.clear()


@pytest.fixture
def server(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    found = Server(tmp_path / "server", free_port(), env)
    found.start()
    yield found
    found.kill()


def _spec(root: Path, trials: int, wait_s: float) -> Path:
    spec = {
        "name": "ci-outage", "seed": 6, "output_dir": str(root / "runs"), "tracking_wait_s": wait_s,
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "logistic"}, "training": {"epochs": EPOCHS, "batch_size": 512, "lr": 0.01},
                  "terms": [{"kind": "demographic_parity", "weight": 0.5}]},
        "search": {"num_trials": trials, "max_concurrent": 2, "population_size": 2,
                   "space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 5.0, "log": True}}},
    }  # fmt: skip
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _sweep(path: Path, server: Server, *extra: str, kill_at: str | None = None, restart_at: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run the sweep against ``server``; kill the server when a line starts with
    ``kill_at``, start it again at the first later line that contains one of ``restart_at``.
    The exit status and everything printed."""
    command = [sys.executable, "-m", "ethicsweep.cli", "sweep", str(path), "--tracking-uri", server.uri, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=server.env)
    lines, killed, restarted = [], False, False
    try:
        for line in process.stdout:
            lines.append(line)
            if kill_at and not killed and line.startswith(kill_at):
                server.kill()
                killed = True
            elif killed and not restarted and any(marker in line for marker in restart_at):
                server.start()
                restarted = True
        return process.wait(timeout=900), "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()


def _check_nothing_lost(server: Server, root: Path, trials: int) -> None:
    (run_dir,) = [p for p in (root / "runs" / "ci-outage").iterdir() if p.is_dir() and p.name[0].isdigit()]
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == trials and (table["status"] == "ok").all() and (table["epochs"] == EPOCHS).all()
    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    runs = client.search_runs([client.get_experiment_by_name("ci-outage").experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("ethicsweep.role") == "sweep"]
    assert parent.info.status == "FINISHED"
    children = {r.info.run_id: r for r in runs if r.data.tags.get("ethicsweep.role") == "trial"}
    assert sorted(children) == sorted(table["run_id"])  # one run per trial, each in trials.csv
    for row in table.itertuples():
        run = children[row.run_id]
        assert run.info.status == "FINISHED" and run.data.tags["ethicsweep.trial_id"] == row.trial_id
        for key in ("val/accuracy", "val/dp_gap", "loss/total"):  # every epoch, once
            assert [m.step for m in client.get_metric_history(row.run_id, key)] == list(range(1, EPOCHS + 1)), (row.trial_id, key)
        assert run.data.metrics["val/accuracy"] == pytest.approx(table.loc[row.Index, "val/accuracy"], abs=1e-12)
        assert run.data.params["terms.demographic_parity.weight"] == str(table.loc[row.Index, "param:terms.demographic_parity.weight"])
    versions = client.search_model_versions("name='ci-outage'")
    assert versions
    for version in versions:
        run = children[version.run_id]
        for key in ("val/accuracy", "val/dp_gap"):
            assert float(version.tags[key]) == pytest.approx(run.data.metrics[key], abs=1e-12), key


def test_a_server_lost_mid_sweep_and_back_before_the_end_loses_nothing(tmp_path: Path, server: Server) -> None:
    path = _spec(tmp_path, trials=8, wait_s=180)
    rc, out = _sweep(path, server, kill_at="[2/8]", restart_at=("[5/8]", "retrying for"))
    assert rc == 0, out[-4000:]
    assert "MLflow not answering" in out, out[-4000:]  # the outage was felt: writes were held
    _check_nothing_lost(server, tmp_path, 8)


def test_a_server_down_at_the_end_keeps_the_writes_for_resume(tmp_path: Path, server: Server) -> None:
    path = _spec(tmp_path, trials=4, wait_s=3)
    rc, out = _sweep(path, server, kill_at="[1/4]")
    assert rc == 2, out[-4000:]
    assert "stopped answering" in out and "--resume" in out and "Traceback" not in out, out[-4000:]
    server.start()
    rc, out = _sweep(path, server, "--resume")
    assert rc == 0, out[-4000:]
    _check_nothing_lost(server, tmp_path, 4)
