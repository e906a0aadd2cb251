"""`study run --workers 2` on one machine: Optuna's journal file, MLflow on SQLite, a grid.

(The PostgreSQL test runs the same check against a real MLflow server.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port
from studies_support import check_grid_study, cli_command, clean_env, run_cli, write_config

from complexity_tracker.studies import budget, create_storage, load_existing_study, load_study_config

pytestmark = pytest.mark.slow


def test_two_workers_share_a_journal_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "journal", study='sampler = "grid"', search="depth = [1, 2]\nwidth = [6, 12]")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    launcher = subprocess.Popen(
        cli_command("study", "run", str(path), "--workers", "2", "--storage", storage,
                    "--tracking-uri", tracking, "--no-log-model", "--no-progress"),
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr[-5000:]
    assert "2 worker(s) x 1 torch thread(s)" in stdout
    assert "complexity-tracker dashboard" in stdout  # how to browse it
    config = load_study_config(path)
    study = load_existing_study(config, create_storage(storage, config.study))
    check_grid_study(study, config, MlflowClient(tracking))
    workers = {t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}
    assert len(workers) == 2 and any(w.endswith(f":{launcher.pid}") for w in workers)  # the launcher and one helper


def test_two_workers_grow_a_resumed_study_without_surplus_trials(tmp_path: Path) -> None:
    path = write_config(tmp_path, "grow", study='n_trials = 2\nsampler = { name = "random", seed = 0 }',
                        search="width = { low = 4, high = 16 }")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    run_cli("study", "run", str(path), "--storage", storage, "--n-trials", "2", "--no-log-model", "--no-progress",
            cwd=tmp_path)
    run_cli("study", "run", str(path), "--storage", storage, "--n-trials", "4", "--workers", "2",
            "--no-log-model", "--no-progress", cwd=tmp_path)
    config = load_study_config(path).with_n_trials(4)
    study = load_existing_study(config, create_storage(storage, config.study))
    assert len(budget.finished(study)) == 4
    assert not [t.number for t in study.trials if t.user_attrs.get(budget.SURPLUS_ATTR)]  # only the launcher enqueued


def test_unreachable_tracking_server_is_one_clear_error_and_no_helper_starts(tmp_path: Path) -> None:
    path = write_config(tmp_path, "offline", study='sampler = "grid"', search="depth = [1, 2]")
    result = subprocess.run(
        cli_command("study", "run", str(path), "--workers", "2", "--tracking-uri", f"http://127.0.0.1:{free_port()}",
                    "--no-progress"),
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "cannot reach the MLflow tracking server" in result.stderr and "interrupted" not in result.stderr
    assert not list(tmp_path.glob("optuna.journal*"))  # nothing stored
