"""measure_complexity: report shape, identities, stochastic mode, TC wiring, and the paper's properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from complexity_tracker import class_balanced_probe, measure_complexity
from complexity_tracker.estimators import DEFAULT_TC_BANDWIDTH, TCMethodError, plugin_entropy, total_correlation
from complexity_tracker.gating import NoGatingLayersError, PackedStates, capture_gating_states
from complexity_tracker.metrics import (
    CAP_MARGIN_BITS,
    METRIC_NAMES,
    ConditionalEntropyCapWarning,
    InvalidProbeError,
    MeasurementSettingError,
    ProbeSizeError,
)
from complexity_tracker.models import GaussianSampler
from complexity_tracker.nn_utils import UnknownModuleError


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


def dropout_mlp(p: float = 0.3, width: int = 32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, width), nn.Dropout(p), nn.ReLU(), nn.Linear(width, 3))


def test_report_has_a_record_per_layer_and_the_network():
    x, y = probe()
    report = measure_complexity(narrow_mlp(), x, y)
    assert [r.name for r in report.records] == ["1", "3", "5", "network"]
    assert report.network.d == 6 + 5 + 4 and report.network.N == 600
    flat = report.to_dict()
    assert METRIC_NAMES == ("H", "I_XS", "I_XSY", "C", "TC", "additivity_gap")
    assert set(flat) == {f"{m}/{n}" for m in METRIC_NAMES for n in ("1", "3", "5", "network")}
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())
    assert report["1"].estimator == "kde"
    assert report["1"].estimator_params == {
        "kernel_width": 0.01, "tc_method": "kde", "tc_bandwidth": DEFAULT_TC_BANDWIDTH, "gate": "z > 0"
    }
    assert not any(r.conditional_capped for r in report.records)
    assert report.activation_rates["3"].shape == (5,)


@pytest.mark.parametrize("estimator", ["kde", "plugin"])
def test_deterministic_network_identities(estimator):
    x, y = probe()
    report = measure_complexity(narrow_mlp(), x, y, estimator=estimator)
    for r in report.records:
        assert r.I_XS == r.H
        assert r.additivity_gap == pytest.approx(r.H + r.TC - r.C, abs=1e-12)
        assert 0 <= r.H <= math.log2(r.N) + 1e-12


def test_tc_is_the_chosen_total_correlation_estimator_not_c_minus_h():
    x, y = probe()
    model = narrow_mlp()
    states = capture_gating_states(model, x)["3"]
    kde = measure_complexity(model, x, y, layers="3", include_network=False, seed=5)["3"]
    assert kde.TC == total_correlation(states, "kde", seed=5)
    assert kde.TC != pytest.approx(kde.C - kde.H, abs=0.05)
    assert abs(kde.additivity_gap) > 0.05  # no longer an identity: a diagnostic of the estimators' scales
    plugin = measure_complexity(model, x, y, layers="3", include_network=False, tc_method="plugin")["3"]
    assert plugin.estimator_params["tc_method"] == "plugin" and "tc_bandwidth" not in plugin.estimator_params
    assert plugin.TC == total_correlation(states, "plugin")
    exact = measure_complexity(model, x, y, layers="3", estimator="plugin", tc_method="plugin")["3"]
    assert exact.additivity_gap == pytest.approx(0.0, abs=1e-12)  # plug-in H and TC are one empirical law


def test_plugin_tc_on_a_layer_whose_patterns_never_repeat_names_kde():
    x, y = probe(200)
    wide = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 3))
    with pytest.raises(TCMethodError, match="method='kde'"):
        measure_complexity(wide, x, y, tc_method="plugin")
    with pytest.raises(TCMethodError, match="unknown"):
        measure_complexity(wide, x, y, tc_method="exact")


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


@pytest.mark.filterwarnings("ignore::complexity_tracker.metrics.ConditionalEntropyCapWarning")
def test_dropout_network_in_stochastic_mode_has_i_xs_below_h():
    model = dropout_mlp()
    x, y = probe(400)
    report = measure_complexity(model, x, y, stochastic=True, repeats=4)
    assert report.stochastic
    record = report["2"]
    assert record.N == 1600
    assert 0 < record.I_XS < record.H
    deterministic = measure_complexity(model, x, y)
    assert deterministic["2"].I_XS == deterministic["2"].H


@pytest.mark.filterwarnings("ignore::complexity_tracker.metrics.ConditionalEntropyCapWarning")
def test_stochastic_measurement_is_seeded_and_leaves_the_global_rng_alone():
    model = dropout_mlp()
    x, y = probe(200)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = measure_complexity(model, x, y, stochastic=True, repeats=3, seed=1).to_dict()
    assert torch.equal(torch.rand(3), expected_next)
    assert measure_complexity(model, x, y, stochastic=True, repeats=3, seed=1).to_dict() == first
    assert measure_complexity(model, x, y, stochastic=True, repeats=3, seed=2).to_dict() != first


def test_h_given_x_at_its_log2_k_ceiling_is_flagged_with_a_warning():
    # heavy dropout on a wide layer: every pass of an input is a distinct pattern, far apart
    x, y = probe(100)
    with pytest.warns(ConditionalEntropyCapWarning, match=r"log2 K = 2.00 bits \(K = repeats = 4\)"):
        capped = measure_complexity(dropout_mlp(p=0.5, width=256), x, y, stochastic=True, repeats=4)
    record = capped["2"]
    assert record.conditional_capped
    assert record.H - record.I_XS >= 2.0 - CAP_MARGIN_BITS
    # rare dropout on a narrow layer: most passes repeat a pattern, H(S|X) stays far below log2 K
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditionalEntropyCapWarning)
        mild = measure_complexity(dropout_mlp(p=0.02, width=4), x, y, stochastic=True, repeats=16)
    assert not mild["2"].conditional_capped
    assert 0 < mild["2"].H - mild["2"].I_XS < 4.0 - CAP_MARGIN_BITS


class Sampled(nn.Module):
    """The zoo's GaussianSampler (unit variance) before a gate."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 6)
        self.sampler = GaussianSampler()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.sampler(self.fc(x), torch.zeros(x.shape[0], 6)))


