"""End to end on a real two-node Ray cluster: a head and a second node started with
`ray start` as separate processes on this machine, token authentication on, a real
`mlflow server`, and `ethicsweep sweep --address ...` run against them, directly and
through `ray job submit`.

Each node has one CPU and the sweep runs two trials at once, so trials must land on both
nodes; their checkpoints go to a shared storage path that the driver reads back to
evaluate and register the front. Everything started here is torn down by process group,
never with a machine-wide `ray stop` (other Ray instances may be running).

Token authentication: the test generates its own token, writes it to a private file and
passes it to every process it starts (`RAY_AUTH_MODE=token`, `RAY_AUTH_TOKEN_PATH`), so
neither ``~/.ray/auth_token`` nor a disabled mode is relied on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from processes import BIN, free_port, kill_groups, start, start_mlflow, tail, wait_http

pytestmark = pytest.mark.e2e

N_TRIALS = 6
N_JOB_TRIALS = 3




def _dashboard_available() -> str | None:
    """None when Ray's dashboard can start (ray[default] installed), else why not."""
    try:
        from ray._private.utils import get_dashboard_dependency_error
    except ImportError:  # a Ray without this helper: let `ray start` decide
        return None
    error = get_dashboard_dependency_error()
    return None if error is None else f"Ray's dashboard (and so `ray job submit`) needs ray[default]: {error}"


def _client_port() -> list[str]:
    """A free port for the Ray Client server, which starts (on 10001 by default, maybe taken by
    another Ray on this machine) only where ray[client] is installed."""
    from ray._private.utils import get_ray_client_dependency_error

    return [] if get_ray_client_dependency_error() is not None else [f"--ray-client-server-port={free_port()}"]


def _agent_port() -> list[str]:
    """A free port for a node's dashboard agent: its default, 52365, would be taken by the
    other node (or another Ray on this machine)."""
    return [f"--dashboard-agent-listen-port={free_port()}"]




def _kill_by_path(marker: str) -> None:
    """SIGKILL any process whose command line names ``marker`` (a directory only this test
    created): a Ray process that left its group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(re.escape(marker) + r"(/|\s|$)", cmdline):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)








def _wait_started(process: subprocess.Popen, log: Path, what: str, timeout_s: float) -> None:
    """`ray start` (without --block) returns once the node's processes run."""
    try:
        rc = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what} did not start within {timeout_s:.0f} s:\n{tail(log)}") from None
    assert rc == 0, f"{what} failed ({rc}):\n{tail(log)}"


_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.monotonic() + float(sys.argv[2])
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "cpus": n["Resources"].get("CPU", 0)} for n in alive]))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("multinode")
    # Ray puts Unix sockets under its temp dir (107-byte limit): keep the path short.
    ray_tmp = tmp_path_factory.mktemp("ray")
    private_tmp = None
    if len(str(ray_tmp)) > 50:
        private_tmp = ray_tmp = Path(tempfile.mkdtemp(prefix="es-ray-"))
    token = root / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI")}
    env.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
        MLFLOW_DISABLE_TELEMETRY="true",
    )  # fmt: skip
    dashboard_missing = _dashboard_available()
    gcs_port, dashboard_port, mlflow_port = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{gcs_port}"
    started: list[subprocess.Popen] = []
    logs = root / "logs"
    logs.mkdir()
    try:
        # the MLflow server is the slowest to start: first, and waited for last
        mlflow = start_mlflow(root, mlflow_port, env, started)
        common = ["--num-cpus=1", f"--temp-dir={ray_tmp}", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000",
                  "--disable-usage-stats"]  # fmt: skip
        dashboard = (
            ["--include-dashboard=false"]
            if dashboard_missing
            else ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
        )
        head = start(
            [str(BIN / "ray"), "start", "--head", f"--port={gcs_port}", *_client_port(), *dashboard, *common, *_agent_port()],
            env, logs / "ray-head.log", started,
        )  # fmt: skip
        _wait_started(head, logs / "ray-head.log", "the Ray head", 120)
        worker = start([str(BIN / "ray"), "start", f"--address={address}", *common, *_agent_port()], env, logs / "ray-worker.log", started)
        _wait_started(worker, logs / "ray-worker.log", "the second Ray node", 120)
        found = subprocess.run([sys.executable, "-c", _NODES, address, "60"], env=env, capture_output=True, text=True, timeout=120)
        assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]
        nodes = json.loads(found.stdout.strip().splitlines()[-1])
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", mlflow, root / "mlflow.log", 180)
        yield {
            "root": root, "env": env, "address": address, "nodes": nodes, "token": token.read_text(),
            "dashboard": None if dashboard_missing else f"http://127.0.0.1:{dashboard_port}",
            "dashboard_missing": dashboard_missing, "mlflow": f"http://127.0.0.1:{mlflow_port}", "storage": root / "shared",
        }  # fmt: skip
    finally:
        kill_groups(started)
        _kill_by_path(str(ray_tmp))
        if private_tmp is not None:
            shutil.rmtree(private_tmp, ignore_errors=True)


def _spec(cluster: dict, name: str, trials: int, epochs: tuple[int, int], batch_size: int = 2048, reuse_actors: bool = True) -> Path:
    spec = {
        "name": name, "seed": 2, "output_dir": str(cluster["root"] / "runs"),
        "data": {"dataset": "adult", "sensitive": ["sex"]},
        "train": {"model": {"kind": "logistic"}, "training": {"epochs": epochs[1], "batch_size": batch_size, "lr": 0.01},
                  "terms": [{"kind": "demographic_parity", "weight": 0.5}]},
        "search": {"searcher": "nsga2", "num_trials": trials, "population_size": 3, "max_concurrent": 2, "cpus_per_trial": 1,
                   "reuse_actors": reuse_actors,
                   "space": {"terms.demographic_parity.weight": {"type": "float", "low": 0.01, "high": 5.0, "log": True},
                             "training.epochs": {"type": "int", "low": epochs[0], "high": epochs[1]}}},
    }  # fmt: skip
    path = cluster["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _ethicsweep() -> list[str]:
    script = BIN / "ethicsweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ethicsweep.cli"]


