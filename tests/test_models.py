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


def test_mlp_mnist_is_the_papers_shape_on_mnist_inputs() -> None:
    model = build_model(RunConfig(model="mlp_mnist"), (1, 28, 28), 10)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [1024, 256, 128, 64, 10]


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
