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
    ENERGY_GRAD_CLIP,
    ENERGY_LR,
    MARGINAL_MOMENTUM,
    EnergyEntropyLoss,
    EnergyNetwork,
    LayerDensity,
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
    result = _run(RunConfig(**SMALL, loss_method=method, lam=lam, loss_layers=layers, loss_every=1), digits)
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


def test_loss_is_added_every_ten_steps_by_default_as_in_the_paper() -> None:
    assert RunConfig().loss_every == 10
    assert RunConfig().loss_beta == 100.0  # the official Swish / soft gate sigmoid(100 z)
    assert (RunConfig().ebm_steps, RunConfig().ebm_tau) == (5, 1e-3)


def test_energy_network_is_the_official_architecture() -> None:
    torch.manual_seed(0)
    energy = EnergyNetwork(3072)
    linears = [m for m in energy if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (3072, 32), (32, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 1)]
    assert [m.bias is not None for m in linears] == [False] * 6 + [True]
    kinds = [type(m).__name__ for m in energy]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 6 + ["Linear"]
    first = linears[0].weight
    assert first.std().item() == pytest.approx(math.sqrt(2 / 3072), rel=0.03)  # Kaiming normal
    assert abs(first.mean().item()) < 1e-3
    gates = torch.rand(9, 3072)
    raw = torch.nn.Sequential(*energy)(gates).squeeze(-1)
    assert torch.allclose(energy(gates), raw * 3072 / 1000)  # output scaled by d / 1000
    energy.train()
    assert not any(m.training for m in energy.modules())
    energy(gates)
    batch_norms = [m for m in energy if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in batch_norms)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in batch_norms)


def _density(n: int = 16, d: int = 24, seed: int = 0) -> tuple[LayerDensity, torch.Tensor]:
    torch.manual_seed(seed)
    z = torch.randn(n, d, dtype=torch.float64) * 0.02
    return LayerDensity(z, ENERGY_LR), z


def test_energy_optimiser_is_sgd_with_official_settings_and_clipped_gradients() -> None:
    density, z = _density()
    optimizer = density.optimizer
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-4, 0.9, 5e-4)
    before = [p.detach().clone() for p in density.energy.parameters()]
    density.contrastive_divergence(torch.sigmoid(100 * z), steps=5, tau=1e-3)
    # first SGD step with momentum: theta <- theta - lr * (clip(grad) + weight_decay * theta)
    clipped_steps = []
    for old, new in zip(before, density.energy.parameters()):
        clipped_steps.append((old - new.detach()) / 1e-4 - 5e-4 * old)
    largest = max(step.abs().max().item() for step in clipped_steps)
    assert largest <= ENERGY_GRAD_CLIP * (1 + 1e-6)
    assert largest == pytest.approx(ENERGY_GRAD_CLIP, rel=1e-6)  # the raw gradient was larger: clipped
    assert all(p.grad is None and not p.requires_grad for p in density.energy.parameters())


def test_energy_learning_rate_falls_two_decades_over_the_epochs() -> None:
    model = build_model(RunConfig(**SMALL), (1, 8, 8), 10)
    loss = EnergyEntropyLoss(model, ["net.2"], beta=100.0, epochs=5)
    with loss.recording() as recorder:
        model(torch.rand(20, 1, 8, 8))
    loss(recorder.records())
    lrs = []
    for _ in range(5):
        lrs.append(loss.densities["net/2"].optimizer.param_groups[0]["lr"])
        loss.end_epoch()
    assert lrs == pytest.approx([1e-4 * 10 ** (-2 * e / 4) for e in range(5)], rel=1e-9)


def test_marginals_are_running_averages_of_hard_open_rates() -> None:
    z = [torch.randn(40, 30, dtype=torch.float64) * 0.01 + shift for shift in (0.0, 0.004, -0.004)]
    hard = [(batch > 0).double().mean(dim=0) for batch in z]
    assert not torch.allclose(torch.sigmoid(100 * z[1]).mean(dim=0), hard[1], atol=0.05)  # soft rates differ
    density = LayerDensity(z[0], ENERGY_LR)
    assert torch.equal(density.marginals, hard[0])
    density.update_marginals(z[1])  # the first update replaces the initial rates, as the official tracker
    assert torch.equal(density.marginals, hard[1])
    density.update_marginals(z[2])
    expected = (1 - MARGINAL_MOMENTUM) * hard[1] + MARGINAL_MOMENTUM * hard[2]
    assert MARGINAL_MOMENTUM == 0.1
    assert torch.allclose(density.marginals, expected, atol=1e-12)


