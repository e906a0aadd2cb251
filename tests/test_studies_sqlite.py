"""A small study in one process on SQLite (Optuna) and SQLite (MLflow): states, runs, status, report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from studies_support import write_config

from complexity_tracker.cli.main import main
from complexity_tracker.studies import budget, create_storage, load_existing_study, load_study_config
from complexity_tracker.studies.mlflow_runs import PARENT_RUN_ATTR, RUN_ID_ATTR, child_runs

pytestmark = pytest.mark.slow


def test_pruned_and_diverged_trials_do_not_stop_the_study(in_tmp_cwd: Path, capsys: pytest.CaptureFixture) -> None:
    """lr 0.01 trains, lr 1e-6 is pruned after epoch 1 by the median rule, lr 1e30 turns the loss NaN."""
    path = write_config(
        in_tmp_cwd, "prune",
        study='sampler = "grid"\nobjective = "test_loss"\npruner = { name = "median", n_startup_trials = 1 }',
        search="lr = [0.01, 1e-6, 1e30]",
        run='epochs = 2\noptimizer = "adam"',
    )
    storage, tracking = f"sqlite:///{in_tmp_cwd / 'optuna.db'}", f"sqlite:///{in_tmp_cwd / 'mlflow.db'}"
    code = main(["study", "run", str(path), "--storage", storage, "--tracking-uri", tracking,
                 "--no-progress", "--no-log-model"])
    assert code == 0
    config = load_study_config(path)
    study = load_existing_study(config, create_storage(storage, config.study))
    states = {t.params["lr"]: t.state for t in study.trials}
    assert states == {0.01: TrialState.COMPLETE, 1e-6: TrialState.PRUNED, 1e30: TrialState.FAIL}
    assert len(budget.finished(study)) == 3 and budget.remaining(study) == (0, 0)

    client = MlflowClient(tracking)
    parent_id = study.user_attrs[PARENT_RUN_ATTR]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    runs = {r.info.run_id: r for r in child_runs(client, parent_id)}
    assert len(runs) == 3  # one child run per trial
    # a pruned run trained every epoch it was asked to: FINISHED, told apart by its tag
    expected_status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED", TrialState.FAIL: "FAILED"}
    for trial in study.trials:
        run = runs[trial.user_attrs[RUN_ID_ATTR]]
        assert run.info.status == expected_status[trial.state]
        assert ("optuna.pruned" in run.data.tags) == (trial.state == TrialState.PRUNED)
        assert ("optuna.diverged" in run.data.tags) == (trial.state == TrialState.FAIL)
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert float(run.data.params["lr"]) == trial.params["lr"]
    complete = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    probe_size = 10 * 10
    for key in ("H/network", "I_XSY/network"):
        assert 0.0 <= complete.user_attrs[key] <= math.log2(probe_size) + 1e-6
    assert any(k.startswith("H/") and k != "H/network" for k in complete.user_attrs)  # per layer too
    assert runs[complete.user_attrs[RUN_ID_ATTR]].data.tags["optuna.values"].startswith('{"test_loss"')
    assert "study/trials.csv" in [a.path for a in client.list_artifacts(parent_id, "study")]

    capsys.readouterr()
    assert main(["study", "status", str(path), "--storage", storage]) == 0
    table = capsys.readouterr().out
    assert "1 complete, 1 fail, 1 pruned" in table
    for state in ("COMPLETE", "PRUNED", "FAIL"):
        assert state in table


def test_two_objective_study_report(in_tmp_cwd: Path, capsys: pytest.CaptureFixture) -> None:
    """Multi-objective: Pareto front, importances, lambda sweep and per-epoch curves read back from MLflow."""
    path = write_config(
        in_tmp_cwd, "pareto",
        study='objectives = ["test_loss", "loss_gap"]\nn_trials = 4\nsampler = { name = "random", seed = 3 }',
        search="log10_lam = { low = -4.0, high = -1.0, include_zero = true }\nwidth = [6, 12]",
        run='epochs = 1\nloss_method = "marginal"\noptimizer = "adam"\nlr = 0.01',
    )
    assert main(["study", "run", str(path), "--no-progress", "--no-log-model"]) == 0
    config = load_study_config(path)
    study = load_existing_study(config, create_storage("sqlite:///optuna.db", config.study))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert study.trials[0].params["lam_is_zero"] is True  # the lam = 0 baseline comes first
    assert all(t.user_attrs["lam"] > 0 for t in study.trials[1:])

    capsys.readouterr()
    assert main(["study", "report", str(path), "--out", "report"]) == 0
    written = {p.name for p in (in_tmp_cwd / "report").iterdir()}
    assert {"trials.csv", "pareto_front.png", "param_importances.png", "gap_vs_lambda.png", "curves_H.png"} <= written
    client = MlflowClient("sqlite:///mlflow.db")
    logged = {a.path for a in client.list_artifacts(study.user_attrs[PARENT_RUN_ATTR], "study")}
    assert "study/pareto_front.png" in logged
    rows = (in_tmp_cwd / "report" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and "H/network" in rows[0]
