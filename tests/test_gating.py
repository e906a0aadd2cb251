"""Gating-state capture: discovery, naming, conv maps, packing, and leaving the model as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from complexity_tracker.gating import (
    NoGatingLayersError,
    NonFiniteActivationError,
    PreactivationRecorder,
    UnsupportedGatingModuleError,
    capture_gating_states,
    find_gating_modules,
)
from complexity_tracker.models import GaussianSampler
from complexity_tracker.nn_utils import DROPOUT_TYPES, UnknownModuleError, find_stochastic_modules


class ResidualBlock(nn.Module):
    """One nn.ReLU instance called twice per forward pass."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.fc2(self.relu(self.fc1(x))))


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(x))


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3), nn.PReLU())


def test_finds_relu_family_modules_by_path():
    assert list(find_gating_modules(mlp())) == ["1", "3", "5"]


def test_selects_layers_by_name_and_glob():
    model = nn.Sequential(ResidualBlock(4), ResidualBlock(4))
    assert list(find_gating_modules(model, "1.relu")) == ["1.relu"]
    assert list(find_gating_modules(model, "*.relu")) == ["0.relu", "1.relu"]
    with pytest.raises(NoGatingLayersError, match="available layers: 0.relu, 1.relu"):
        find_gating_modules(model, ["0.relu", "fc*"])


def test_model_without_gating_modules_names_the_functional_relu_pitfall():
    with pytest.raises(NoGatingLayersError, match="functional.relu"):
        find_gating_modules(FunctionalReLU())


@pytest.mark.parametrize("module", [nn.ReLU6(), nn.Hardtanh(), nn.MaxPool2d(2)])
def test_multi_piece_modules_raise_unless_allowed(module):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), module, nn.ReLU())
    with pytest.raises(UnsupportedGatingModuleError, match="allow_unsupported=True"):
        find_gating_modules(model)
    assert list(find_gating_modules(model, allow_unsupported=True)) == ["2"]


def test_gates_are_preactivation_sign_including_inplace_relu():
    model = ResidualBlock(8)
    x = torch.randn(50, 8)
    states = capture_gating_states(model, x)
    assert list(states) == ["relu:0", "relu:1"]
    with torch.no_grad():
        z0 = model.fc1(x)
        z1 = x + model.fc2(torch.relu(z0))
    np.testing.assert_array_equal(states["relu:0"].unpack(), (z0 > 0).numpy())
    np.testing.assert_array_equal(states["relu:1"].unpack(), (z1 > 0).numpy())


def test_gate_is_strict_a_zero_preactivation_is_closed_unless_open_at_zero():
    # the second ReLU sees exact zeros wherever the first one closed
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.ReLU())
    x = torch.randn(40, 6)
    with torch.no_grad():
        z = model[0](x)
    assert (z < 0).any()
    strict = capture_gating_states(model, x)["2"].unpack()
    np.testing.assert_array_equal(strict, (z > 0).numpy())
    paper = capture_gating_states(model, x, open_at_zero=True)["2"].unpack()
    assert paper.all()  # every input of the second ReLU is >= 0


def test_units_zeroed_by_a_preceding_dropout_are_closed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 200), nn.Dropout(0.5), nn.ReLU())
    x = torch.randn(300, 6)
    with torch.no_grad():
        positive = (model[0](x) > 0).numpy()
    torch.manual_seed(1)
    stochastic = capture_gating_states(model, x, stochastic=True)["2"].unpack().astype(bool)
    assert not (stochastic & ~positive).any()  # only units with z > 0 can be open
    kept = stochastic[positive].mean()
    assert 0.45 < kept < 0.55  # about half of them were dropped, hence closed
    torch.manual_seed(1)
    at_zero = capture_gating_states(model, x, stochastic=True, open_at_zero=True)["2"].unpack().astype(bool)
    assert at_zero[~positive].mean() > 0.45  # the paper's written rule counts dropped negatives as open


def test_conv_feature_map_is_channels_times_positions():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4), nn.ReLU())
    x = torch.rand(20, 1, 8, 8)
    states = capture_gating_states(model, x, batch_size=7)
    assert (states["1"].d, states["1"].is_conv, states["1"].n_samples) == (3 * 8 * 8, True, 20)
    assert (states["4"].d, states["4"].is_conv) == (4, False)
    with torch.no_grad():
        expected = (model[0](x) >= 0).reshape(20, -1)
    np.testing.assert_array_equal(states["1"].unpack(), expected.numpy())


def test_states_are_packed_one_bit_per_unit():
    model = nn.Sequential(nn.Linear(4, 65_536), nn.ReLU())
    states = capture_gating_states(model, torch.randn(2000, 4))["1"]
    assert states.bits.dtype == np.uint8
    assert states.bits.nbytes == 2000 * 65_536 // 8  # about 16 MB