@pytest.mark.filterwarnings("ignore::complexity_tracker.metrics.ConditionalEntropyCapWarning")
def test_stochastic_mode_uses_marked_samplers_and_refuses_deterministic_models():
    x, y = probe(200)
    model = Sampled().eval()
    report = measure_complexity(model, x, y, stochastic=True, repeats=3)
    assert report["relu"].I_XS < report["relu"].H
    with pytest.raises(MeasurementSettingError, match="stochastic_modules="):
        measure_complexity(narrow_mlp(), x, y, stochastic=True)
    with pytest.raises(UnknownModuleError, match="'nowhere'"):
        measure_complexity(model, x, y, stochastic=True, stochastic_modules="nowhere")


def test_conv_layers_use_the_conv_kernel_width_and_network_inherits_it():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4), nn.ReLU())
    report = measure_complexity(model, torch.rand(40, 1, 8, 8), torch.arange(40) % 2)
    assert report["1"].estimator_params["kernel_width"] == 0.04
    assert report["4"].estimator_params["kernel_width"] == 0.01
    assert report.network.estimator_params["kernel_width"] == 0.04


def test_layer_selection_and_explicit_kernel_width():
    x, y = probe()
    report = measure_complexity(narrow_mlp(), x, y, layers=["3"], kernel_width=0.05, include_network=False)
    assert [r.name for r in report.records] == ["3"]
    assert report["3"].estimator_params["kernel_width"] == 0.05


def test_open_at_zero_is_recorded():
    x, y = probe()
    report = measure_complexity(narrow_mlp(), x, y, open_at_zero=True)
    assert report.network.estimator_params["gate"] == "z >= 0"


def test_class_balanced_probe_is_seeded_and_balanced():
    labels = np.repeat(np.arange(4), [300, 250, 210, 200])
    first = class_balanced_probe(labels, per_class=200, seed=3)
    np.testing.assert_array_equal(first, class_balanced_probe(labels, per_class=200, seed=3))
    assert not np.array_equal(first, class_balanced_probe(labels, per_class=200, seed=4))
    assert np.bincount(labels[first]).tolist() == [200, 200, 200, 200]


def test_class_balanced_probe_refuses_more_per_class_than_the_smallest_class_holds():
    labels = np.repeat(np.arange(4), 25)
    with pytest.raises(ProbeSizeError, match=r"per_class=1000 exceeds the 25 samples of the smallest class.*per_class <= 25"):
        class_balanced_probe(labels, per_class=1000)
    with pytest.raises(ProbeSizeError, match=">= 1"):
        class_balanced_probe(labels, per_class=0)
    assert len(class_balanced_probe(labels, per_class=25)) == 100


@pytest.mark.parametrize(
    "inputs, labels, error, message",
    [
        (torch.zeros(0, 8), torch.zeros(0), InvalidProbeError, "at least 2 inputs"),
        (torch.randn(10, 8), torch.zeros(10), InvalidProbeError, "single class"),
        (torch.randn(10, 8), torch.arange(9) % 2, InvalidProbeError, "10 inputs but labels"),
        (torch.full((10, 8), float("nan")), torch.arange(10) % 2, InvalidProbeError, "NaN"),
        # a probe smaller than twice the class count: some class has a single input
        (torch.randn(10, 8), torch.arange(10), InvalidProbeError, r"too small for its 10 classes.*per_class=2"),
        (torch.randn(7, 8), torch.tensor([0, 0, 1, 1, 2, 2, 3]), InvalidProbeError, r"classes \[3\] have 1"),
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
        measure_complexity(narrow_mlp(), x, y, kernel_width=-1.0)
    with pytest.raises(MeasurementSettingError, match="estimator='kde' only"):
        measure_complexity(narrow_mlp(), x, y, estimator="plugin", kernel_width=0.02)
    for repeats in (1, 0):
        with pytest.raises(MeasurementSettingError, match=r"repeats >= 2 \(default 10\)"):
            measure_complexity(dropout_mlp(), x, y, stochastic=True, repeats=repeats)


@pytest.mark.parametrize("old", ["lam", "kde_lam"])
def test_the_old_kernel_width_keyword_names_the_new_one(old):
    x, y = probe()
    with pytest.raises(MeasurementSettingError, match="pass kernel_width= instead"):
        measure_complexity(narrow_mlp(), x, y, **{old: 0.05})
    with pytest.raises(TypeError, match="unexpected keyword argument 'kernel'"):
        measure_complexity(narrow_mlp(), x, y, kernel=0.05)
