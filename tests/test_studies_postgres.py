"""Two workers started as independent `study run` commands at the same moment (as on two machines),
sharing the real PostgreSQL server (scratch database) and a real MLflow server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from studies_support import check_grid_study, cli_command, clean_env, run_cli, scratch_postgres_database, write_config

from complexity_tracker.studies import create_storage, load_existing_study, load_study_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_two_machines_share_postgresql(tmp_path: Path, mlflow_server_url: str) -> None:
    with scratch_postgres_database() as storage:
        # trials of a few seconds, so that the second command is up before the first one empties the queue
        path = write_config(tmp_path, "pg", study='sampler = "grid"', search="depth = [1, 2]\nwidth = [6, 12]",
                            run="epochs = 6")
        env = clean_env(COMPLEXITY_TRACKER_STORAGE=storage, MLFLOW_TRACKING_URI=mlflow_server_url)
        command = cli_command("study", "run", str(path), "--no-log-model", "--no-progress")
        workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for _ in range(2)]
        outputs = [worker.communicate(timeout=300) for worker in workers]
        for worker, (stdout, stderr) in zip(workers, outputs):
            assert worker.returncode == 0, stderr[-5000:]
            assert "storage:  postgresql://" in stdout
        config = load_study_config(path)
        study = load_existing_study(config, create_storage(storage, config.study))
        check_grid_study(study, config, MlflowClient(mlflow_server_url))
        assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both commands ran trials
        assert "RUNNING" not in run_cli("study", "status", str(path), "--storage", storage, cwd=tmp_path).stdout
