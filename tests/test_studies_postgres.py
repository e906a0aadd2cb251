"""Two worker processes on the real PostgreSQL server (scratch database) and a real MLflow server."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from studies_support import check_grid_study, run_cli, scratch_postgres_database, write_config

from complexity_tracker.studies import create_storage, load_existing_study, load_study_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_two_workers_on_postgresql(tmp_path: Path, mlflow_server_url: str) -> None:
    with scratch_postgres_database() as storage:
        path = write_config(tmp_path, "pg", study='sampler = "grid"', search="depth = [1, 2]\nwidth = [6, 12]")
        result = run_cli("study", "run", str(path), "--workers", "2", "--no-log-model", "--no-progress", cwd=tmp_path,
                         COMPLEXITY_TRACKER_STORAGE=storage, MLFLOW_TRACKING_URI=mlflow_server_url)
        assert "storage:  postgresql://" in result.stdout
        config = load_study_config(path)
        study = load_existing_study(config, create_storage(storage, config.study))
        check_grid_study(study, config, MlflowClient(mlflow_server_url))
        assert "RUNNING" not in run_cli("study", "status", str(path), "--storage", storage, cwd=tmp_path).stdout
