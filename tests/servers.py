"""Real server processes for integration tests (no mocks): an ``mlflow server`` on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MLFLOW_EXECUTABLE = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen, grace_s: float = 3.0) -> None:
    """Terminate ``process`` and its children (it leads its own process group), then kill if needed."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=grace_s)


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts_dir: str | Path,
    *,
    startup_timeout_s: float = 90.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run ``mlflow server`` on a free 127.0.0.1 port and yield its URL (``http://127.0.0.1:PORT``).

    Artifacts are proxied by the server and stored under ``artifacts_dir``.  The server's log is
    written next to ``artifacts_dir`` (``mlflow-server-<port>.log``) and shown when it fails to start.
    The process group is terminated on exit.
    """
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = artifacts_dir.parent / f"mlflow-server-{port}.log"
    command = [
        str(MLFLOW_EXECUTABLE), "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts_dir),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"{url}/health", process, startup_timeout_s, log_path)
        yield url
    finally:
        stop_process(process)
