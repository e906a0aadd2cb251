"""`ui` and `dashboard` behave like the servers they wrap (real `mlflow server` / optuna-dashboard processes):
a taken port or a bad store is one line and exit 2; SIGTERM stops the server and every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from servers import free_port, stop_process
from studies_support import cli_command, clean_env

STARTUP_S = 180


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def mlflow_store(tmp_path: Path) -> str:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    MlflowClient(store).search_experiments()  # creates the store's tables
    return store


@pytest.fixture
def optuna_storage(tmp_path: Path) -> str:
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="servers", storage=storage)
    return storage


def server_args(kind: str, store: str, port: int) -> list[str]:
    if kind == "ui":
        return ["ui", "--backend-store-uri", store, "--port", str(port)]
    return ["dashboard", "--storage", store, "--port", str(port)]


@pytest.mark.parametrize("kind", ["ui", "dashboard"])
def test_a_taken_port_is_one_line_and_exit_2(kind, mlflow_store, optuna_storage, tmp_path):
    store = mlflow_store if kind == "ui" else optuna_storage
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(cli_command(*server_args(kind, store, port)), cwd=tmp_path, env=clean_env(),
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr and "--port N" in result.stderr
    assert time.monotonic() - started < 60


def test_ui_with_a_bad_store_uri_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(cli_command("ui", "--backend-store-uri", "nonsense://x", "--port", str(free_port())),
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=STARTUP_S)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "nonsense://x" in result.stderr and "check --backend-store-uri" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("kind", ["ui", "dashboard"])
def test_sigterm_stops_the_server_and_its_children(kind, mlflow_store, optuna_storage, tmp_path):
    store = mlflow_store if kind == "ui" else optuna_storage
    port = free_port()
    process = subprocess.Popen(cli_command(*server_args(kind, store, port)), cwd=tmp_path, env=clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]  # "starting ...", "... is up at ..."
        assert f"is up at http://127.0.0.1:{port}" in lines[1], (lines, process.stderr.read()[-3000:])
        assert accepts_connections(port)
        below = descendants(process.pid)
        assert below, "the server runs as a child process"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in below) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in below if alive(pid)], "a server process outlived SIGTERM"
        assert not accepts_connections(port)
    finally:
        stop_process(process)
        for pid in descendants(process.pid):
            os.kill(pid, signal.SIGKILL)
