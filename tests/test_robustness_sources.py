"""`complexity-tracker evaluate` on checkpoints, MLflow runs (real server) and an Optuna study."""

from __future__ import annotations

import json

import mlflow
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from complexity_tracker.cli.main import main
from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.experiment import run_experiment
from complexity_tracker.models import build_model
from complexity_tracker.robustness.errors import ModelSourceError
from complexity_tracker.robustness.sources import from_run, open_study, select_trials
from complexity_tracker.training import save_checkpoint, train
from test_robustness import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)

TINY = RunConfig(epochs=3, n_train=400, n_test=200, width=24, depth=2, probe_per_class=10, lr=0.1)
FAST_ATTACKS = ["--n-samples", "40", "--attacks", "pgd_linf", "--linf-eps", "0.05", "0.1", "--pgd-steps", "5",
                "--min-norm-attacks", "deepfool", "--probe-per-class", "10"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = []
    for width in (8, 48):
        config = TINY.replace(width=width)
        data = load_data(config)
        model = train(build_model(config, data.input_shape, data.n_classes), data, config, progress=False).model
        paths.append(str(folder / f"mlp{width}.pt"))
        save_checkpoint(paths[-1], model, config)
    return paths


@pytest.fixture(scope="module")
def study_runs(mlflow_server_url, tmp_path_factory) -> dict:
    """Three tracker runs under a parent run, recorded as trials of a real Optuna study."""
    client = MlflowClient(mlflow_server_url)
    experiment_id = client.create_experiment("robustness-sources")
    parent = client.create_run(experiment_id, run_name="study-parent").info.run_id
    storage = f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'optuna.db'}"
    study = optuna.create_study(study_name="robust", storage=storage, direction="minimize")
    study.set_user_attr("mlflow_parent_run_id", parent)
    runs = []
    for width in (6, 16, 64):
        result = run_experiment(TINY.replace(width=width), tracking_uri=mlflow_server_url,
                                experiment_name="robustness-sources", run_name=f"width-{width}", parent_run_id=parent)
        final = result.history[-1]
        study.add_trial(optuna.trial.create_trial(
            value=final["test_loss"],
            user_attrs={"mlflow_run_id": result.run_id, "H/network": final["H/network"]},
        ))
        runs.append(result.run_id)
    client.set_terminated(parent, "FINISHED")
    return {"uri": mlflow_server_url, "parent": parent, "storage": storage, "runs": runs, "study": study}


def test_checkpoints_print_tables_and_write_artifacts(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--checkpoints", *checkpoints, *FAST_ATTACKS, "--output-dir", "out"]) == 0
    out = capsys.readouterr().out
    for expected in ("Robustness by model", "mlp8", "mlp48", "Robust accuracy under pgd_linf", "eps=0.05",
                     "Transfer success rate", "asymmetry", "spearman rho", "H/network"):
        assert expected in out
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"comparison.json", "tables.txt", "correlations.csv", "transfer_matrix.png",
            "accuracy_vs_epsilon.png", "robustness_vs_complexity.png"} <= written
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [m["name"] for m in comparison["models"]] == sorted(
        ["mlp8", "mlp48"], key=lambda n: next(m["complexity"]["H/network"] for m in comparison["models"] if m["name"] == n))
    assert not (tmp_path / "mlflow.db").exists()  # checkpoints are not logged to MLflow


def test_json_output_is_strict_json(checkpoints, capsys):
    assert main(["evaluate", "--checkpoints", *checkpoints, *FAST_ATTACKS, "--json", "--estimator", "plugin"]) == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    printed = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert len(printed["models"]) == 2 and printed["transfer"]["names"]
    # plug-in counting of 100 distinct patterns: at most log2(100) bits
    assert all(0 < m["complexity"]["H/network"] <= 6.65 for m in printed["models"])
    # Two models give no Spearman rho: null, not NaN.
    assert all(c["rho"] is None for c in printed["correlations"])


def test_run_model_is_rebuilt_with_its_gates(study_runs):
    source = from_run(MlflowClient(study_runs["uri"]), study_runs["runs"][0])
    assert source.name == "width-6" and source.config.width == 6
    assert any(isinstance(m, torch.nn.ReLU) for m in source.model.modules())
    mlflow.set_tracking_uri(study_runs["uri"])
    logged = mlflow.pytorch.load_model(f"runs:/{study_runs['runs'][0]}/model")
    x = load_data(source.config).x_test[:5]
    torch.testing.assert_close(source.model(x), logged(x))


