"""Every command the CLI prints for the user to run next runs exactly as printed: from another
directory, through bash, with the virtual environment off PATH and no tracking/storage variables.

The servers (`ui`, `dashboard`) are started as printed plus ``--port`` on a free port, so that the
test does not depend on 5000/8080 being free; each is checked to serve, then stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest

from complexity_tracker.cli import hints
from servers import free_port, stop_process, wait_for_http

PROGRAM = Path(sys.executable).with_name("complexity-tracker")
pytestmark = pytest.mark.slow

STUDY = """
[study]
name = "hints"
objective = "test_loss"
direction = "minimize"
n_trials = 2
sampler = { name = "random", seed = 0 }

[run]
model = "mlp"
width = 16
dataset = "digits"
n_train = 300
n_test = 100
epochs = 1
loss_method = "marginal"
probe_per_class = 10

[search]
log10_lam = { low = -4.0, high = -2.0, include_zero = true }
depth = [1, 2]
"""


def user_environment() -> dict[str, str]:
    """The environment of a user who has not activated the venv and set no store variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "COMPLEXITY_TRACKER_STORAGE", "PYTHONPATH")}
    venv_bin = str(PROGRAM.parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return env


def run_as_printed(command: str, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=user_environment(), capture_output=True, text=True,
                          timeout=timeout_s)


def printed(output: str, label: str) -> str:
    """The command printed after ``label`` on its own line (``label: command``)."""
    match = re.search(rf"^\s*{re.escape(label)}:\s+(.+?)(?:\s{{3}}\(parent run \w+\))?$", output, re.MULTILINE)
    assert match, f"no '{label}:' line in:\n{output}"
    return match.group(1)


def assert_serves(command: str, cwd: Path, url_path: str, expect: str) -> None:
    """Start a server command (plus a free --port) from ``cwd``: ``url_path`` must answer 200 with ``expect``
    in its body.  The server is stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{url_path}"
    log = cwd / f"server-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=cwd, env=user_environment(),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(url, process, timeout_s=180, log_path=log)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert expect in response.read().decode()
    finally:
        stop_process(process, grace_s=10)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory unrelated to the one the command ran in."""
    return tmp_path_factory.mktemp("elsewhere")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Output of `train --save model.pt` run, as the README says, in its own directory."""
    workdir = tmp_path_factory.mktemp("train")
    result = subprocess.run(
        [str(PROGRAM), "train", "--depth", "2", "--width", "16", "--epochs", "1", "--probe-per-class", "10",
         "--set", "n_train=300", "--set", "n_test=100", "--quiet", "--save", "model.pt"],
        cwd=workdir, env=user_environment(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, workdir


@pytest.fixture(scope="module")
def studied(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Output of `study run hints.toml` (relative path, default stores) in its own directory."""
    workdir = tmp_path_factory.mktemp("study")
    (workdir / "hints.toml").write_text(STUDY)
    result = subprocess.run([str(PROGRAM), "study", "run", "hints.toml", "--no-progress"], cwd=workdir,
                            env=user_environment(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, workdir


def test_train_prints_absolute_commands(trained):
    out, workdir = trained
    assert printed(out, "browse") == f"{PROGRAM} ui --backend-store-uri sqlite:///{workdir}/mlflow.db"
    assert printed(out, "measure") == f"{PROGRAM} measure {workdir}/model.pt"


def test_the_measure_hint_of_train_runs_from_elsewhere(trained, elsewhere):
    out, _ = trained
    result = run_as_printed(printed(out, "measure"), elsewhere)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^network\s+32\s+100\s", result.stdout, re.MULTILINE), result.stdout


def test_the_ui_hint_of_train_serves_the_run_from_elsewhere(trained, elsewhere):
    out, _ = trained
    run_id = out.split("run id: ")[1].split()[0]
    assert_serves(printed(out, "browse"), elsewhere, f"/api/2.0/mlflow/runs/get?run_id={run_id}", run_id)
    assert not (elsewhere / "mlflow.db").exists()


def test_a_study_prints_its_best_trial_with_parameters_objective_and_complexity(studied):
    out, workdir = studied
    table = out.split("best trial of test_loss (minimize); complexity of the last epoch in bits:\n")[1]
    header, _rule, row = (line.split() for line in table.splitlines()[:3])
    assert {"trial", "state", "log10_lam", "depth", "test_loss", "H/network", "I_XSY/network"} <= set(header)
    cell = dict(zip(header, row, strict=True))
    study = optuna.load_study(study_name="hints", storage=f"sqlite:///{workdir}/optuna.db")
    best = study.best_trial
    assert int(cell["trial"]) == best.number and cell["state"] == "COMPLETE"
    assert float(cell["test_loss"]) == pytest.approx(study.best_value, rel=1e-3)
    assert float(cell["depth"]) == best.params["depth"]
    assert float(cell["H/network"]) == pytest.approx(best.user_attrs["H/network"], rel=1e-3)


def test_the_status_hint_runs_from_elsewhere(studied, elsewhere):
    out, workdir = studied
    command = printed(out, "trials table")
    assert command == f"{PROGRAM} study status {workdir}/hints.toml --storage sqlite:///{workdir}/optuna.db"
    result = run_as_printed(command, elsewhere)
    assert result.returncode == 0, result.stderr
    assert "study 'hints': 2 slots; trials: 2 complete" in result.stdout


def test_the_report_hint_runs_from_elsewhere_without_a_stray_store(studied, elsewhere):
    out, workdir = studied
    command = printed(out, "plots + tables")
    assert f"--tracking-uri sqlite:///{workdir}/mlflow.db" in command
    result = run_as_printed(command, elsewhere)
    assert result.returncode == 0, result.stderr
    assert "logged under study/ on MLflow parent run" in result.stdout
    assert (elsewhere / "reports" / "hints" / "trials.csv").is_file()
    assert not (elsewhere / "mlflow.db").exists() and not (elsewhere / "optuna.db").exists()


def test_the_ui_hint_of_a_study_serves_its_runs_from_elsewhere(studied, elsewhere):
    out, _ = studied
    parent = re.search(r"\(parent run (\w+)\)", out).group(1)
    assert_serves(printed(out, "MLflow runs"), elsewhere, f"/api/2.0/mlflow/runs/get?run_id={parent}", parent)


def test_the_dashboard_hint_serves_the_study_from_elsewhere(studied, elsewhere):
    out, _ = studied
    assert_serves(printed(out, "Optuna dashboard"), elsewhere, "/api/studies", '"hints"')


def test_printed_urls_are_absolute_and_leave_passwords_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hints.storage_url("sqlite:///optuna.db") == f"sqlite:///{tmp_path}/optuna.db"
    assert hints.storage_url("journal:runs/optuna.journal") == f"journal:{tmp_path}/runs/optuna.journal"
    assert hints.tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert hints.storage_url("postgresql://me:s3cret@db:5432/x") == "postgresql://me@db:5432/x"
    assert hints.tracking_uri("https://me:s3cret@mlflow.example:5000") == "https://mlflow.example:5000"
    note = hints.credential_note(["postgresql://me:s3cret@db:5432/x", "https://me:s3cret@mlflow.example:5000"])
    assert "PGPASSWORD" in note and "MLFLOW_TRACKING_PASSWORD" in note and "s3cret" not in note
    assert hints.credential_note(["sqlite:///optuna.db", "http://127.0.0.1:5000"]) is None
    assert hints.command("measure", tmp_path / "a b.pt") == f"{PROGRAM} measure '{tmp_path}/a b.pt'"
