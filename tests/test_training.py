"""The training loop: determinism, metrics, callbacks, schedules, PGD training, divergence, checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchattacks
from torch import nn

from complexity_tracker.config import RunConfig
from complexity_tracker.data import DatasetError, DataSplits, load_data
from complexity_tracker.models import build_model
from complexity_tracker.training import (
    CheckpointError,
    DeviceError,
    EpochResult,
    PGDTraining,
    TrainingDivergedError,
    evaluate,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    seed_everything,
    train,
)

SMALL = dict(model="mlp", depth=2, width=32, dataset="digits", n_train=600, n_test=300, epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data(RunConfig(**SMALL))


def _fresh(config: RunConfig, data: DataSplits) -> nn.Module:
    seed_everything(config.seed, config.deterministic)
    return build_model(config, data.input_shape, data.n_classes)


def _run(config: RunConfig, data: DataSplits, **kwargs):
    return train(_fresh(config, data), data, config, progress=False, **kwargs)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(digits) -> None:
    config = RunConfig(**{**SMALL, "model": "dropout_mlp"})
    first, second = _run(config, digits), _run(config, digits)
    assert _same_weights(first.model, second.model)
    assert first.history == second.history
    assert not _same_weights(first.model, _run(config.replace(seed=1), digits).model)


def test_history_and_callbacks_cover_epoch_zero_to_the_last(digits) -> None:
    config = RunConfig(**SMALL)
    model = _fresh(config, digits)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[EpochResult] = []

    def callback(result: EpochResult) -> None:
        if result.epoch == 0:
            assert all(torch.equal(initial[k], v) for k, v in result.model.state_dict().items())
        seen.append(result)

    result = train(model, digits, config, callbacks=[callback], progress=False)
    assert [r.epoch for r in seen] == [0, 1, 2]
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    for entry, epoch_result in zip(result.history, seen):
        assert {"train_loss", "test_loss", "train_acc", "test_acc", "loss_gap", "lr"} <= set(epoch_result.metrics)
        assert "complexity_loss" not in epoch_result.metrics
        assert entry["loss_gap"] == pytest.approx(entry["test_loss"] - entry["train_loss"])
    test_loss, test_acc = evaluate(result.model, digits.x_test, digits.y_test)
    assert result.history[-1]["test_loss"] == pytest.approx(test_loss)
    assert result.history[-1]["test_acc"] == pytest.approx(test_acc)


def test_a_callback_exception_stops_training(digits) -> None:
    class Stop(Exception):
        pass

    epochs: list[int] = []

    def stop_after_first(result: EpochResult) -> None:
        epochs.append(result.epoch)
        if result.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        _run(RunConfig(**{**SMALL, "epochs": 5}), digits, callbacks=[stop_after_first])
    assert epochs == [0, 1]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_learns_digits(digits, optimizer: str) -> None:
    lr = 0.2 if optimizer == "sgd" else 0.01
    history = _run(RunConfig(**{**SMALL, "epochs": 8, "optimizer": optimizer, "lr": lr}), digits).history
    assert history[0]["test_acc"] < 0.3
    assert history[-1]["test_acc"] > 0.8
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 3


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("none", [0.1] * 7), ("step", [0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]), ("cosine", None)],
)
def test_learning_rate_schedules(digits, schedule: str, expected) -> None:
    config = RunConfig(**{**SMALL, "epochs": 6, "lr": 0.1, "schedule": schedule, "n_train": 64})
    lrs = [h["lr"] for h in _run(config, digits).history]
    if expected is None:
        assert lrs[:2] == pytest.approx([0.1, 0.1]) and lrs[4] == pytest.approx(0.05) and 0 < lrs[-1] < 0.01
        assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    else:
        assert lrs == pytest.approx(expected)


def test_pgd_training_steps_stay_in_the_ball_and_restore_the_mode() -> None:
    torch.manual_seed(0)
    for name, shape in [("dropout_mlp", (16,)), ("dropout_mlp", (1, 8, 8)), ("resnet20", (1, 8, 8))]:
        model = build_model(RunConfig(model=name, depth=2, width=4), shape, 2).train()
        x, y = torch.rand(20, *shape), torch.arange(20) % 2
        adversarial = PGDTraining(model, eps=0.05)(x, y)
        assert adversarial.shape == x.shape
        assert (adversarial - x).abs().max().item() <= 0.05 + 1e-6
        assert 0.0 <= adversarial.min().item() and adversarial.max().item() <= 1.0
        assert not torch.equal(adversarial, x)
        assert model.training and all(m.training for m in model.modules())


def _robust_accuracy(model: nn.Module, data: DataSplits, eps: float) -> float:
    model.eval()
    attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)
    adversarial = attack(data.x_test, data.y_test)
    with torch.no_grad():
        return (model(adversarial).argmax(1) == data.y_test).float().mean().item()


def test_adversarial_training_makes_the_model_more_robust(digits) -> None:
    config = RunConfig(**{**SMALL, "epochs": 10, "optimizer": "adam", "lr": 0.01})
    plain = _run(config, digits).model
    robust = _run(config.replace(adversarial_training=True, adv_eps=0.1), digits).model
    assert _robust_accuracy(robust, digits, 0.1) > _robust_accuracy(plain, digits, 0.1) + 0.1


def test_adversarial_training_runs_on_conv_models(digits) -> None:
    config = RunConfig(**{**SMALL, "model": "lenet", "width": 3, "epochs": 1, "adversarial_training": True})
    history = _run(config, digits).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_a_nan_loss_stops_with_the_epoch_and_step(digits) -> None:
    def break_weights_after_epoch_one(result: EpochResult) -> None:
        if result.epoch == 1:
            with torch.no_grad():
                next(result.model.parameters()).fill_(float("inf"))

    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 1: the task loss is nan") as info:
        _run(RunConfig(**{**SMALL, "epochs": 3}), digits, callbacks=[break_weights_after_epoch_one])
    assert (info.value.epoch, info.value.step) == (2, 1)


def test_non_finite_inputs_are_refused_before_training(digits) -> None:
    poisoned = DataSplits(digits.x_train.clone(), digits.y_train, digits.x_test, digits.y_test, 10, "digits")
    poisoned.x_train[3, 0, 2, 2] = float("nan")
    with pytest.raises(DatasetError, match="data.x_train holds NaN or inf"):
        _run(RunConfig(**SMALL), poisoned)


def test_an_exploding_learning_rate_is_reported_as_divergence(digits) -> None:
    with pytest.raises(TrainingDivergedError, match=r"training diverged at epoch \d+, step \d+") as info:
        _run(RunConfig(**{**SMALL, "lr": 1e12, "epochs": 3, "schedule": "none"}), digits)
    assert info.value.epoch >= 1 and info.value.step >= 1


def test_progress_bar_is_shown_only_when_asked(digits, capsys) -> None:
    config = RunConfig(**{**SMALL, "epochs": 1})
    train(_fresh(config, digits), digits, config, progress=False)
    assert "step" not in capsys.readouterr().err
    train(_fresh(config, digits), digits, config, progress=True)
    assert "10/10" in capsys.readouterr().err


def test_checkpoint_round_trip(tmp_path, digits) -> None:
    config = RunConfig(**{**SMALL, "model": "lenet", "width": 3, "epochs": 1, "loss_layers": ["features.1"]})
    model = _run(config, digits).model
    save_checkpoint(tmp_path / "model.pt", model, config)
    loaded, loaded_config = load_checkpoint(tmp_path / "model.pt")
    assert loaded_config == config
    assert _same_weights(model, loaded)
    model.eval(), loaded.eval()
    assert torch.equal(model(digits.x_test[:8]), loaded(digits.x_test[:8]))


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoints_load_without_running_pickled_code(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": _Exploit()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="not a complexity_tracker checkpoint"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="needs a model from build_model"):
        save_checkpoint(path, nn.Linear(2, 2), RunConfig())


def test_device_names_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="not a torch device name"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
