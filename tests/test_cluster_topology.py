"""The compose stack's topology without docker: PostgreSQL storage, a real ``mlflow server`` backed by
PostgreSQL, and two independent worker processes finishing one study.

The workers run docker/compose.yaml's worker command with its environment, as docs/docker.md tells
cluster users to: the study config and the two addresses (COMPLEXITY_TRACKER_STORAGE and
MLFLOW_TRACKING_URI) are all that differ from the compose stack.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from servers import free_port, mlflow_server, stop_process, wait_for_http

psycopg2 = pytest.importorskip("psycopg2")
pytestmark = [pytest.mark.postgres, pytest.mark.slow]

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker" / "compose.yaml"
POSTGRES_URL = os.environ.get("COMPLEXITY_TRACKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
WORKERS = 2
WORKER_TIMEOUT_S = 240

DEPTHS = (1, 2)
WIDTHS = (8, 16)
N_TRIALS = len(DEPTHS) * len(WIDTHS)
STUDY_TOML = f"""
[study]
name = "topology"
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


def database_url(name: str, password: str) -> str:
    """The test server's URL for database ``name``, with ``password`` unless the URL has its own.

    Under trust authentication the server ignores the password; it is there so that the tests can
    check it never shows up in logs, as the compose stack's real password must not.
    """
    server = urlsplit(POSTGRES_URL)
    port = f":{server.port}" if server.port else ""
    netloc = f"{server.username}:{server.password or password}@{server.hostname}{port}"
    return urlunsplit(server._replace(netloc=netloc, path=f"/{name}"))


@pytest.fixture
def scratch_databases() -> Iterator[dict[str, str]]:
    """Two fresh databases on the test server, ``optuna`` and ``mlflow``, dropped afterwards."""
    try:
        admin = psycopg2.connect(POSTGRES_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable ({exc}); set COMPLEXITY_TRACKER_TEST_POSTGRES_URL"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    admin.autocommit = True
    prefix = f"ct_topology_{secrets.token_hex(4)}"
    names = {role: f"{prefix}_{role}" for role in ("optuna", "mlflow")}
    try:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f'CREATE DATABASE "{name}"')
        password = secrets.token_hex(8)
        yield {role: database_url(name, password) for role, name in names.items()}
    finally:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def compose_service(
    name: str, config: Path, addresses: dict[str, str], options: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """A compose service's command and environment, pointed at ``config`` and ``addresses`` (values
    for the compose network's service URLs) with ``options`` replaced; other values take their compose
    defaults."""
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]
    command = [str(config) if part.startswith("/app/studies/") else part for part in service["command"]]
    for option, value in (options or {}).items():
        command[command.index(option) + 1] = value
    assert set(addresses) <= set(service["environment"])
    env = {variable: addresses.get(variable) or re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
           for variable, value in service["environment"].items()}
    return [sys.executable, "-m", "complexity_tracker.cli.main", *command], env


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT,
                                cwd=log.parent, start_new_session=True)


def count_rows(url: str, query: str) -> int:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return int(cursor.fetchone()[0])


def test_two_workers_finish_one_study_on_postgres_and_an_mlflow_server(
    scratch_databases: dict[str, str], tmp_path: Path
) -> None:
    import mlflow
    import optuna

    config = tmp_path / "topology.toml"
    config.write_text(STUDY_TOML)
    artifacts_dir = tmp_path / "mlartifacts"
    with mlflow_server(scratch_databases["mlflow"], artifacts_dir) as tracking_uri:
        command, env = compose_service("worker", config, {
            "COMPLEXITY_TRACKER_STORAGE": scratch_databases["optuna"], "MLFLOW_TRACKING_URI": tracking_uri})
        logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
        workers = [start(command, env, log) for log in logs]
        try:
            codes = [worker.wait(timeout=WORKER_TIMEOUT_S) for worker in workers]
        except subprocess.TimeoutExpired:
            pytest.fail(f"workers still running after {WORKER_TIMEOUT_S} s:\n" + tail(logs))
        finally:
            for worker in workers:
                stop_process(worker)
        assert codes == [0] * WORKERS, tail(logs)

        study = optuna.load_study(study_name="topology", storage=scratch_databases["optuna"])
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        cells = sorted((t.params["depth"], t.params["width"]) for t in complete)
        assert cells == sorted((d, w) for d in DEPTHS for w in WIDTHS), "a grid cell ran twice or not at all"

        client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("topology")
        runs = client.search_runs([experiment.experiment_id])
        parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
        children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
        assert len(parents) == 1, f"{len(parents)} parent runs for one study (workers raced to create it)"
        assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
        assert sorted(int(run.data.tags["optuna.trial_number"]) for run in children) == sorted(
            t.number for t in complete), "not one MLflow child run per trial"
        assert all(run.info.status == "FINISHED" for run in children)
        logged = [json.dumps([run.data.params, run.data.tags]) for run in runs]
        assert not any(urlsplit(scratch_databases["optuna"]).password in text for text in logged)
    assert_password_not_in(logs, scratch_databases["optuna"])

    # What the server stored went where the compose stack keeps it: runs in the PostgreSQL backend
    # store, artifacts uploaded through the server (mlflow-artifacts:) into --artifacts-destination.
    assert count_rows(scratch_databases["mlflow"], "SELECT count(*) FROM runs") == len(runs)
    for run in children:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert (artifacts_dir / experiment.experiment_id / run.info.run_id / "artifacts" / "config.json").is_file()


def test_dashboard_command_of_the_compose_file_serves_the_shared_storage(
    scratch_databases: dict[str, str], tmp_path: Path
) -> None:
    import optuna

    config = tmp_path / "topology.toml"
    config.write_text(STUDY_TOML)
    optuna.create_study(study_name="topology", storage=scratch_databases["optuna"])
    port = str(free_port())
    command, env = compose_service(
        "dashboard", config, {"COMPLEXITY_TRACKER_STORAGE": scratch_databases["optuna"]},
        {"--host": "127.0.0.1", "--port": port},
    )
    log = tmp_path / "dashboard.log"
    dashboard = start(command, env, log)
    try:
        url = f"http://127.0.0.1:{port}/api/studies"
        wait_for_http(url, dashboard, timeout_s=60, log_path=log)
        with urllib.request.urlopen(url, timeout=10) as response:
            studies = json.load(response)["study_summaries"]
    finally:
        stop_process(dashboard)
    assert [study["study_name"] for study in studies] == ["topology"]
    assert_password_not_in([log], scratch_databases["optuna"])


def assert_password_not_in(logs: list[Path], url: str) -> None:
    password = urlsplit(url).password
    for log in logs:
        assert password not in log.read_text(), f"{log.name} shows the database password"


def tail(logs: list[Path]) -> str:
    return "\n\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
