"""Helpers of the end-to-end tests that start servers as real processes: free ports, process
groups started and torn down as a whole, waiting for an HTTP endpoint, an MLflow server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def start(command: list[str], env: dict[str, str], log: Path, started: list[subprocess.Popen]) -> subprocess.Popen:
    """Start ``command`` in a new process group (everything it spawns stays in it)."""
    handle = log.open("ab")
    process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    started.append(process)
    return process


def kill_groups(processes: list[subprocess.Popen], grace_s: float = 3.0) -> None:
    """SIGTERM the process groups the test started, then SIGKILL what is left of them."""

    def signal_all(sig: int) -> list[int]:
        alive = []
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
                alive.append(process.pid)
        return alive

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while signal_all(0) and time.monotonic() < deadline:
        time.sleep(0.2)
    signal_all(signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None and process.returncode != 0:
            raise AssertionError(f"{url}: the server exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s:\n{tail(log)}")


def start_mlflow(root: Path, port: int, env: dict[str, str], started: list[subprocess.Popen]) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:``port`` with its store and artifacts under ``root``
    (the same ones each time it is started there). Does not wait for it to answer."""
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "mlflow-artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    return start(command, env, root / "mlflow.log", started)
