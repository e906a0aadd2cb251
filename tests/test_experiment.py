"""run_experiment and ``complexity-tracker train`` against a real ``mlflow server`` and the default store."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from complexity_tracker.cli.main import main
from complexity_tracker.config import RunConfig
from complexity_tracker.experiment import default_run_name, run_experiment
from complexity_tracker.models import build_model
from complexity_tracker.tracking import LOGGED_COMPLEXITY, STATE_DICT_ARTIFACT, flatten_params, metric_key
from servers import free_port

TINY = RunConfig(model="mlp", depth=2, width=32, dataset="digits", n_train=400, n_test=200, epochs=2,
                 batch_size=50, probe_per_class=20)


class StopAt:
    """Epoch callback raising ``error`` at ``epoch`` (a crash, or Ctrl-C when it is KeyboardInterrupt)."""

    def __init__(self, epoch: int, error: BaseException) -> None:
        self.epoch, self.error = epoch, error

    def __call__(self, result) -> None:
        if result.epoch == self.epoch:
            raise self.error


def test_run_on_a_tracking_server_holds_every_layer_metric_epoch_params_artifacts_and_model(mlflow_server_url, tmp_path):
    result = run_experiment(TINY, tracking_uri=mlflow_server_url, experiment_name="test-experiment",
                            run_name="tiny-mlp", tags={"purpose": "test"})
    client = MlflowClient(mlflow_server_url)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-mlp"

    layers = [r.name for r in result.final_report.records]
    assert layers == ["net.2", "net.4", "network"]
    for layer in layers:
        for metric in LOGGED_COMPLEXITY:
            key = metric_key(metric, layer)
            history = sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)
            assert [m.step for m in history] == [0, 1, 2], key
            assert [m.value for m in history] == pytest.approx([row[key] for row in result.history])
    for key in ("train_loss", "test_loss", "train_acc", "test_acc", "loss_gap"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [0, 1, 2]
    assert run.data.metrics["I_XSY/network"] == pytest.approx(result.final_report.network.I_XSY)

    assert flatten_params(TINY.to_dict()).items() <= run.data.params.items()
    assert run.data.params["tracker.probe_size"] == "200" and run.data.params["tracker.estimator"] == "kde"
    assert run.data.tags["purpose"] == "test" and run.data.tags["complexity_tracker.version"]

    local = client.download_artifacts(result.run_id, "", str(tmp_path))
    assert json.load(open(f"{local}/config.json")) == TINY.to_dict()
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [f"complexity_{layer}.png" for layer in layers]
    assert (tmp_path / "plots" / "complexity_network.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.load(open(f"{local}/complexity/history.json"))) == TINY.epochs + 1

    weights = torch.load(tmp_path / STATE_DICT_ARTIFACT, weights_only=True)
    loaded = build_model(TINY, (1, 8, 8), 10).eval()
    loaded.load_state_dict(weights)
    probe = torch.rand(5, 1, 8, 8)
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(probe), result.model(probe))


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("disk full"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_crashing_and_interrupted_trainings_end_failed_and_killed_with_their_metrics(mlflow_server_url, error, status):
    started = []
    with pytest.raises(type(error)):
        run_experiment(TINY, tracking_uri=mlflow_server_url, experiment_name="test-experiment",
                       callbacks=[lambda r: started.append(mlflow.active_run().info.run_id), StopAt(1, error)])
    client = MlflowClient(mlflow_server_url)
    run = client.get_run(started[0])
    assert run.info.status == status
    for key in ("H/network", "TC/net.2", "train_loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1]
    assert mlflow.active_run() is None


def test_a_run_nests_under_its_parent(mlflow_server_url):
    client = MlflowClient(mlflow_server_url)
    experiment_id = client.get_experiment_by_name("test-experiment") or client.create_experiment("test-experiment")
    experiment_id = getattr(experiment_id, "experiment_id", experiment_id)
    parent = client.create_run(experiment_id, run_name="study")
    result = run_experiment(TINY.replace(epochs=1), tracking_uri=mlflow_server_url, experiment_name="test-experiment",
                            parent_run_id=parent.info.run_id, log_model=False)
    assert client.get_run(result.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert client.list_artifacts(result.run_id, "weights") == []


def test_automatic_run_names_tell_runs_apart(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    configs = [TINY.replace(epochs=1), TINY.replace(epochs=1), TINY.replace(epochs=1, seed=1, depth=1)]
    run_ids = [run_experiment(config, tracking_uri=store, log_model=False).run_id for config in configs]
    names = [MlflowClient(store).get_run(run_id).info.run_name for run_id in run_ids]
    assert len(set(names)) == 3
    assert re.fullmatch(r"mlp-2x32-lam0-seed0-[0-9a-f]{4}", names[0]), names
    assert names[2].startswith("mlp-1x32-lam0-seed1-")
    assert default_run_name(TINY.replace(loss_method="kde", lam=0.003)).startswith("mlp-2x32-lam3e-03-seed0-")


def test_train_command_uses_the_default_store_and_prints_how_to_browse(in_tmp_cwd, capsys):
    code = main(["train", "--depth", "1", "--width", "16", "--epochs", "3", "--measure-every", "2",
                 "--probe-per-class", "10", "--set", "n_train=300", "--set", "n_test=100", "--quiet", "--no-log-model"])
    out = capsys.readouterr().out
    assert code == 0
    run_id = out.split("run id: ")[1].split()[0]
    assert f"{Path(sys.executable).with_name('complexity-tracker')} ui --backend-store-uri sqlite:///{in_tmp_cwd}/mlflow.db" in out
    assert f"/runs/{run_id}" in out
    client = MlflowClient(f"sqlite:///{in_tmp_cwd}/mlflow.db")
    assert (in_tmp_cwd / "mlflow.db").exists()
    assert [m.step for m in client.get_metric_history(run_id, "H/network")] == [0, 2, 3]  # every 2 and the last
    assert [m.step for m in client.get_metric_history(run_id, "test_loss")] == [0, 1, 2, 3]
    assert client.get_run(run_id).data.params["measure_every"] == "2"


def test_train_command_fails_fast_on_an_unreachable_server(in_tmp_cwd, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    code = main(["train", "--epochs", "1", "--tracking-uri", dead, "--quiet"])
    assert code == 2 and time.monotonic() - started < 15
    assert f"cannot reach the MLflow tracking server at {dead}" in capsys.readouterr().err


def test_train_command_rejects_unknown_settings(in_tmp_cwd, capsys):
    assert main(["train", "--set", "widht=3"]) == 2
    assert "--set expects FIELD=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(("arguments", "message"), [
    (["--set", "weight_decay=abc"], "weight_decay must be a number, got 'abc'"),
    (["--set", "adversarial_training=yes"], "adversarial_training must be true or false, got 'yes'"),
    (["--depth", "2", "--set", "loss_layers=3"], "loss_layers must be a list or null, got 3"),
    (["--lam", "0.01"], "lam=0.01 but loss_method='none': choose loss_method ebm, kde or marginal"),
    (["--set", "kde_lam=0.1"], "run setting 'kde_lam' was renamed 'kernel_width'"),
    (["--save", "/nonexistent-folder/model.pt"], "cannot write to /nonexistent-folder"),
])
def test_bad_train_input_is_one_line_and_leaves_no_run(in_tmp_cwd, capsys, arguments, message):
    store = f"sqlite:///{in_tmp_cwd}/mlflow.db"
    assert main(["train", "--epochs", "1", "--quiet", "--tracking-uri", store, *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments, run_view_type=ViewType.ALL) == []


def test_ui_command_explains_what_it_cannot_serve(in_tmp_cwd, capsys, monkeypatch):
    assert main(["ui"]) == 2
    assert f"no tracking store at sqlite:///{in_tmp_cwd}/mlflow.db" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert main(["ui"]) == 2
    assert "serves the UI itself" in capsys.readouterr().err
