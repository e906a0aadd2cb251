"""Faults of a study's services, injected into the real components: the ``mlflow server`` process
killed mid-trial and started again, a torn and a damaged journal file, a read-only SQLite file."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from servers import MlflowServer
from studies_support import (
    check_metric_steps,
    check_runs_mirror_trials,
    cli_command,
    clean_env,
    run_cli,
    wait_until,
    write_config,
)

from complexity_tracker.studies import budget, create_storage, load_study_config, open_study
from complexity_tracker.studies.mlflow_runs import PARENT_RUN_ATTR, RUN_ID_ATTR

pytestmark = pytest.mark.slow


class StderrLines:
    """Reads a process's stderr in a thread, keeping each line with the time it arrived."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(line for _, line in self.lines)

    def first(self, pattern: str) -> float | None:
        return next((at for at, line in self.lines if re.search(pattern, line)), None)


def test_tracking_server_killed_mid_trial_then_restarted(tmp_path: Path) -> None:
    """The trial that loses the server is failed and queued again within the retry budget, the
    command stops with one line, and a resume once the server is back completes the study."""
    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    url = server.start()
    epochs = 12
    path = write_config(tmp_path, "outage", study='sampler = "grid"', search="width = [6, 12]", run=f"epochs = {epochs}")
    config = load_study_config(path)
    storage_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = create_storage(storage_url, config.study)
    client = MlflowClient(url)
    env = {"COMPLEXITY_TRACKER_TRACKING_RETRY_S": "6"}
    command = cli_command("study", "run", str(path), "--storage", storage_url, "--tracking-uri", url,
                          "--no-log-model", "--no-progress")
    process = subprocess.Popen(command, cwd=tmp_path, env=clean_env(**env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    stderr = StderrLines(process)
    try:
        def trials() -> list[optuna.trial.FrozenTrial]:
            try:
                return optuna.load_study(study_name="outage", storage=storage).trials
            except KeyError:
                return []

        def first_trial_trained_3_epochs() -> bool:
            run_id = next(iter(trials()), None) and trials()[0].user_attrs.get(RUN_ID_ATTR)
            return bool(run_id) and len(client.get_metric_history(run_id, "train_loss")) >= 3

        wait_until(first_trial_trained_3_epochs, 180, "the first trial to train 3 epochs")
        killed_at = time.monotonic()
        server.kill()
        wait_until(lambda: any(budget.retry_history(t) == [0] for t in trials()), 120, "the slot to be queued again")
        requeued_at = time.monotonic()
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = stderr.text()
    assert process.returncode == 2, text
    warned_at = stderr.first("warning: the MLflow tracking server .* does not answer")
    assert warned_at is not None, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text and len(lines) <= 3, text  # the warning and one error line
    assert "stopped answering" in lines[-1] and "trial 0 failed and its slot is queued again" in lines[-1]
    print(f"\nserver killed -> first warning {warned_at - killed_at:.1f} s, -> slot queued again "
          f"{requeued_at - killed_at:.1f} s (retry budget 6 s)")
    assert 0 <= warned_at - killed_at < 5 and requeued_at - killed_at < 6 + 30

    failed, retry = trials()[0], next(t for t in trials() if budget.retry_history(t) == [0])
    assert failed.state == TrialState.FAIL and failed.user_attrs["fault"].startswith(f"tracking server {url}")
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"slot": 0}  # nothing of the failed attempt
    assert retry.params == failed.params

    server.start()  # the same port and backend store
    try:
        run_cli(*command[3:], cwd=tmp_path, timeout=400, **env)
        study = optuna.load_study(study_name="outage", storage=storage)
        assert client.get_run(study.user_attrs[PARENT_RUN_ATTR]).info.status == "FINISHED"
        finished = budget.finished(study)
        assert sorted(t.params["width"] for t in finished) == [6, 12]
        assert all(t.state == TrialState.COMPLETE for t in finished)
        check_runs_mirror_trials(study, client)
        for trial in finished:
            check_metric_steps(client, trial.user_attrs[RUN_ID_ATTR], "train_loss", epochs)
        logged = check_metric_steps(client, failed.user_attrs[RUN_ID_ATTR], "train_loss", None)
        assert 3 <= len(logged) < epochs + 1  # what reached the server before it died stays, once per epoch
    finally:
        server.stop()


def test_torn_journal_tail_is_cut_off_after_a_backup_and_garbage_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, "torn", study='n_trials = 2\nsampler = { name = "random", seed = 0 }',
                        search="width = { low = 4, high = 16 }")
    journal = tmp_path / "optuna.journal"
    storage_url = f"journal:{journal}"
    run = ("study", "run", str(path), "--storage", storage_url, "--no-log-model", "--no-progress")
    status = ("study", "status", str(path), "--storage", storage_url)
    run_cli(*run, cwd=tmp_path)
    whole = journal.read_bytes()
    last_line_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    torn = whole[: last_line_start + (len(whole) - last_line_start) // 2]  # a crash while appending the last record
    journal.write_bytes(torn)

    result = run_cli(*status, cwd=tmp_path)
    assert f"journal {journal} ended in a torn line (bytes {last_line_start}-{len(torn)}" in result.stderr
    backups = list(tmp_path.glob("optuna.journal.torn-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == torn
    assert journal.read_bytes() == whole[:last_line_start]

    run_cli(*run, "--n-trials", "3", cwd=tmp_path)  # the trial whose last write was lost is run again
    lines = journal.read_bytes().splitlines(keepends=True)
    for line in lines:
        json.loads(line)  # nothing was appended after a torn line
    config = load_study_config(path).with_n_trials(3)
    study = optuna.load_study(study_name="torn", storage=create_storage(storage_url, config.study))
    assert len(budget.finished(study)) == 3 and budget.remaining(study) == (0, 0)
    assert all(t.state == TrialState.COMPLETE for t in budget.finished(study))
    check_runs_mirror_trials(study, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))

    journal.write_bytes(b"".join([*lines[:5], b"\x00garbage}\n", *lines[5:]]))
    result = subprocess.run(cli_command(*status), cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and f"journal {journal} is damaged at line 6" in error, result.stderr
    repair = error.split("losing the write it held: ", 1)[1]
    subprocess.run(repair, shell=True, check=True, cwd="/")  # as printed, from another directory
    assert journal.read_bytes() == b"".join(lines)
    assert "3 complete" in run_cli(*status, cwd=tmp_path).stdout


def test_read_only_sqlite_storage_is_one_line_naming_the_cause(tmp_path: Path) -> None:
    path = write_config(tmp_path, "readonly", study='n_trials = 1\nsampler = { name = "random", seed = 0 }',
                        search="width = { low = 4, high = 16 }")
    database = tmp_path / "optuna.db"
    config = load_study_config(path)
    open_study(config, create_storage(f"sqlite:///{database}", config.study))  # the study and its 1 slot
    # tests run as root, for whom file permissions do not make a file read-only; the immutable flag
    # does, and where it cannot be set SQLite's read-only open mode gives the same error
    immutable = subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode == 0
    storage_url = f"sqlite:///{database}" if immutable else f"sqlite:///file:{database}?mode=ro&uri=true"
    try:
        result = subprocess.run(
            cli_command("study", "run", str(path), "--storage", storage_url, "--n-trials", "2", "--no-log-model",
                        "--no-progress"),
            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=240,
        )
        status = run_cli("study", "status", str(path), "--storage", storage_url, cwd=tmp_path)  # reading still works
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(database)], check=True)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # MLflow's own INFO lines may precede
    assert lines[-1].startswith(f"complexity-tracker study: error: storage {storage_url} is read-only "
                                "(attempt to write a readonly database)"), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "exceeding max length" not in result.stderr
    assert "1 slots; trials: 1 waiting" in status.stdout
