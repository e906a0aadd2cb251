"""ComplexityTracker in a user-written training loop, against the embedded SQLite store (real MLflow)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits
from torch import nn

from complexity_tracker import tracking
from complexity_tracker.tracking import (
    LOGGED_COMPLEXITY,
    ComplexityTracker,
    TrackerSettingError,
    TrackerStateError,
    metric_key,
)
from complexity_tracker.tracking_store import TrackingServerUnreachableError
from servers import free_port

EPOCHS = 2


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder (and one mlflow.db: creating it costs seconds) for the module's runs."""
    return tmp_path_factory.mktemp("default-store")


@pytest.fixture
def store_cwd(shared_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in the shared folder with no MLFLOW_TRACKING_URI, so the default store is its mlflow.db."""
    monkeypatch.chdir(shared_store)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return shared_store


def small_mlp(depth: int = 2, width: int = 16, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    size = 64
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        size = width
    return nn.Sequential(*layers, nn.Linear(size, 10))


def user_training_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tracker: ComplexityTracker,
                       epochs: int = EPOCHS, fail_at: int | None = None, failure: BaseException | None = None) -> None:
    """A plain loop as a user writes it: SGD on the first 1200 digits, evaluation on the rest."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs + 1):
        if epoch:
            model.train()
            for start in range(0, 1200, 100):
                optimizer.zero_grad()
                loss_fn(model(x[start : start + 100]), y[start : start + 100]).backward()
                optimizer.step()
        if epoch == fail_at:
            raise failure
        model.eval()
        with torch.no_grad():
            train_loss = loss_fn(model(x[:1200]), y[:1200]).item()
            test_loss = loss_fn(model(x[1200:]), y[1200:]).item()
        tracker.log_epoch(epoch, model, {"train_loss": train_loss, "test_loss": test_loss,
                                         "loss_gap": test_loss - train_loss})


def test_user_loop_logs_every_layer_metric_and_epoch_to_the_default_store(store_cwd, digits, tmp_path):
    x, y = digits
    model = small_mlp()
    with ComplexityTracker.from_dataset(x, y, per_class=20, config={"lr": 0.1, "model": "user-mlp"}) as tracker:
        user_training_loop(model, x, y, tracker)

    assert (store_cwd / "mlflow.db").exists(), "the embedded default store is sqlite:///mlflow.db in the cwd"
    client = MlflowClient(f"sqlite:///{store_cwd}/mlflow.db")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    layers = ["1", "3", "network"]
    expected_keys = {metric_key(m, layer) for m in LOGGED_COMPLEXITY for layer in layers}
    expected_keys |= {"train_loss", "test_loss", "loss_gap"}
    assert set(run.data.metrics) == expected_keys  # deterministic model: no I_XS keys
    for key in expected_keys:
        history = client.get_metric_history(tracker.run_id, key)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(EPOCHS + 1)), key
        for metric in history:
            assert metric.value == pytest.approx(tracker.history[metric.step][key])
    h_network = [tracker.history[e]["H/network"] for e in range(EPOCHS + 1)]
    assert all(0 < h <= np.log2(200) + 1e-9 for h in h_network)

    params = run.data.params
    assert params["model"] == "user-mlp" and params["tracker.probe_size"] == "200"
    assert params["tracker.probe_per_class"] == "20" and params["tracker.estimator"] == "kde"
    assert run.data.tags["complexity_tracker.version"]

    artifacts = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"complexity", "plots", "config.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(tracker.run_id, "plots")}
    assert plots == {f"plots/complexity_{layer}.png" for layer in layers}
    local = client.download_artifacts(tracker.run_id, "complexity", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(open(f"{local}/complexity.csv").read())))
    assert len(rows) == (EPOCHS + 1) * len(layers)
    assert {r["layer"] for r in rows} == set(layers)
    row = next(r for r in rows if r["layer"] == "1" and r["epoch"] == "2")
    assert float(row["H"]) + float(row["TC"]) - float(row["C"]) == pytest.approx(float(row["additivity_gap"]))
    assert row["conditional_capped"] == "False"
    with np.load(f"{local}/activation_rates.npz") as rates:
        assert rates["1@epoch2"].shape == (16,) and ((0 <= rates["1@epoch2"]) & (rates["1@epoch2"] <= 1)).all()


def test_each_epoch_is_one_log_batch_request(store_cwd, digits, monkeypatch):
    x, y = digits
    model = small_mlp()
    tracker = ComplexityTracker.from_dataset(x, y, per_class=10, measure_every=2).start()
    calls = []
    real_log_batch = tracker._client.log_batch
    monkeypatch.setattr(tracker._client, "log_batch", lambda *a, **kw: calls.append(kw) or real_log_batch(*a, **kw))
    for epoch in range(3):
        tracker.log_epoch(epoch, model, {"train_loss": 1.0})
        assert len(calls) == epoch + 1
        assert {m.step for m in calls[-1]["metrics"]} == {epoch}
    per_epoch = 1 + 3 * len(LOGGED_COMPLEXITY)  # train_loss + each value of layers 1, 3 and network
    assert [len(c["metrics"]) for c in calls] == [per_epoch, 1, per_epoch]  # complexity only on measured epochs
    tracker.end()