def _server_runs(cluster: dict, name: str) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(tracking_uri=cluster["mlflow"], registry_uri=cluster["mlflow"])
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"experiment {name!r} is not on the server"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ethicsweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [(r.info.run_id, r.info.status) for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return client, parents, children


def _trials_csv(cluster: dict, name: str) -> pd.DataFrame:
    (run_dir,) = [p for p in (cluster["root"] / "runs" / name).iterdir() if p.is_dir() and p.name[0].isdigit()]
    return pd.read_csv(run_dir / "trials.csv")


def _check_front_registered(client: MlflowClient, name: str, trials: pd.DataFrame) -> None:
    """Every registered version is a front trial, one per distinct front point (trials with
    identical objective values count once)."""
    front = trials[trials["front_rank"] == 0]
    versions = client.search_model_versions(f"name='{name}'")
    registered = {v.tags["trial_id"] for v in versions}
    assert len(versions) == len(registered) >= 1
    assert registered <= set(front["trial_id"])
    points = {(a, g) for a, g in zip(front["val/accuracy"], front["val/dp_gap"])}
    assert len(registered) == len(points)


@pytest.fixture(scope="module")
def direct_sweep(cluster: dict) -> dict:
    name = "ci-multinode"
    # A fresh worker per trial: with reused workers Ray Tune hands a waiting trial to an
    # idle one and drops the worker still starting for it (~10 s on a loaded machine:
    # torch, the data from the head's object store), so trials shorter than that start
    # could all run on the first node. Two trials at once with one CPU per node put their
    # workers on both nodes.
    spec = _spec(cluster, name, N_TRIALS, (3, 6), batch_size=512, reuse_actors=False)
    command = [*_ethicsweep(), "sweep", str(spec), "--address", cluster["address"], "--tracking-uri", cluster["mlflow"],
               "--storage-path", str(cluster["storage"])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=cluster["env"], timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"name": name, "trials": _trials_csv(cluster, name), "stdout": done.stdout}


def test_two_nodes_with_token_authentication(cluster: dict) -> None:
    nodes = cluster["nodes"]
    assert len(nodes) == 2 and len({n["id"] for n in nodes}) == 2
    assert [n["cpus"] for n in nodes] == [1.0, 1.0]
    if cluster["dashboard"] is not None:  # the dashboard refuses a request without the token
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{cluster['dashboard']}/api/jobs/", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{cluster['dashboard']}/api/jobs/", headers={"Authorization": f"Bearer {cluster['token']}"})
        with urllib.request.urlopen(request, timeout=10) as answered:
            assert answered.status == 200


def test_every_trial_is_on_the_server_and_trials_ran_on_both_nodes(cluster: dict, direct_sweep: dict) -> None:
    _, _, children = _server_runs(cluster, direct_sweep["name"])
    assert len(children) == N_TRIALS
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["ethicsweep.trial_id"] for r in children} == set(direct_sweep["trials"]["trial_id"])
    used = {r.data.tags.get("ethicsweep.node_id") for r in children}
    assert used == {n["id"] for n in cluster["nodes"]}, "trials did not land on both nodes"
    assert all(r.data.tags.get("ethicsweep.hostname") for r in children)


def test_checkpoints_are_on_the_shared_storage(cluster: dict, direct_sweep: dict) -> None:
    trials = direct_sweep["trials"]
    assert (trials["status"] == "ok").all()
    storage = str(cluster["storage"] / direct_sweep["name"])
    assert all(str(path).startswith(storage) for path in trials["checkpoint"]), list(trials["checkpoint"])


def test_the_registered_versions_are_the_front(cluster: dict, direct_sweep: dict) -> None:
    client, _, _ = _server_runs(cluster, direct_sweep["name"])
    _check_front_registered(client, direct_sweep["name"], direct_sweep["trials"])


def test_registered_models_are_in_the_servers_artifact_store(cluster: dict, direct_sweep: dict) -> None:
    client = MlflowClient(tracking_uri=cluster["mlflow"], registry_uri=cluster["mlflow"])
    experiment = client.get_experiment_by_name(direct_sweep["name"])
    assert not experiment.artifact_location.startswith("file:"), experiment.artifact_location


def test_ray_job_submit_runs_a_sweep(cluster: dict) -> None:
    if cluster["dashboard"] is None:
        pytest.skip(cluster["dashboard_missing"])
    name = "ci-multinode-job"
    spec = _spec(cluster, name, N_JOB_TRIALS, (1, 2))
    # no --working-dir: nothing is uploaded; the job runs the installed ethicsweep by path
    command = [str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"], "--submission-id", f"{name}-{secrets.token_hex(4)}",
               "--entrypoint-num-cpus", "0", "--",
               *_ethicsweep(), "sweep", str(spec), "--address", "auto", "--tracking-uri", cluster["mlflow"],
               "--storage-path", str(cluster["storage"])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=cluster["env"], timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    client, _, children = _server_runs(cluster, name)
    assert len(children) == N_JOB_TRIALS and {r.info.status for r in children} == {"FINISHED"}
    _check_front_registered(client, name, _trials_csv(cluster, name))
