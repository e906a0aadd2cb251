"""`complexity-tracker dashboard` serves optuna-dashboard on the study's storage, on 127.0.0.1 only."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from servers import free_port, stop_process, wait_for_http
from studies_support import cli_command, clean_env, write_config

from complexity_tracker.cli.dashboard import dashboard_command
from complexity_tracker.cli.main import main
from complexity_tracker.studies import create_storage, load_study_config, open_study


@pytest.mark.parametrize("storage_name", ["optuna.db", "optuna.journal"])
def test_dashboard_lists_the_study(tmp_path: Path, storage_name: str) -> None:
    path = write_config(tmp_path, "board", study="n_trials = 2", search="depth = [1, 2]")
    config = load_study_config(path)
    storage = f"sqlite:///{tmp_path / storage_name}" if storage_name.endswith(".db") else f"journal:{tmp_path / storage_name}"
    open_study(config, create_storage(storage, config.study))
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("wb") as output:
        process = subprocess.Popen(cli_command("dashboard", str(path), "--storage", storage, "--port", str(port)),
                                   cwd=tmp_path, env=clean_env(), stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/studies", process, 120, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
            studies = json.load(response)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["board"]
    finally:
        stop_process(process, grace_s=30)  # the wrapper waits for its server to stop


def test_dashboard_binds_loopback_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMPLEXITY_TRACKER_STORAGE", raising=False)
    command = dashboard_command("journal:x.journal", "127.0.0.1", 8080)
    assert command[1:] == ["x.journal", "--storage-class", "JournalFileStorage", "--host", "127.0.0.1", "--port", "8080"]
    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--storage", "sqlite:///x.db", "--port", "0"])
    assert exit_info.value.code == 2
    assert "argument --port: must be between 1 and 65535, got 0" in capsys.readouterr().err
    assert main(["dashboard"]) == 2
    assert "give a study config" in capsys.readouterr().err