def test_capture_leaves_model_as_found():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2), nn.ReLU())
    model.train()
    model[1].eval()  # a submodule in another mode must keep it
    capture_gating_states(model, torch.randn(10, 4))
    capture_gating_states(model, torch.randn(10, 4), stochastic=True)
    assert model.training and not model[1].training and model[3].training
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


class NoiseLayer(nn.Module):
    """A user's stochastic module that declares nothing: random in train mode only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) if self.training else x


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.to_logvar = nn.Linear(8, 8)
        self.sampler = GaussianSampler()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.sampler(h, self.to_logvar(h))


def stochastic_model() -> nn.Sequential:
    """BatchNorm before the first gate, then a sampler, dropout and a user noise layer before later gates."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),                  # 0-2: deterministic gate after BN
        Encoder(), nn.ReLU(),                                            # 3-4: after a Gaussian sampler
        nn.Linear(8, 8), nn.Dropout(0.3), nn.ReLU(),                     # 5-7: after dropout
        nn.Linear(8, 8), NoiseLayer(), nn.BatchNorm1d(8), nn.ReLU(),     # 8-11: after a user's noise layer
        nn.Linear(8, 3),
    )


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    return (
        {name: value.detach().clone() for name, value in model.state_dict().items()},
        {name: module.training for name, module in model.named_modules()},
    )


def test_stochastic_modules_are_dropout_marked_samplers_and_named_modules():
    model = stochastic_model()
    assert list(find_stochastic_modules(model)) == ["3.sampler", "6"]
    assert list(find_stochastic_modules(model, "9")) == ["3.sampler", "6", "9"]
    assert list(find_stochastic_modules(model, ["*.sampler", "9"])) == ["3.sampler", "6", "9"]
    assert all(isinstance(cls(), nn.Module) for cls in DROPOUT_TYPES)
    with pytest.raises(UnknownModuleError, match="'noise'.*named_modules"):
        find_stochastic_modules(model, ["9", "noise"])


@pytest.mark.parametrize("train_mode", [True, False])
def test_stochastic_capture_keeps_batchnorm_in_eval_and_leaves_the_model_bit_identical(train_mode):
    model = stochastic_model()
    model.train()
    with torch.no_grad():  # running statistics far from any batch's statistics
        for _ in range(5):
            model(3.0 * torch.randn(64, 6) + 2.0)
    model.train(train_mode)
    model[6].train(not train_mode)  # a submodule in the other mode keeps it
    params_before, modes_before = snapshot(model)
    x = torch.randn(50, 6)
    torch.manual_seed(0)
    first = capture_gating_states(model, x, stochastic=True, stochastic_modules="9", batch_size=16)
    second = capture_gating_states(model, x, stochastic=True, stochastic_modules="9", batch_size=16)
    params_after, modes_after = snapshot(model)
    assert modes_after == modes_before
    assert params_after.keys() == params_before.keys()
    for name, value in params_before.items():
        assert torch.equal(params_after[name], value), name  # bitwise, num_batches_tracked included
    # the gate right after BatchNorm is deterministic: running statistics were used, not batch ones
    with torch.no_grad():
        z = nn.functional.batch_norm(model[0](x), model[1].running_mean, model[1].running_var,
                                     model[1].weight, model[1].bias, training=False, eps=model[1].eps)
    np.testing.assert_array_equal(first["2"].unpack(), (z > 0).numpy())
    np.testing.assert_array_equal(second["2"].unpack(), first["2"].unpack())
    # the sampler, the dropout and the named noise layer were all random
    for layer in ("4", "7", "11"):
        assert not np.array_equal(first[layer].unpack(), second[layer].unpack()), layer
    # without stochastic=True the whole model runs in eval mode: repeatable
    a, b = capture_gating_states(model, x), capture_gating_states(model, x)
    assert all(np.array_equal(a[n].unpack(), b[n].unpack()) for n in a)


def test_hooks_removed_when_forward_raises():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(RuntimeError):
        capture_gating_states(model, torch.randn(5, 4))
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_nan_activations_are_reported_with_layer_name():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteActivationError, match="layer '1'"):
        capture_gating_states(model, torch.randn(5, 4))


def test_differentiable_recorder_keeps_the_graph():
    model = mlp()
    with PreactivationRecorder(model, differentiable=True) as recorder:
        model(torch.randn(3, 6))
        (name, z), *_ = recorder.records()
    assert name == "1" and z.requires_grad
    torch.sigmoid(100 * z).sum().backward()
    assert model[0].weight.grad is not None


def test_capture_rejects_empty_input():
    with pytest.raises(ValueError, match="N >= 1"):
        capture_gating_states(mlp(), torch.zeros(0, 6))
