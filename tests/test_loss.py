"""Complexity losses: agreement with the estimators, lam = 0, the ebm's state, and their effect on training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from complexity_tracker.config import ConfigError, RunConfig
from complexity_tracker.data import DataSplits, load_data
from complexity_tracker.estimators import kde_entropy, marginal_entropy_sum
from complexity_tracker.gating import NoGatingLayersError
from complexity_tracker.loss import (
    MARGINAL_MOMENTUM,
    EnergyEntropyLoss,
    EnergyNetworks,
    binary_entropy_sum,
    build_complexity_loss,
    soft_gates,
    soft_kde_entropy,
)
from complexity_tracker.metrics import measure_complexity
from complexity_tracker.models import build_model
from complexity_tracker.training import TrainingDivergedError, seed_everything, train

SMALL = dict(model="mlp", depth=2, width=32, n_train=500, n_test=200, epochs=3, batch_size=50,
             optimizer="adam", lr=0.01)
METHODS = ("ebm", "kde", "marginal")


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data(RunConfig(**SMALL))


def _run(config: RunConfig, data: DataSplits):
    seed_everything(config.seed)
    model = build_model(config, data.input_shape, data.n_classes)
    return train(model, data, config, progress=False)


@pytest.mark.parametrize("lam", [0.01, 0.04])
def test_kde_loss_on_hard_gates_equals_the_kernel_estimator(lam: float) -> None:
    rng = np.random.default_rng(0)
    prototypes = rng.integers(0, 2, size=(4, 60))
    states = prototypes[rng.integers(0, 4, size=80)] ^ (rng.random((80, 60)) < 0.05)
    gates = torch.tensor(states, dtype=torch.float64)
    assert soft_kde_entropy(gates, lam).item() == pytest.approx(kde_entropy(states, lam), abs=1e-6)


def test_marginal_loss_on_hard_gates_equals_the_marginal_sum() -> None:
    states = (np.random.default_rng(1).random((200, 30)) < np.linspace(0.05, 0.95, 30)).astype(np.uint8)
    rates = torch.tensor(states, dtype=torch.float64).mean(dim=0)
    assert binary_entropy_sum(rates).item() == pytest.approx(marginal_entropy_sum(states), abs=1e-3)


def test_soft_gates_approach_hard_gates_and_carry_gradients() -> None:
    z = torch.tensor([[-0.2, -0.01, 0.01, 0.3]], requires_grad=True)
    gates = soft_gates(z, beta=1000.0)
    assert torch.allclose(gates, (z >= 0).float(), atol=1e-4)
    soft_gates(z, beta=100.0).sum().backward()
    assert (z.grad[0, 1:3] > 10).all()  # steep near z = 0, where gates can still flip


@pytest.mark.parametrize("method", METHODS)
def test_lam_zero_is_exactly_the_plain_run(digits, method: str) -> None:
    plain = _run(RunConfig(**SMALL), digits)
    zero = _run(RunConfig(**SMALL, loss_method=method, lam=0.0), digits)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), zero.model.state_dict().values()))
    assert plain.history == zero.history


def _penalised_h(model, data: DataSplits, layers: list[str]) -> float:
    return measure_complexity(model, data.x_train[:300], data.y_train[:300], layers=layers).network.H


@pytest.mark.parametrize(("method", "lam"), [("ebm", 0.02), ("kde", 0.1), ("marginal", 0.02)])
def test_a_strong_penalty_lowers_the_complexity_of_the_penalised_layer(digits, method: str, lam: float) -> None:
    layers = ["net.4"]
    plain = _run(RunConfig(**SMALL), digits).model
    result = _run(RunConfig(**SMALL, loss_method=method, lam=lam, loss_layers=layers), digits)
    assert all(math.isfinite(h["complexity_loss"]) for h in result.history)
    assert _penalised_h(result.model, digits, layers) < _penalised_h(plain, digits, layers) - 1.0
    assert result.history[-1]["test_acc"] > 0.3  # still a classifier, not a collapsed network


def test_loss_every_spaces_the_penalised_steps(digits) -> None:
    config = RunConfig(**SMALL, loss_method="marginal", lam=0.05, loss_every=1000)
    result = _run(config, digits)
    assert math.isnan(result.history[1]["complexity_loss"])  # 30 steps, none penalised
    plain = _run(RunConfig(**SMALL), digits)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), result.model.state_dict().values()))


def test_layers_of_equal_and_unequal_size_add_up_as_separate_estimates() -> None:
    torch.manual_seed(0)
    model = build_model(RunConfig(model="mlp_mnist"), (1, 8, 8), 10)  # hidden widths 84, 21, 10, 8
    model.net[3] = torch.nn.Linear(84, 84)
    model.net[5] = torch.nn.Linear(84, 10)  # now 84, 84, 10, 8: one group of two layers
    loss = build_complexity_loss(model, RunConfig(loss_method="kde", lam=1.0, loss_beta=5.0))
    with loss.recording() as recorder:
        model(torch.rand(30, 1, 8, 8))
    records = recorder.records()
    separate = sum(soft_kde_entropy(soft_gates(z, 5.0), 0.01) for _, z in records)
    assert loss(records).item() == pytest.approx(separate.item(), rel=1e-5)
    marginal = build_complexity_loss(model, RunConfig(loss_method="marginal", lam=1.0, loss_beta=5.0))
    expected = sum(binary_entropy_sum(soft_gates(z, 5.0).mean(dim=0)) for _, z in records)
    assert marginal(records).item() == pytest.approx(expected.item(), rel=1e-5)


def test_only_the_selected_layers_are_penalised() -> None:
    model = build_model(RunConfig(**SMALL), (1, 8, 8), 10)
    loss = build_complexity_loss(model, RunConfig(**SMALL, loss_method="kde", lam=1.0, loss_layers=["net.[4]"]))
    with loss.recording() as recorder:
        model(torch.rand(6, 1, 8, 8))
    assert [name for name, _ in recorder.records()] == ["net.4"]


def test_ebm_tracks_running_marginals_and_trains_only_its_energy_network() -> None:
    torch.manual_seed(0)
    model = build_model(RunConfig(**SMALL), (1, 8, 8), 10)
    loss = build_complexity_loss(model, RunConfig(**SMALL, loss_method="ebm", lam=1.0, loss_layers=["net.2"]))
    assert isinstance(loss, EnergyEntropyLoss)
    batches = [torch.rand(40, 1, 8, 8), torch.rand(40, 1, 8, 8) * 0.2]
    rates = []
    for x in batches:
        with loss.recording() as recorder:
            model(x)
        (_, z), = recorder.records()
        rates.append(soft_gates(z, 100.0).detach().mean(dim=0))
        before = [p.clone() for p in loss.parameters()] if loss.densities else None
        value = loss(recorder.records())
        value.backward()
    density = loss.densities["net/2"]
    expected = (1 - MARGINAL_MOMENTUM) * rates[0] + MARGINAL_MOMENTUM * rates[1]
    assert torch.allclose(density.marginals[0], expected, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, loss.parameters()))  # a CD step moved f
    assert all(p.grad is None for p in density.energy.parameters())  # the task gradient does not reach f
    assert next(model.parameters()).grad is not None
    frozen = [p.clone() for p in loss.parameters()]
    with loss.recording() as recorder:
        model(batches[0])
    loss(recorder.records(), update=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen, loss.parameters()))


def test_energy_network_input_gradient_matches_autograd() -> None:
    torch.manual_seed(0)
    energy = EnergyNetworks(layers=3, d=40)
    gates = torch.rand(3, 7, 40, requires_grad=True)
    (expected,) = torch.autograd.grad(energy(gates).sum(), gates)
    assert torch.allclose(energy.input_gradient(gates.detach()), expected, atol=1e-6)


def test_ebm_runs_on_conv_feature_maps(digits) -> None:
    config = RunConfig(**{**SMALL, "model": "lenet", "width": 3, "epochs": 1}, loss_method="ebm", lam=0.01,
                       loss_layers=["features.*"], loss_every=2)
    result = _run(config, digits)
    assert math.isfinite(result.history[-1]["complexity_loss"])


def test_log10_lam_is_accepted_and_negative_lam_is_not() -> None:
    assert RunConfig.from_dict({"loss_method": "ebm", "log10_lam": -3}).lam == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="lam must be a finite number >= 0"):
        RunConfig(loss_method="kde", lam=-0.1)


def test_unknown_method_and_lam_without_method_are_refused() -> None:
    with pytest.raises(ConfigError, match="loss_method='entropy' is not one of none, ebm, kde, marginal"):
        RunConfig(loss_method="entropy")
    model = build_model(RunConfig(**SMALL), (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="lam=0.1 but loss_method='none'"):
        build_complexity_loss(model, RunConfig(**SMALL, lam=0.1))


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_unknown_layer_names_are_refused_before_training(digits, lam: float) -> None:
    config = RunConfig(**SMALL, loss_method="kde", lam=lam, loss_layers=["blocks.*"])
    with pytest.raises(NoGatingLayersError, match=r"matches no gating module; available layers: net.2, net.4"):
        _run(config, digits)


def test_an_overflowing_penalty_stops_with_the_epoch_and_step(digits) -> None:
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 1: the total loss is inf"):
        _run(RunConfig(**SMALL, loss_method="marginal", lam=1e308), digits)


def test_the_epoch_zero_penalty_leaves_batchnorm_statistics_alone(digits) -> None:
    class Stop(Exception):
        pass

    config = RunConfig(**{**SMALL, "model": "resnet20", "width": 2}, loss_method="kde", lam=0.1)
    seed_everything(0)
    model = build_model(config, digits.input_shape, digits.n_classes)
    initial = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    def check_epoch_zero(result) -> None:
        assert "complexity_loss" in result.metrics
        assert all(torch.equal(initial[k], result.model.state_dict()[k]) for k in initial)
        raise Stop

    with pytest.raises(Stop):
        train(model, digits, config, callbacks=[check_epoch_zero], progress=False)
