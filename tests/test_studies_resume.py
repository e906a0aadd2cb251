"""Ctrl-C during a trial leaves the storage consistent and the run KILLED; the same command resumes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from studies_support import (
    check_metric_steps,
    check_runs_mirror_trials,
    cli_command,
    clean_env,
    run_cli,
    wait_until,
    write_config,
)

from complexity_tracker.studies import budget, create_storage, load_study_config
from complexity_tracker.studies.mlflow_runs import PARENT_RUN_ATTR, RUN_ID_ATTR, child_runs

pytestmark = pytest.mark.slow

#: Long enough that a trial seen training is still training when the signal arrives (with two
#: workers: still training when the other worker's trial starts, on a loaded machine too).
EPOCHS = 40
EPOCHS_TWO_WORKERS = 120


def interrupt_when(process: subprocess.Popen, condition: Callable[[], bool], what: str) -> str:
    """Send SIGINT to ``process`` once ``condition()`` holds; check it exits 130; its stderr."""
    try:
        wait_until(condition, 180, what)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-6000:]
    return stderr


def test_interrupt_then_resume(tmp_path: Path) -> None:
    path = write_config(tmp_path, "resume", study='n_trials = 3\nsampler = { name = "random", seed = 0 }',
                        search="width = { low = 4, high = 16 }", run=f"epochs = {EPOCHS}")
    config = load_study_config(path)
    storage = create_storage(f"sqlite:///{tmp_path / 'optuna.db'}", config.study)
    command = cli_command("study", "run", str(path), "--no-log-model", "--no-progress")
    process = subprocess.Popen(command, cwd=tmp_path, env=clean_env(), start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def second_trial_training() -> bool:
        try:
            trials = optuna.load_study(study_name="resume", storage=storage).trials
        except KeyError:
            return False
        return len(trials) > 1 and trials[1].state == TrialState.RUNNING and RUN_ID_ATTR in trials[1].user_attrs

    stderr = interrupt_when(process, second_trial_training, "the second trial to start training")
    assert "run the same command again to resume" in stderr

    study = optuna.load_study(study_name="resume", storage=storage)
    interrupted = study.trials[1]
    assert study.trials[0].state == TrialState.COMPLETE
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["interrupted"] is True
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert any(budget.retry_history(t) == [1] and t.params == interrupted.params for t in waiting)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # nothing left half-done
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(interrupted.user_attrs[RUN_ID_ATTR]).info.status == "KILLED"
    parent_id = study.user_attrs[PARENT_RUN_ATTR]
    assert client.get_run(parent_id).info.status == "KILLED"

    run_cli(*command[3:], cwd=tmp_path)
    study = optuna.load_study(study_name="resume", storage=storage)
    assert study.user_attrs[PARENT_RUN_ATTR] == parent_id  # the same parent run, found again
    assert client.get_run(parent_id).info.status == "FINISHED"
    finished = budget.finished(study)
    assert len(finished) == 3 and all(t.state == TrialState.COMPLETE for t in finished)
    retry = next(t for t in study.trials if budget.retry_history(t) == [1])
    assert retry.state == TrialState.COMPLETE and retry.params == interrupted.params
    assert "interrupted" not in retry.user_attrs and retry.user_attrs["worker"] != interrupted.user_attrs["worker"]
    assert len(child_runs(client, parent_id)) == 4  # 3 finished trials and the interrupted one
    check_runs_mirror_trials(study, client)  # the retry's own run FINISHED, the interrupted one KILLED
    check_metric_steps(client, retry.user_attrs[RUN_ID_ATTR], "train_loss", EPOCHS)


def test_interrupting_the_launcher_stops_its_helper_workers_then_resume(tmp_path: Path) -> None:
    path = write_config(tmp_path, "resume2", study='sampler = "grid"', search="depth = [1, 2]\nwidth = [6, 12]",
                        run=f"epochs = {EPOCHS_TWO_WORKERS}")
    config = load_study_config(path)
    storage_url = f"journal:{tmp_path / 'optuna.journal'}"
    command = cli_command("study", "run", str(path), "--workers", "2", "--storage", storage_url,
                          "--no-log-model", "--no-progress")
    launcher = subprocess.Popen(command, cwd=tmp_path, env=clean_env(), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = create_storage(storage_url, config.study)

    def training() -> list[optuna.trial.FrozenTrial]:
        try:
            trials = optuna.load_study(study_name="resume2", storage=storage).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            return []
        return [t for t in trials if RUN_ID_ATTR in t.user_attrs]

    interrupt_when(launcher, lambda: len(training()) == 2, "both workers to train a trial")

    study = optuna.load_study(study_name="resume2", storage=storage)
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    assert len(interrupted) == 2 and all(t.user_attrs["interrupted"] for t in interrupted)
    workers = {t.user_attrs["worker"] for t in interrupted}
    assert len(workers) == 2 and f"{socket.gethostname()}:{launcher.pid}" in workers  # the launcher is a worker
    helper_pid = int(next(w for w in workers if not w.endswith(f":{launcher.pid}")).rsplit(":", 1)[1])
    with pytest.raises(ProcessLookupError):
        os.kill(helper_pid, 0)  # the helper stopped with its launcher
    assert sorted(n for t in study.get_trials(states=(TrialState.WAITING,)) for n in budget.retry_history(t)) == sorted(
        t.number for t in interrupted)  # both slots queued again
    assert not study.get_trials(states=(TrialState.RUNNING,))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {client.get_run(t.user_attrs[RUN_ID_ATTR]).info.status for t in interrupted} == {"KILLED"}

    run_cli(*command[3:], cwd=tmp_path, timeout=600)
    study = optuna.load_study(study_name="resume2", storage=storage)
    finished = budget.finished(study)
    assert len(finished) == 4 and all(t.state == TrialState.COMPLETE for t in finished)
    assert sorted((t.params["depth"], t.params["width"]) for t in finished) == [(1, 6), (1, 12), (2, 6), (2, 12)]
    check_runs_mirror_trials(study, client)
