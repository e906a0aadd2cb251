"""`complexity-tracker evaluate` on checkpoints, MLflow runs (real server) and an Optuna study."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

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
from complexity_tracker.tracking import STATE_DICT_ARTIFACT
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
    client = MlflowClient(study_runs["uri"])
    source = from_run(client, study_runs["runs"][0])
    assert source.name == "width-6" and source.config.width == 6
    assert any(isinstance(m, torch.nn.ReLU) for m in source.model.modules())
    data = load_data(source.config)
    with torch.no_grad():
        accuracy = (source.model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy == pytest.approx(client.get_run(source.run_id).data.metrics["test_acc"], abs=1e-6)


def test_measure_takes_runs_and_reads_what_they_logged(study_runs, capsys):
    run_id = study_runs["runs"][1]
    assert main(["measure", "--runs", run_id, "--tracking-uri", study_runs["uri"], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    network = next(layer for layer in printed["layers"] if layer["name"] == "network")
    logged = MlflowClient(study_runs["uri"]).get_run(run_id).data.metrics
    assert printed["run_id"] == run_id and network["H"] == pytest.approx(logged["H/network"], abs=1e-9)
    assert main(["measure", "--study", "robust", "--storage", study_runs["storage"], "--top-k", "1",
                 "--tracking-uri", study_runs["uri"]]) == 0
    assert "(trial-" in capsys.readouterr().out
    assert main(["measure", "x.pt", "--runs", run_id]) == 2
    assert "not both" in capsys.readouterr().err


class CreatesAFile:
    """Unpickling this opens (creates) ``path``: what a hostile run could put in its model artifact."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_run_whose_weights_are_a_hostile_pickle_is_refused_unexecuted(study_runs, tmp_path, writer):
    client = MlflowClient(study_runs["uri"])
    run_id = client.create_run(client.get_run(study_runs["runs"][0]).info.experiment_id, run_name="hostile").info.run_id
    client.log_dict(run_id, TINY.to_dict(), "config.json")
    marker = tmp_path / "code-ran"
    payload = tmp_path / "state_dict.pt"
    if writer == "torch.save":
        torch.save({"net.0.weight": CreatesAFile(str(marker))}, payload)
    else:
        payload.write_bytes(pickle.dumps(CreatesAFile(str(marker))))
    client.log_artifact(run_id, str(payload), STATE_DICT_ARTIFACT.rsplit("/", 1)[0])
    # the MLflow model of the run is a pickle too: it must not be read at all
    pickled_model = tmp_path / "model" / "data" / "model.pth"
    pickled_model.parent.mkdir(parents=True)
    pickled_model.write_bytes(pickle.dumps(CreatesAFile(str(marker))))
    client.log_artifacts(run_id, str(tmp_path / "model"), "model")
    client.set_terminated(run_id)
    with pytest.raises(ModelSourceError, match=r"refused the weights of MLflow run .* not a plain state_dict"):
        from_run(client, run_id)
    assert not marker.exists()


def test_a_run_without_a_state_dict_is_refused(study_runs, tmp_path, capsys):
    client = MlflowClient(study_runs["uri"])
    run_id = client.create_run(client.get_run(study_runs["runs"][0]).info.experiment_id, run_name="old").info.run_id
    client.log_dict(run_id, TINY.to_dict(), "config.json")
    marker = tmp_path / "code-ran"
    pickled_model = tmp_path / "model" / "data" / "model.pth"
    pickled_model.parent.mkdir(parents=True)
    pickled_model.write_bytes(pickle.dumps(CreatesAFile(str(marker))))
    client.log_artifacts(run_id, str(tmp_path / "model"), "model")
    assert main(["evaluate", "--runs", run_id, "--tracking-uri", study_runs["uri"], *FAST_ATTACKS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"lacks config.json or {STATE_DICT_ARTIFACT}" in err and "could run code" in err
    assert not marker.exists()


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


def test_runs_evaluation_creates_a_summary_run(study_runs, tmp_path, capsys):
    assert main(["evaluate", "--runs", *study_runs["runs"], "--tracking-uri", study_runs["uri"], *FAST_ATTACKS]) == 0
    out = capsys.readouterr().out
    summary_id = out.strip().rsplit(" ", 1)[-1]
    summary = MlflowClient(study_runs["uri"]).get_run(summary_id)
    assert summary.info.run_name == "robustness-evaluation" and summary.info.status == "FINISHED"
    rho = summary.data.metrics["robustness/spearman_rho/H/network/clean_acc"]  # 3 models: a rank correlation
    assert -1 <= rho <= 1
    # by default the complexity is what each run logged at its last epoch, on its own probe
    assert "complexity (bits): logged by the run at epoch 3 (its probe of 100 samples, kde)" in out
    client = MlflowClient(study_runs["uri"])
    comparison = json.loads(Path(client.download_artifacts(summary_id, "robustness/comparison.json", str(tmp_path)))
                            .read_text())
    for model in comparison["models"]:
        assert model["complexity"]["H/network"] == client.get_run(model["run_id"]).data.metrics["H/network"]
    assert main(["evaluate", "--runs", *study_runs["runs"][:2], "--tracking-uri", study_runs["uri"], "--no-log",
                 "--remeasure", *FAST_ATTACKS]) == 0
    assert "complexity (bits): measured on a probe of 100 samples (kde)" in capsys.readouterr().out


def test_bad_sources_give_clean_errors(study_runs, checkpoints, tmp_path, capsys):
    assert main(["evaluate", "--runs", "0" * 32, "--tracking-uri", study_runs["uri"], *FAST_ATTACKS]) == 2
    assert "cannot be read" in capsys.readouterr().err
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
