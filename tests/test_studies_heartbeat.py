"""A worker killed with SIGKILL mid-trial (PostgreSQL + heartbeats): its trial is retried, the study completes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from studies_support import (
    check_grid_study,
    check_runs_mirror_trials,
    cli_command,
    clean_env,
    run_cli,
    scratch_postgres_database,
    training_trials,
    wait_until,
    write_config,
)

from complexity_tracker.studies import create_storage, load_study_config
from complexity_tracker.studies.budget import retry_history
from complexity_tracker.studies.mlflow_runs import RUN_ID_ATTR

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_sigkilled_worker_trial_is_retried(tmp_path: Path, mlflow_server_url: str) -> None:
    with scratch_postgres_database() as storage_url:
        path = write_config(
            tmp_path, "heartbeat", study='sampler = "grid"\nheartbeat_interval = 1\ngrace_period = 3',
            search="depth = [1, 2]\nwidth = [6, 12]", run="epochs = 3",
        )
        config = load_study_config(path)
        command = cli_command("study", "run", str(path), "--storage", storage_url, "--tracking-uri", mlflow_server_url,
                              "--no-log-model", "--no-progress")
        victim = subprocess.Popen(command, cwd=tmp_path, env=clean_env(), start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        storage = create_storage(storage_url, config.study)

        def victim_trial() -> optuna.trial.FrozenTrial | None:
            return next((t for t in training_trials(storage, "heartbeat")
                         if t.user_attrs["worker"].endswith(f":{victim.pid}")), None)

        try:
            wait_until(lambda: victim_trial() is not None, 180, "the first worker to train a trial")
            killed = victim_trial()
            os.kill(victim.pid, signal.SIGKILL)
        finally:
            victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL

        run_cli(*command[3:], cwd=tmp_path)  # a second worker finishes the study, the stale trial included
        study = optuna.load_study(study_name="heartbeat", storage=storage)
        client = MlflowClient(mlflow_server_url)
        check_grid_study(study, config, client)
        killed = study.trials[killed.number]
        assert killed.state == TrialState.FAIL
        retries = [t for t in study.trials if killed.number in retry_history(t)]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert retries[0].params == killed.params
        abandoned = client.get_run(killed.user_attrs[RUN_ID_ATTR])
        assert abandoned.info.status == "KILLED" and abandoned.data.tags["optuna.stale"] == "true"
        assert retries[0].user_attrs["worker"] != killed.user_attrs["worker"]
        check_runs_mirror_trials(study, client)