def test_more_metrics_than_one_batch_holds_are_split(store_cwd, digits, monkeypatch):
    x, y = digits
    assert tracking.MAX_METRICS_PER_BATCH == 1000  # MLflow's limit per log_batch request
    monkeypatch.setattr(tracking, "MAX_METRICS_PER_BATCH", 4)
    with ComplexityTracker.from_dataset(x, y, per_class=3) as tracker:
        calls = []
        real_log_batch = tracker._client.log_batch
        monkeypatch.setattr(tracker._client, "log_batch", lambda *a, **kw: calls.append(kw) or real_log_batch(*a, **kw))
        tracker.log_epoch(0, small_mlp(), {"train_loss": 2.0})
    assert [len(c["metrics"]) for c in calls] == [4, 4, 4, 1]  # train_loss + 4 values x 3 records = 13
    assert len(MlflowClient(f"sqlite:///{store_cwd}/mlflow.db").get_run(tracker.run_id).data.metrics) == 13


def test_dropout_model_also_logs_I_XS(store_cwd, digits):
    x, y = digits
    model = small_mlp(dropout=0.3)
    with ComplexityTracker.from_dataset(x, y, per_class=10, repeats=3) as tracker:
        report = tracker.log_epoch(0, model)
    assert report.stochastic
    metrics = MlflowClient(f"sqlite:///{store_cwd}/mlflow.db").get_run(tracker.run_id).data.metrics
    assert metrics["I_XS/1"] == pytest.approx(metrics["H/1"])  # the first gates come before any dropout
    for layer in ("4", "network"):
        assert metrics[f"I_XS/{layer}"] < metrics[f"H/{layer}"]  # dropout makes H(S|X) > 0
    assert metrics["conditional_capped/1"] == 0.0  # deterministic given X: H(S|X) = 0, far below log2 3


@pytest.mark.parametrize(
    ("failure", "status"), [(RuntimeError("loss exploded"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_crash_or_ctrl_c_ends_the_run_and_keeps_its_metrics(store_cwd, digits, failure, status):
    x, y = digits
    model = small_mlp()
    tracker = ComplexityTracker.from_dataset(x, y, per_class=10)
    with pytest.raises(type(failure)), tracker:
        user_training_loop(model, x, y, tracker, fail_at=2, failure=failure)
    client = MlflowClient(f"sqlite:///{store_cwd}/mlflow.db")
    run = client.get_run(tracker.run_id)
    assert run.info.status == status
    assert [m.step for m in client.get_metric_history(tracker.run_id, "H/network")] == [0, 1]
    assert {a.path for a in client.list_artifacts(tracker.run_id, "plots")}  # artifacts written on the way out
    assert mlflow.active_run() is None


def test_ctrl_c_while_artifacts_are_written_ends_the_run_killed(store_cwd, digits, monkeypatch):
    x, y = digits
    tracker = ComplexityTracker.from_dataset(x, y, per_class=10).start()
    tracker.log_epoch(0, small_mlp())

    def interrupted_plot(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "plot_layer_complexity", interrupted_plot)
    with pytest.raises(KeyboardInterrupt):
        tracker.end("FINISHED")
    assert MlflowClient(f"sqlite:///{store_cwd}/mlflow.db").get_run(tracker.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None  # MLflow's exit hook cannot end it FINISHED later


def test_unreachable_server_fails_fast_with_a_clear_message(store_cwd, digits, monkeypatch):
    x, y = digits
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    started = time.monotonic()
    with pytest.raises(TrackingServerUnreachableError, match="cannot reach the MLflow tracking server") as info:
        ComplexityTracker.from_dataset(x, y, per_class=5).start()
    assert time.monotonic() - started < 10
    assert dead in str(info.value) and "MLFLOW_TRACKING_URI" in str(info.value)
    assert mlflow.active_run() is None


def test_logging_outside_a_run_is_a_clear_error(store_cwd, digits):
    x, y = digits
    tracker = ComplexityTracker.from_dataset(x, y, per_class=5)
    with pytest.raises(TrackerStateError, match="tracker.start"):
        tracker.log_epoch(0, small_mlp())
    with tracker:
        tracker.log_epoch(0, small_mlp())
    with pytest.raises(TrackerStateError, match="already ended"):
        tracker.log_epoch(1, small_mlp())


def test_bad_settings_are_rejected_before_any_run_starts(digits):
    x, y = digits
    with pytest.raises(TrackerSettingError, match="measure_every must be an integer >= 1"):
        ComplexityTracker(x[:20], y[:20], measure_every=0)
    with pytest.raises(TrackerSettingError, match="one label per probe input"):
        ComplexityTracker(x[:20], y[:19])
    with pytest.raises(ValueError, match="unknown estimator"):
        ComplexityTracker(x[:20], y[:20], estimator="histogram")
    with pytest.raises(ValueError, match=r"repeats >= 2"):
        ComplexityTracker(x[:20], y[:20], repeats=1)
    with pytest.raises(ValueError, match="too small for its 10 classes"):
        ComplexityTracker(x[:10], torch.arange(10))  # one input per class: I(X;S;Y) needs 2
    with pytest.raises(ValueError, match="per_class <= "):
        ComplexityTracker.from_dataset(x, y, per_class=1000)


def test_an_unknown_tc_method_is_refused_before_any_run_exists(tmp_path):
    from complexity_tracker.estimators import TCMethodError

    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
    with pytest.raises(TCMethodError, match="unknown tc_method 'ksg'"):
        ComplexityTracker(x, y, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", tc_method="ksg")
    assert not (tmp_path / "mlflow.db").exists()
