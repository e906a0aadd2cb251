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
    np.testing.assert_array_equal(states["relu:0"].unpack(), (z0 >= 0).numpy())
    np.testing.assert_array_equal(states["relu:1"].unpack(), (z1 >= 0).numpy())


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
