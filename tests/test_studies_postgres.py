"""Workers sharing the real PostgreSQL server (scratch database) and a real MLflow server: two
independent `study run` commands started at the same moment (as on two machines), and
`--workers 4` with one helper killed mid-trial."""

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
    check_metric_steps,
    check_runs_mirror_trials,
    cli_command,
    clean_env,
    run_cli,
    scratch_postgres_database,
    training_trials,
    wait_until,
    write_config,
)

from complexity_tracker.studies import budget, create_storage, load_existing_study, load_study_config
from complexity_tracker.studies.budget import retry_history
from complexity_tracker.studies.mlflow_runs import RUN_ID_ATTR

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


def test_four_workers_a_live_worker_takes_over_a_killed_workers_trial(tmp_path: Path, mlflow_server_url: str) -> None:
    """`study run --workers 4` on PostgreSQL; one helper is SIGKILLed mid-trial while the others run:
    after the heartbeat's grace period a live worker queues its slot again and runs it."""
    with scratch_postgres_database() as storage:
        epochs = 20
        path = write_config(tmp_path, "pg4", study='sampler = "grid"\nheartbeat_interval = 1\ngrace_period = 3',
                            search="depth = [1, 2]\nwidth = [6, 12]", run=f"epochs = {epochs}")
        config = load_study_config(path)
        launcher = subprocess.Popen(
            cli_command("study", "run", str(path), "--workers", "4", "--storage", storage,
                        "--tracking-uri", mlflow_server_url, "--no-log-model", "--no-progress"),
            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        optuna_storage = create_storage(storage, config.study)

        def helper_training() -> optuna.trial.FrozenTrial | None:
            return next((t for t in training_trials(optuna_storage, "pg4")
                         if not t.user_attrs["worker"].endswith(f":{launcher.pid}")), None)

        try:
            wait_until(lambda: helper_training() is not None, 240, "a helper worker to train a trial")
            victim = helper_training()
            os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
            stdout, stderr = launcher.communicate(timeout=400)
        finally:
            if launcher.poll() is None:
                launcher.kill()
        assert launcher.returncode == 1 and "worker process(es) failed (exit codes [-9])" in stderr, stderr[-5000:]
        study = load_existing_study(config, optuna_storage)
        client = MlflowClient(mlflow_server_url)
        check_grid_study(study, config, client)
        check_runs_mirror_trials(study, client)
        killed = study.trials[victim.number]
        retry = next(t for t in study.trials if retry_history(t) == [killed.number])
        assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
        assert retry.user_attrs["worker"] != killed.user_attrs["worker"]  # taken over by a live worker
        assert len({t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}) == 4
        for trial in budget.finished(study):
            check_metric_steps(client, trial.user_attrs[RUN_ID_ATTR], "train_loss", epochs)
