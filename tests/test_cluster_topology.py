"""The compose stack's topology without docker: PostgreSQL storage, a real ``mlflow server`` backed by
PostgreSQL, and two independent worker processes finishing one study.

The workers and the dashboard run docker/compose.yaml's commands with its environment, as
docs/docker.md tells cluster users to: the study config and the addresses (COMPLEXITY_TRACKER_STORAGE,
MLFLOW_TRACKING_URI) are all that differ from the compose stack. The stack is started once for the
module; each test checks one promise of it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
import optuna
import psycopg2
import pytest
import yaml

from servers import free_port, mlflow_server, stop_process, wait_for_http
from studies_support import scratch_postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker" / "compose.yaml"
WORKERS = 2
WORKER_TIMEOUT_S = 300
STUDY = "topology"
DEPTHS = (1, 2)
WIDTHS = (8, 16)
STUDY_TOML = f"""
[study]
name = "{STUDY}"
objective = "test_loss"
sampler = "grid"

[run]
model = "mlp"
dataset = "digits"
n_train = 120
n_test = 60
epochs = 1
batch_size = 60
probe_per_class = 3

[search]
depth = {list(DEPTHS)}
width = {list(WIDTHS)}
"""


@dataclass(frozen=True)
class Stack:
    """The running topology: database URLs (with a password), the MLflow server and what ran."""

    storage_url: str
    mlflow_backend_url: str
    tracking_uri: str
    artifacts_dir: Path
    config: Path
    worker_logs: list[Path]


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` unless it has its own.

    Under trust authentication the server ignores the password; it is there so that the tests can
    check it never shows up in logs, as the compose stack's real password must not.
    """
    parts = urlsplit(url)
    if parts.password:
        return url
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{parts.hostname}{port}"))


@pytest.fixture(scope="module")
def scratch_databases() -> Iterator[dict[str, str]]:
    """Two fresh databases on the test server, ``optuna`` and ``mlflow``, dropped afterwards."""
    password = secrets.token_hex(8)
    with scratch_postgres_database() as optuna_url, scratch_postgres_database() as mlflow_url:
        yield {"optuna": with_password(optuna_url, password), "mlflow": with_password(mlflow_url, password)}


def compose_service(
    name: str, config: Path, addresses: dict[str, str], options: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """A compose service's command and environment, pointed at ``config`` and ``addresses`` (values
    for the compose network's service URLs) with ``options`` replaced; other values take their compose
    defaults."""
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]
    command = [str(config) if part.startswith("/app/studies/") else compose_default(part)
               for part in service["command"]]
    for option, value in (options or {}).items():
        command[command.index(option) + 1] = value
    assert set(addresses) <= set(service["environment"])
    env = {variable: addresses.get(variable) or compose_default(str(value))
           for variable, value in service["environment"].items()}
    return [sys.executable, "-m", "complexity_tracker.cli.main", *command], env


def compose_default(text: str) -> str:
    """``text`` with each ``${NAME:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def compose_allowed_hosts() -> str:
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["mlflow"]["command"]
    return next(part for part in command if part.startswith("--allowed-hosts=")).split("=", 1)[1]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT,
                                cwd=log.parent, start_new_session=True)


def tail(logs: list[Path]) -> str:
    return "\n\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)


@pytest.fixture(scope="module")
def stack(scratch_databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The MLflow server up, and both workers started at the same moment and finished."""
    root = tmp_path_factory.mktemp("topology")
    config = root / f"{STUDY}.toml"
    config.write_text(STUDY_TOML)
    artifacts_dir = root / "mlartifacts"
    # The compose file's allowed hosts, plus the loopback port this server happens to get.
    allowed_hosts = f"--allowed-hosts={compose_allowed_hosts()},127.0.0.1:*"
    with mlflow_server(scratch_databases["mlflow"], artifacts_dir, extra_args=(allowed_hosts,)) as tracking_uri:
        command, env = compose_service("worker", config, {
            "COMPLEXITY_TRACKER_STORAGE": scratch_databases["optuna"], "MLFLOW_TRACKING_URI": tracking_uri})
        logs = [root / f"worker-{i}.log" for i in range(WORKERS)]
        workers = [start(command, env, log) for log in logs]
        try:
            codes = [worker.wait(timeout=WORKER_TIMEOUT_S) for worker in workers]
        except subprocess.TimeoutExpired:
            pytest.fail(f"workers still running after {WORKER_TIMEOUT_S} s:\n" + tail(logs))
        finally:
            for worker in workers:
                stop_process(worker)
        assert codes == [0] * WORKERS, tail(logs)
        yield Stack(scratch_databases["optuna"], scratch_databases["mlflow"], tracking_uri, artifacts_dir,
                    config, logs)