def test_log_q_interpolates_the_bernoulli_probability_in_nats() -> None:
    density, _ = _density(d=3)
    density.marginals.copy_(torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64))
    hard = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    expected = math.log(0.2 + 1e-5) + math.log(0.5 + 1e-5) + math.log(0.9 + 1e-5)
    assert density.log_q(hard).item() == pytest.approx(expected)
    soft = torch.tensor([[0.25, 0.5, 0.5]], dtype=torch.float64)
    linear = [0.25 * 0.2 + 0.75 * 0.8, 0.5, 0.5 * 0.9 + 0.5 * 0.1]
    assert density.log_q(soft).item() == pytest.approx(sum(math.log(p + 1e-5) for p in linear))


def test_langevin_is_the_official_update_clamped_to_the_unit_cube() -> None:
    density, z = _density(n=6, d=50)
    start = torch.sigmoid(100 * z)
    tau, steps = 0.05, 5
    calls = []
    density.energy.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(7)
    sample = density.langevin(start, steps, tau)
    assert len(calls) == steps
    torch.manual_seed(7)
    expected = start.clone()
    for _ in range(steps):
        point = expected.clone().requires_grad_(True)
        energy = -(density.energy(point) + density.log_q(point)).sum()
        (slope,) = torch.autograd.grad(energy, point)
        noise = torch.randn(1, 50, dtype=torch.float64)  # one draw per step, shared by the batch
        expected = (expected - 0.5 * tau * slope + math.sqrt(tau) * noise).clamp(0.0, 1.0)
    assert torch.allclose(sample, expected, atol=1e-12)
    assert sample.min() == 0.0 and sample.max() == 1.0  # the unclamped chain would have left [0, 1]
    assert torch.equal(start, torch.sigmoid(100 * z))  # the batch's gates are not modified


def test_langevin_noise_has_variance_tau_per_step_and_is_shared_by_the_batch() -> None:
    density, _ = _density(n=4, d=4000)
    torch.nn.init.zeros_(density.energy[-1].weight)  # f constant: no drift from f
    density.marginals.fill_(0.5)  # log q constant: no drift from q
    sample = density.langevin(torch.full((4, 4000), 0.5, dtype=torch.float64), steps=5, tau=1e-3)
    moves = sample - 0.5
    assert torch.equal(moves, moves[:1].expand_as(moves))
    assert moves.std().item() == pytest.approx(math.sqrt(5 * 1e-3), rel=0.05)


def test_ebm_value_is_in_bits_and_trains_only_its_energy_network() -> None:
    torch.manual_seed(0)
    model = build_model(RunConfig(**SMALL), (1, 8, 8), 10)
    loss = build_complexity_loss(model, RunConfig(**SMALL, loss_method="ebm", lam=1.0, loss_layers=["net.2"]))
    assert isinstance(loss, EnergyEntropyLoss)
    x = torch.rand(40, 1, 8, 8)
    with loss.recording() as recorder:
        model(x)
    value = loss(recorder.records())
    density = loss.densities["net/2"]
    (_, z), = recorder.records()
    assert torch.equal(density.marginals, (z > 0).float().mean(dim=0))
    gates = torch.sigmoid(100.0 * z)
    nats = (-density.energy(gates) - density.log_q(gates)).mean()
    assert value.item() == pytest.approx(nats.item() / math.log(2), rel=1e-6)
    value.backward()
    assert all(p.grad is None for p in density.energy.parameters())  # the task gradient does not reach f
    assert next(model.parameters()).grad is not None
    frozen = [p.clone() for p in loss.parameters()] + [b.clone() for b in loss.buffers()]
    with loss.recording() as recorder:
        model(x * 0.5)
    loss(recorder.records(), update=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen, [*loss.parameters(), *loss.buffers()]))
    with loss.recording() as recorder:
        model(x * 0.5)
    loss(recorder.records())
    assert any(not torch.equal(a, b) for a, b in zip(frozen, loss.parameters()))  # a CD step moved f


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
        _run(RunConfig(**SMALL, loss_method="marginal", lam=1e308, loss_every=1), digits)


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
