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


class MlflowServer:
    """An ``mlflow server`` process on a fixed free 127.0.0.1 port that a test can kill and start again.

    Artifacts are proxied by the server and stored under ``artifacts_dir``.  The server's log is
    written next to ``artifacts_dir`` (``mlflow-server-<port>.log``) and shown when it fails to start.
    """

    def __init__(self, backend_uri: str, artifacts_dir: str | Path, extra_args: tuple[str, ...] = ()) -> None:
        self.artifacts_dir = Path(artifacts_dir)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.artifacts_dir.parent / f"mlflow-server-{self.port}.log"
        self.command = [
            str(MLFLOW_EXECUTABLE), "server",
            "--backend-store-uri", backend_uri,
            "--artifacts-destination", str(self.artifacts_dir),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            *extra_args,
        ]
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> str:
        """Start the server and wait until it answers; its URL."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_http(f"{self.url}/health", self.process, timeout_s, self.log_path)
        return self.url

    def kill(self) -> None:
        """SIGKILL the server and its worker processes (a crash: nothing is flushed or closed)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts_dir: str | Path,
    *,
    startup_timeout_s: float = 90.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run ``mlflow server`` on a free 127.0.0.1 port and yield its URL (``http://127.0.0.1:PORT``);
    the process group is terminated on exit (see :class:`MlflowServer`)."""
    server = MlflowServer(backend_uri, artifacts_dir, extra_args)
    try:
        yield server.start(startup_timeout_s)
    finally:
        server.stop()