@pytest.fixture(scope="module")
def study(stack: Stack):
    return optuna.load_study(study_name=STUDY, storage=stack.storage_url)


@pytest.fixture(scope="module")
def runs(stack: Stack) -> list:
    client = mlflow.MlflowClient(stack.tracking_uri)
    return client.search_runs([client.get_experiment_by_name(STUDY).experiment_id])


def test_workers_share_the_study_and_run_every_grid_cell_once(study) -> None:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    cells = sorted((trial.params["depth"], trial.params["width"]) for trial in complete)
    assert cells == sorted((d, w) for d in DEPTHS for w in WIDTHS), "a grid cell ran twice or not at all"


def test_one_parent_run_and_one_child_run_per_trial(study, runs: list) -> None:
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1, f"{len(parents)} parent runs for one study (workers raced to create it)"
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(int(run.data.tags["optuna.trial_number"]) for run in children) == sorted(
        trial.number for trial in complete), "not one MLflow child run per trial"
    assert all(run.info.status == "FINISHED" for run in children)


def test_runs_live_in_the_postgres_backend_and_artifacts_go_through_the_server(stack: Stack, runs: list) -> None:
    with psycopg2.connect(stack.mlflow_backend_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_uuid FROM runs")
        stored = {row[0] for row in cursor.fetchall()}
    assert stored == {run.info.run_id for run in runs}
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags:
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            folder = stack.artifacts_dir / run.info.experiment_id / run.info.run_id / "artifacts"
            assert (folder / "config.json").is_file()


def test_the_database_password_is_in_no_log_and_no_run(stack: Stack, runs: list) -> None:
    password = urlsplit(stack.storage_url).password
    for log in stack.worker_logs:
        assert password not in log.read_text(), f"{log.name} shows the database password"
    for run in runs:
        assert password not in json.dumps([run.data.params, run.data.tags]), f"run {run.info.run_id} holds it"


def test_mlflow_admits_the_compose_workers_and_browsers_only(stack: Stack) -> None:
    endpoint = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name={STUDY}"
    statuses = {host: http_status(endpoint, host)
                for host in ("mlflow:5000", "127.0.0.1:5000", "localhost:5000", "attacker.example:5000")}
    assert statuses == {"mlflow:5000": 200, "127.0.0.1:5000": 200, "localhost:5000": 200, "attacker.example:5000": 403}


def http_status(url: str, host: str) -> int:
    """Status of a GET of ``url`` sent with the ``Host`` header a client of ``host`` sends."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_compose_dashboard_command_serves_the_shared_storage(stack: Stack) -> None:
    port = str(free_port())
    command, env = compose_service("dashboard", stack.config, {"COMPLEXITY_TRACKER_STORAGE": stack.storage_url},
                                   {"--host": "127.0.0.1", "--port": port})
    log = stack.config.with_name("dashboard.log")
    dashboard = start(command, env, log)
    try:
        url = f"http://127.0.0.1:{port}/api/studies"
        wait_for_http(url, dashboard, timeout_s=60, log_path=log)
        with urllib.request.urlopen(url, timeout=10) as response:
            studies = json.load(response)["study_summaries"]
    finally:
        stop_process(dashboard)
    assert [study["study_name"] for study in studies] == [STUDY]
    assert urlsplit(stack.storage_url).password not in log.read_text()
