"""Helpers for the study tests: tiny configs, the CLI as a real subprocess, a scratch PostgreSQL database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from complexity_tracker.studies import StudyConfig, budget
from complexity_tracker.studies.mlflow_runs import PARENT_RUN_ATTR, RUN_ID_ATTR, child_runs

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "COMPLEXITY_TRACKER_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

#: A run that trains in about a second: digits, one small hidden layer, a 100-sample probe.
TINY_RUN = """
[run]
dataset = "digits"
model = "mlp"
width = 12
n_train = 200
n_test = 100
batch_size = 50
probe_per_class = 10
"""


def write_config(folder: Path, name: str, study: str, search: str, run: str = "epochs = 1") -> Path:
    """A study config file: ``[study] name`` plus ``study`` lines, the tiny run plus ``run`` lines."""
    path = folder / f"{name}.toml"
    path.write_text(f'[study]\nname = "{name}"\n{study}\n{TINY_RUN}{run}\n\n[search]\n{search}\n')
    return path


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "complexity_tracker.cli.main", *args]


def clean_env(**values: str) -> dict[str, str]:
    """This environment without study/MLflow settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "COMPLEXITY_TRACKER_STORAGE")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(values)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """Run ``complexity-tracker ARGS`` to completion in ``cwd``; fail with its output on a non-zero exit."""
    result = subprocess.run(cli_command(*args), cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def scratch_postgres_database() -> Iterator[str]:
    """Create a fresh database on the test PostgreSQL server, yield its URL, drop it afterwards.

    The server is ``$COMPLEXITY_TRACKER_TEST_POSTGRES_URL`` (default the local one).  When it cannot
    be reached the test is skipped, except under ``CI=true`` where that is a failure.
    """
    import psycopg2
    from psycopg2 import sql

    base_url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)
    try:
        admin = psycopg2.connect(base_url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {base_url} ({POSTGRES_ENV}) is unreachable: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    admin.autocommit = True
    name = f"ct_study_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def check_grid_study(study: optuna.Study, config: StudyConfig, client: MlflowClient) -> None:
    """Exactly one COMPLETE trial per grid cell, none duplicated, one parent run, one MLflow child run per trial."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    cells = [tuple(sorted(t.params.items())) for t in complete]
    assert len(cells) == len(set(cells)), f"a grid cell ran twice: {sorted(cells)}"
    assert set(cells) == {tuple(sorted(c.items())) for c in config.grid()}
    assert len(budget.finished(study)) == config.study.n_trials and budget.remaining(study) == (0, 0)
    parent_id = study.user_attrs[PARENT_RUN_ATTR]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    parents = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`optuna.role` = 'study' and tags.`optuna.study_name` = '{study.study_name}'",
    )
    assert [r.info.run_id for r in parents] == [parent_id]  # one parent run, however many launchers
    runs = {r.info.run_id: r for r in child_runs(client, parent_id)}
    counted = [t for t in study.trials if not t.user_attrs.get(budget.SURPLUS_ATTR)]
    assert sorted(runs) == sorted(t.user_attrs[RUN_ID_ATTR] for t in counted)
    for trial in complete:
        assert runs[trial.user_attrs[RUN_ID_ATTR]].info.status == "FINISHED"


def expected_run_status(trial: optuna.trial.FrozenTrial) -> tuple[str, str | None]:
    """The MLflow status a trial's run must have, and the tag that must say why (written out here,
    not taken from the code under test)."""
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        return "FINISHED", None
    if trial.state == TrialState.PRUNED:
        return "FINISHED", "optuna.pruned"
    assert trial.state == TrialState.FAIL, f"trial {trial.number} is {trial.state.name}"
    if attrs.get("interrupted"):
        return "KILLED", "optuna.interrupted"
    if "fault" in attrs:
        return "FAILED", "optuna.fault"
    if "diverged" in attrs:
        return "FAILED", "optuna.diverged"
    return "KILLED", "optuna.stale"  # its worker died


def check_runs_mirror_trials(study: optuna.Study, client: MlflowClient) -> None:
    """Every trial that started a run has exactly its own run, whose status and tags match the trial's
    final state, read from Optuna and MLflow themselves; no run of the study is left RUNNING."""
    runs = {r.info.run_id: r for r in child_runs(client, study.user_attrs[PARENT_RUN_ATTR])}
    with_runs = [t for t in study.trials if RUN_ID_ATTR in t.user_attrs]
    assert len({t.user_attrs[RUN_ID_ATTR] for t in with_runs}) == len(with_runs), "two attempts share a run"
    assert sorted(runs) == sorted(t.user_attrs[RUN_ID_ATTR] for t in with_runs)
    for trial in with_runs:
        run = runs[trial.user_attrs[RUN_ID_ATTR]]
        status, tag = expected_run_status(trial)
        assert (run.info.status, run.data.tags.get("optuna.state")) == (status, trial.state.name), trial.number
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        if tag is not None:
            assert tag in run.data.tags, f"run of trial {trial.number} lacks tag {tag}: {run.data.tags}"


def check_metric_steps(client: MlflowClient, run_id: str, metric: str, epochs: int | None) -> list[int]:
    """The steps of ``metric`` in the run, read back with ``get_metric_history``: each logged once and
    none missing (0..epochs when ``epochs`` is given, else 0..last); returns them."""
    steps = sorted(m.step for m in client.get_metric_history(run_id, metric))
    last = epochs if epochs is not None else (steps[-1] if steps else -1)
    assert steps == list(range(last + 1)), f"{metric} of run {run_id}: steps {steps}"
    return steps


def training_trials(storage: optuna.storages.BaseStorage, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's RUNNING trials whose MLflow run exists (their training has started); [] before
    the study exists."""
    try:
        running = optuna.load_study(study_name=study_name, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.RUNNING,))
    except KeyError:
        return []
    return [t for t in running if RUN_ID_ATTR in t.user_attrs]