def test_trial_selection(study_runs):
    study = open_study("robust", study_runs["storage"])
    trials = study.get_trials()
    by_loss = sorted(trials, key=lambda t: t.value)
    assert [t.number for t in select_trials(study, top_k=2)] == sorted(t.number for t in by_loss[:2])
    by_h = sorted(trials, key=lambda t: t.user_attrs["H/network"])
    assert [t.number for t in select_trials(study, quantiles=[0, 1])] == [by_h[0].number, by_h[-1].number]
    assert [t.number for t in select_trials(study, quantiles=[0.5])] == [by_h[1].number]
    assert len(select_trials(study)) == 3
    with pytest.raises(ModelSourceError, match="no trial .* records 'H/layer9'"):
        select_trials(study, quantiles=[0.5], complexity_key="H/layer9")
    with pytest.raises(ModelSourceError, match=r"no study 'nope' .* studies there: robust"):
        open_study("nope", study_runs["storage"])


def test_study_evaluation_logs_on_trial_runs_and_parent(study_runs, capsys):
    code = main(["evaluate", "--study", "robust", "--storage", study_runs["storage"], "--quantiles", "0", "1",
                 "--tracking-uri", study_runs["uri"], *FAST_ATTACKS])
    assert code == 0
    out = capsys.readouterr().out
    assert "trial-" in out and f"comparison on run {study_runs['parent']}" in out
    client = MlflowClient(study_runs["uri"])
    by_h = sorted(study_runs["study"].get_trials(), key=lambda t: t.user_attrs["H/network"])
    selected = {by_h[0].user_attrs["mlflow_run_id"], by_h[-1].user_attrs["mlflow_run_id"]}
    for run_id in study_runs["runs"]:
        metrics = client.get_run(run_id).data.metrics
        assert ("robustness/clean_acc" in metrics) == (run_id in selected)
    for run_id in selected:
        metrics = client.get_run(run_id).data.metrics
        assert 0 <= metrics["robustness/robust_acc/pgd_linf/0.1"] <= metrics["robustness/clean_acc"] <= 1
        assert metrics["robustness/min_l2_median"] > 0
        assert "robustness/robustness.json" in {a.path for a in client.list_artifacts(run_id, "robustness")}
    parent = client.get_run(study_runs["parent"])
    assert "robustness/transfer_asymmetry" in parent.data.metrics
    assert "robustness/spearman_rho/H/network/clean_acc" not in parent.data.metrics  # 2 models: no rho
    artifacts = {a.path for a in client.list_artifacts(study_runs["parent"], "robustness")}
    assert {"robustness/transfer_matrix.png", "robustness/comparison.json", "robustness/correlations.csv"} <= artifacts


def test_runs_evaluation_creates_a_summary_run(study_runs, capsys):
    assert main(["evaluate", "--runs", *study_runs["runs"], "--tracking-uri", study_runs["uri"], *FAST_ATTACKS]) == 0
    out = capsys.readouterr().out
    summary_id = out.strip().rsplit(" ", 1)[-1]
    summary = MlflowClient(study_runs["uri"]).get_run(summary_id)
    assert summary.info.run_name == "robustness-evaluation" and summary.info.status == "FINISHED"
    rho = summary.data.metrics["robustness/spearman_rho/H/network/clean_acc"]  # 3 models: a rank correlation
    assert -1 <= rho <= 1


def test_bad_sources_give_clean_errors(study_runs, checkpoints, tmp_path, capsys):
    assert main(["evaluate", "--runs", "0" * 32, "--tracking-uri", study_runs["uri"], *FAST_ATTACKS]) == 2
    assert "has no usable model" in capsys.readouterr().err
    assert main(["evaluate", "--study", "robust", *FAST_ATTACKS]) == 2
    assert "--study needs --storage" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoints", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
    other = tmp_path / "synthetic.pt"
    config = RunConfig(dataset="synthetic", epochs=1, n_train=200, n_test=100, width=8, depth=2)
    data = load_data(config)
    save_checkpoint(other, build_model(config, data.input_shape, data.n_classes), config)
    assert main(["evaluate", "--checkpoints", checkpoints[0], str(other), *FAST_ATTACKS]) == 2
    assert "trained on different data (dataset: 'digits' vs 'synthetic'" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoints", *checkpoints, "--linf-eps", "0"]) == 2
    assert "linf_eps must be a finite number > 0" in capsys.readouterr().err
