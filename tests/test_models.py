"""The model zoo: shapes, one visible gating layer per ReLU call, stochastic models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from complexity_tracker.config import MODELS, ConfigError, RunConfig
from complexity_tracker.gating import PreactivationRecorder, capture_gating_states, find_gating_modules
from complexity_tracker.metrics import measure_complexity
from complexity_tracker.models import build_model

DIGIT_SHAPE = (1, 8, 8)
EXPECTED_GATING_LAYERS = {  # depth = 3 everywhere
    "mlp": 3, "mlp_mnist": 4, "resmlp": 3, "lenet": 4, "resnet20": 19, "resnet32": 31, "resnet44": 43,
    "dropout_mlp": 3, "vae_mlp": 4,
}


def _config(name: str, **changes) -> RunConfig:
    width = 4 if name.startswith(("resnet", "lenet")) else 16
    return RunConfig(model=name, depth=3, width=width, **changes)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_classifies_images_with_one_gating_layer_per_relu_call(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(name), DIGIT_SHAPE, 10)
    x = torch.rand(5, *DIGIT_SHAPE)
    assert len(find_gating_modules(model)) == EXPECTED_GATING_LAYERS[name]
    with PreactivationRecorder(model) as recorder:
        logits = model(x)
    assert logits.shape == (5, 10)
    names = [layer for layer, _ in recorder.records()]
    assert names == list(find_gating_modules(model))  # each ReLU module runs exactly once, in order
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())


@pytest.mark.parametrize("name", ["mlp", "mlp_mnist", "resmlp", "dropout_mlp", "vae_mlp"])
def test_vector_models_take_synthetic_vectors(name: str) -> None:
    model = build_model(_config(name), (16,), 2)
    assert model(torch.rand(3, 16)).shape == (3, 2)


@pytest.mark.parametrize("name", ["lenet", "resnet20"])
def test_conv_models_refuse_vector_inputs(name: str) -> None:
    with pytest.raises(ConfigError, match="needs image inputs"):
        build_model(_config(name), (16,), 2)


def test_depth_and_width_set_the_mlp_shape() -> None:
    model = build_model(RunConfig(model="mlp", depth=5, width=33), DIGIT_SHAPE, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 33)] + [(33, 33)] * 4 + [(33, 10)]


def test_mlp_mnist_is_the_official_784_1024_256_128_64_10_network_without_biases() -> None:
    model = build_model(RunConfig(model="mlp_mnist"), (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 1024), (1024, 256), (256, 128), (128, 64),
                                                                 (64, 10)]
    assert all(m.bias is None for m in linears)
    assert sum(p.numel() for p in model.parameters()) == 784 * 1024 + 1024 * 256 + 256 * 128 + 128 * 64 + 64 * 10
    assert list(model.state_dict()) == [f"net.{i}.weight" for i in (1, 3, 5, 7, 9)]


def test_mlp_mnist_has_1472_gating_units_in_four_layers() -> None:
    model = build_model(RunConfig(model="mlp_mnist"), (1, 28, 28), 10)
    assert list(find_gating_modules(model)) == ["net.2", "net.4", "net.6", "net.8"]
    states = capture_gating_states(model, torch.rand(3, 1, 28, 28))
    assert [layer.d for layer in states.values()] == [1024, 256, 128, 64]
    assert sum(layer.d for layer in states.values()) == 1472


def test_mlp_mnist_weights_are_kaiming_normal() -> None:
    torch.manual_seed(0)
    model = build_model(RunConfig(model="mlp_mnist"), (1, 28, 28), 10)
    first = model.net[1].weight.detach()
    # Kaiming normal (fan_in, ReLU gain): N(0, 2 / 784); PyTorch's default would be U(+-1/28), std 0.0206.
    assert first.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.01)
    assert first.abs().max().item() > 3 * (2 / 784) ** 0.5  # normal tails, beyond any uniform of that std
    assert abs(first.mean().item()) < 1e-3


def test_mlp_mnist_maps_unit_range_inputs_to_minus_one_one_inside_the_model() -> None:
    torch.manual_seed(0)
    model = build_model(RunConfig(model="mlp_mnist"), (1, 28, 28), 10)
    x = torch.rand(16, 1, 28, 28)
    assert torch.equal(model(x), model.net(2 * x - 1))
    assert not torch.allclose(model(x), model.net(x))


def test_resmlp_is_the_official_block_structure_without_biases() -> None:
    torch.manual_seed(0)
    model = build_model(RunConfig(model="resmlp", depth=9, width=64), DIGIT_SHAPE, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 64)] * 9 + [(64, 10)]  # no input layer
    assert all(m.bias is None for m in linears)
    assert all(m.weight.abs().max().item() <= 1 / 8 for m in linears)  # PyTorch's default U(+-1/sqrt(64)), as official
    assert list(find_gating_modules(model)) == [f"blocks.{k}.relu" for k in range(9)]
    x = torch.rand(8, *DIGIT_SHAPE)
    stream = (2 * x - 1).flatten(1)  # [0, 1] mapped to [-1, 1] inside the model, as for mlp_mnist
    for block in model.blocks:
        stream = torch.relu(stream + stream @ block.linear.weight.T)
    assert torch.allclose(model(x), stream @ model.head.weight.T, atol=1e-5)


def test_resmlp_of_another_width_gets_a_bias_free_input_layer() -> None:
    model = build_model(RunConfig(model="resmlp", depth=2, width=32), (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 32), (32, 32), (32, 10)]
    assert all(m.bias is None for m in linears)


def test_rgb_inputs_are_normalised_with_the_official_cifar_statistics() -> None:
    model = build_model(RunConfig(model="resmlp", depth=1, width=3 * 4 * 4), (3, 4, 4), 10)
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    assert torch.allclose(model.normalize(x), (x - mean) / std, atol=1e-6)


def test_resnet_width_sets_the_stage_channels() -> None:
    model = build_model(RunConfig(model="resnet20", width=6), (3, 32, 32), 10)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(set(convs)) == [6, 12, 24]
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_dropout_mlp_gates_are_random_in_train_mode_only() -> None:
    torch.manual_seed(0)
    model = build_model(_config("dropout_mlp", dropout=0.5), DIGIT_SHAPE, 10)
    x = torch.rand(50, *DIGIT_SHAPE)
    first, second = (capture_gating_states(model, x, stochastic=True) for _ in range(2))
    assert any((first[k].bits != second[k].bits).any() for k in first)
    first, second = (capture_gating_states(model, x) for _ in range(2))
    assert all((first[k].bits == second[k].bits).all() for k in first)


def test_vae_samples_in_train_mode_so_information_is_below_entropy() -> None:
    torch.manual_seed(0)
    model = build_model(_config("vae_mlp"), DIGIT_SHAPE, 10)
    x, y = torch.rand(60, *DIGIT_SHAPE), torch.arange(60) % 10
    model.train()
    model(x)
    assert model.auxiliary_loss().item() > 0  # the KL term of the sampling layer
    model.eval()
    model(x)
    assert model.auxiliary_loss() is None
    report = measure_complexity(model, x, y, stochastic=True, repeats=4)
    encoder, after_sampling = report.layers[0], report.layers[1]
    assert encoder.I_XS == pytest.approx(encoder.H)  # deterministic given X
    assert after_sampling.I_XS < after_sampling.H - 0.5
