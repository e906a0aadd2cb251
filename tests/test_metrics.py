"""measure_complexity: report shape, identities and the paper's properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from complexity_tracker import class_balanced_probe, measure_complexity
from complexity_tracker.estimators import plugin_entropy
from complexity_tracker.gating import NoGatingLayersError, PackedStates, capture_gating_states
from complexity_tracker.metrics import InvalidProbeError


def narrow_mlp(seed: int = 0, widths: tuple[int, ...] = (6, 5, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    previous = 8
    for width in widths:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        previous = width
    return nn.Sequential(*layers, nn.Linear(previous, 3))


def probe(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=generator), torch.arange(n) % 3


def test_report_has_a_record_per_layer_and_the_network():
    x, y = probe()
    report = measure_complexity(narrow_mlp(), x, y)
    assert [r.name for r in report.records] == ["1", "3", "5", "network"]
    assert report.network.d == 6 + 5 + 4 and report.network.N == 600
    flat = report.to_dict()
    assert set(flat) == {f"{m}/{n}" for m in ("H", "I_XS", "I_XSY", "C", "TC") for n in ("1", "3", "5", "network")}
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())
    assert report["1"].estimator == "kde" and report["1"].estimator_params == {"kernel_width": 0.01}
    assert report.activation_rates["3"].shape == (5,)


@pytest.mark.parametrize("estimator", ["kde", "plugin"])
def test_deterministic_network_identities(estimator):
    x, y = probe()
    report = measure_complexity(narrow_mlp(), x, y, estimator=estimator)
    for r in report.records:
        assert r.I_XS == r.H
        assert r.H + r.TC == pytest.approx(r.C, abs=1e-12)
        assert 0 <= r.H <= math.log2(r.N) + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_i_xsy_is_non_negative_for_deterministic_networks(seed):
    x, y = probe(seed=seed)
    for estimator in ("plugin", "kde"):
        report = measure_complexity(narrow_mlp(seed), x, y, estimator=estimator)
        assert all(r.I_XSY >= -1e-9 for r in report.records), estimator


@pytest.mark.parametrize("seed", range(5))
def test_plugin_joint_entropy_of_layers_1_to_l_never_decreases(seed):
    x, _ = probe(seed=seed)
    states = list(capture_gating_states(narrow_mlp(seed, widths=(5, 4, 4, 3)), x).values())
    joint = [plugin_entropy(PackedStates.concatenate(states[: l + 1])) for l in range(len(states))]
    assert all(b >= a - 1e-12 for a, b in zip(joint, joint[1:])), joint


def test_dropout_network_in_stochastic_mode_has_i_xs_below_h():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.3), nn.ReLU(), nn.Linear(32, 3))
    x, y = probe(400)
    report = measure_complexity(model, x, y, stochastic=True, repeats=4)
    assert report.stochastic
    record = report["2"]
    assert record.N == 1600
    assert 0 < record.I_XS < record.H
    deterministic = measure_complexity(model, x, y)
    assert deterministic["2"].I_XS == deterministic["2"].H


def test_conv_layers_use_the_conv_kernel_width_and_network_inherits_it():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4), nn.ReLU())
    report = measure_complexity(model, torch.rand(40, 1, 8, 8), torch.arange(40) % 2)
    assert report["1"].estimator_params["kernel_width"] == 0.04
    assert report["4"].estimator_params["kernel_width"] == 0.01
    assert report.network.estimator_params["kernel_width"] == 0.04


def test_layer_selection_and_explicit_lam():
    x, y = probe()
    report = measure_complexity(narrow_mlp(), x, y, layers=["3"], lam=0.05, include_network=False)
    assert [r.name for r in report.records] == ["3"]
    assert report["3"].estimator_params["kernel_width"] == 0.05


def test_class_balanced_probe_is_seeded_and_balanced():
    labels = np.repeat(np.arange(4), [300, 250, 210, 50])
    first = class_balanced_probe(labels, per_class=200, seed=3)
    np.testing.assert_array_equal(first, class_balanced_probe(labels, per_class=200, seed=3))
    assert not np.array_equal(first, class_balanced_probe(labels, per_class=200, seed=4))
    assert np.bincount(labels[first]).tolist() == [200, 200, 200, 50]


@pytest.mark.parametrize(
    "inputs, labels, error, message",
    [
        (torch.zeros(0, 8), torch.zeros(0), InvalidProbeError, "at least 2 inputs"),
        (torch.randn(10, 8), torch.zeros(10), InvalidProbeError, "single class"),
        (torch.randn(10, 8), torch.arange(9) % 2, InvalidProbeError, "10 inputs but labels"),
        (torch.full((10, 8), float("nan")), torch.arange(10) % 2, InvalidProbeError, "NaN"),
    ],
)
def test_bad_probes_are_rejected(inputs, labels, error, message):
    with pytest.raises(error, match=message):
        measure_complexity(narrow_mlp(), inputs, labels)


def test_model_without_gates_and_bad_options_are_rejected():
    x, y = probe()
    with pytest.raises(NoGatingLayersError):
        measure_complexity(nn.Linear(8, 3), x, y)
    with pytest.raises(ValueError, match="kernel_width must be"):
        measure_complexity(narrow_mlp(), x, y, lam=-1.0)
    with pytest.raises(ValueError, match="repeats >= 2"):
        measure_complexity(narrow_mlp(), x, y, stochastic=True, repeats=1)
