"""Estimators against the closed-form cases of paper-notes section 4 and the row-loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from complexity_tracker.estimators import (
    EstimatorSettingError,
    InvalidStatesError,
    KDEEstimator,
    PluginEstimator,
    TCMethodError,
    _product_samples,
    activation_rates,
    as_packed,
    kde_entropy,
    kde_entropy_reference,
    make_estimator,
    marginal_entropy_sum,
    plugin_entropy,
    total_correlation,
)


def binary_entropy(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def far_apart_prototypes(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Random 0/1 rows: pairwise Hamming distance ~ d/2, far beyond the kernel width kernel_width*d."""
    return (np.random.default_rng(seed).random((n, d)) < 0.5).astype(np.uint8)


@pytest.mark.parametrize("estimate", [lambda s: kde_entropy(s, 0.01), lambda s: plugin_entropy(s)])
def test_identical_samples_have_zero_entropy(estimate):
    states = np.tile(far_apart_prototypes(1, 300), (2000, 1))
    assert estimate(states) == pytest.approx(0.0, abs=1e-12)


def test_far_apart_distinct_samples_reach_log2_n():
    states = far_apart_prototypes(2000, 3072)
    assert kde_entropy(states, 0.01) == pytest.approx(math.log2(2000), abs=1e-6)
    assert math.log2(2000) == pytest.approx(10.966, abs=1e-3)
    assert plugin_entropy(states) == pytest.approx(math.log2(2000), abs=1e-12)


@pytest.mark.parametrize("kernel_width", [0.01, 0.04])
def test_equidistant_samples_match_closed_form(kernel_width):
    n, block, d = 100, 3, 300  # row i is ones on its own block: every pair at Hamming distance 2*block
    states = np.zeros((n, d), dtype=np.uint8)
    for i in range(n):
        states[i, i * block : (i + 1) * block] = 1
    delta = 2 * block / d
    expected = math.log2(n) - math.log2(1 + (n - 1) * math.exp(-delta / (2 * kernel_width)))
    assert kde_entropy(states, kernel_width) == pytest.approx(expected, rel=1e-10)


def test_equal_clusters_give_log2_k():
    prototypes = far_apart_prototypes(10, 1024, seed=1)
    states = np.repeat(prototypes, 200, axis=0)
    assert kde_entropy(states, 0.01) == pytest.approx(math.log2(10), abs=1e-6)
    assert plugin_entropy(states) == pytest.approx(math.log2(10), abs=1e-12)


def test_independent_bernoulli_units_plugin_entropy_is_sum_of_marginals():
    rng = np.random.default_rng(2)
    p = np.array([0.5, 0.1, 0.3, 0.7, 0.9, 0.2, 0.4, 0.6])
    states = (rng.random((200_000, len(p))) < p).astype(np.uint8)
    h = plugin_entropy(states, miller_madow=True)
    assert h == pytest.approx(sum(binary_entropy(x) for x in p), abs=0.01)
    assert marginal_entropy_sum(states) - h == pytest.approx(0.0, abs=0.01)  # TC = 0


def test_copies_of_one_unit_have_entropy_h_and_total_correlation_d_minus_1_h():
    d = 16
    unit = (np.random.default_rng(3).random(5000) < 0.3).astype(np.uint8)
    states = np.repeat(unit[:, None], d, axis=1)
    h_p = binary_entropy(unit.mean())
    h = plugin_entropy(states)
    assert h == pytest.approx(h_p, rel=1e-12)
    assert marginal_entropy_sum(states) - h == pytest.approx((d - 1) * h_p, rel=1e-12)


def antipodal_mixture_closed_form(d: int, eps: float) -> tuple[float, float]:
    h = 0.0
    for w in range(d + 1):
        p_w = (eps**w * (1 - eps) ** (d - w) + eps ** (d - w) * (1 - eps) ** w) / 2
        h -= math.comb(d, w) * p_w * math.log2(p_w)
    return h, d - h


def test_antipodal_mixture_closed_form_values():
    h, tc = antipodal_mixture_closed_form(20, 0.1)
    assert (h, tc) == pytest.approx((10.3799, 9.6201), abs=1e-4)


# d = 20 has ~10^5 likely patterns, so even 10^6 samples leave a small downward plug-in bias.
@pytest.mark.parametrize("d, tolerance", [(12, 0.005), (20, 0.06)])
def test_antipodal_mixture_plugin_matches_closed_form(d, tolerance):
    eps, n = 0.1, 1_000_000
    rng = np.random.default_rng(4)
    prototype = rng.random(n) < 0.5
    flips = rng.random((n, d)) < eps
    states = np.logical_xor(prototype[:, None], flips)
    h_true, tc_true = antipodal_mixture_closed_form(d, eps)
    h = plugin_entropy(states, miller_madow=True)
    assert h == pytest.approx(h_true, abs=tolerance)
    assert marginal_entropy_sum(states) - h == pytest.approx(tc_true, abs=tolerance)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_vectorised_kde_equals_row_loop_reference(p):
    states = (np.random.default_rng(5).random((300, 500)) < p).astype(np.uint8)
    for kernel_width in (0.01, 0.04, 0.3):
        fast, slow = kde_entropy(states, kernel_width), kde_entropy_reference(states, kernel_width)
        assert abs(fast - slow) <= 1e-9 * max(abs(slow), 1e-12)


def test_kde_is_chunk_invariant_and_accepts_torch_dtypes():
    states = (np.random.default_rng(6).random((257, 70)) < 0.5).astype(np.uint8)
    reference = kde_entropy(states, 0.3)
    assert kde_entropy(states, 0.3, row_chunk=7) == pytest.approx(reference, rel=1e-12)
    for tensor in (torch.from_numpy(states).bool(), torch.from_numpy(states), torch.from_numpy(states).float()):
        assert kde_entropy(tensor, 0.3) == pytest.approx(reference, rel=1e-12)


def test_kde_stays_within_zero_and_log2_n():
    rng = np.random.default_rng(7)
    for p in (0.01, 0.5):
        states = (rng.random((500, 64)) < p).astype(np.uint8)
        assert 0.0 <= kde_entropy(states, 0.01) <= math.log2(500) + 1e-12


def test_estimators_report_their_parameters():
    assert make_estimator("kde", kernel_width=0.02).params() == {"kernel_width": 0.02}
    assert make_estimator("plugin", miller_madow=True).params() == {"miller_madow": True}
    conv = as_packed(np.ones((3, 4)))
    assert KDEEstimator().kernel_width_for(conv) == 0.01
    assert KDEEstimator().kernel_width_for(type(conv)(conv.bits, conv.d, True)) == 0.04
    assert PluginEstimator().name == "plugin"


@pytest.mark.parametrize(
    "states, message",
    [
        (np.array([[0, 1, 2]]), "binary"),
        (np.array([[0.5, 1.0]]), "binary"),
        (np.zeros(5), "2-D"),
        (np.zeros((0, 4)), "N, d >= 1"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_non_binary_or_misshaped_states_are_rejected(states, message):
    with pytest.raises(InvalidStatesError, match=message):
        kde_entropy(states)


@pytest.mark.parametrize("kernel_width", [0, -0.01, float("nan"), float("inf")])
def test_non_positive_kernel_width_is_rejected(kernel_width):
    with pytest.raises(EstimatorSettingError, match="kernel_width must be"):
        kde_entropy(np.ones((3, 3)), kernel_width)


@pytest.mark.parametrize("old", ["lam", "kde_lam"])
def test_old_kernel_width_spelling_names_the_new_one(old):
    with pytest.raises(EstimatorSettingError, match="renamed: pass kernel_width="):
        make_estimator("kde", **{old: 0.02})


def test_unknown_estimator_is_rejected_with_choices():
    with pytest.raises(EstimatorSettingError, match="choose one of"):
        make_estimator("shannon")


# ---- total correlation TC = KL(p(s) || prod_i p(s_i)) ----------------------------------------
# Kernel tolerances below hold for the seeded N = M = 2000 probes used here; docs/estimators.md
# gives the seed-to-seed spread they allow for.


def all_patterns_equally_often(m: int, n: int, seed: int) -> np.ndarray:
    """Every one of the 2^m patterns exactly n / 2^m times, shuffled: m independent fair units."""
    patterns = (np.arange(2**m)[:, None] >> np.arange(m)) & 1
    return np.random.default_rng(seed).permutation(np.repeat(patterns, n // 2**m, axis=0)).astype(np.uint8)


def test_independent_units_have_zero_total_correlation():
    rng = np.random.default_rng(10)
    states = (rng.random((2000, 6)) < np.array([0.5, 0.1, 0.3, 0.7, 0.9, 0.4])).astype(np.uint8)
    assert total_correlation(states, "plugin") == pytest.approx(0.0, abs=0.05)  # bias ~ (2^d - d - 1) / (2 N ln 2) = 0.02
    assert total_correlation(states, "kde") == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("m", [2, 3])
def test_k_copies_of_m_fair_units_have_k_minus_1_times_m_bits(m):
    base = all_patterns_equally_often(m, 2000, seed=m)
    kernel = []
    for k in (1, 2, 3, 4):
        states = np.tile(base, (1, k))
        assert total_correlation(states, "plugin") == pytest.approx((k - 1) * m, abs=1e-9)
        kernel.append(total_correlation(states, "kde"))
        assert kernel[-1] == pytest.approx((k - 1) * m, abs=0.1 + 0.1 * (k - 1) * m)
    assert all(a < b for a, b in zip(kernel, kernel[1:])), kernel


@pytest.mark.parametrize("d", [2, 3, 16])
def test_copies_of_one_bernoulli_unit_have_d_minus_1_times_h(d):
    unit = (np.random.default_rng(11).random(2000) < 0.3).astype(np.uint8)
    states = np.repeat(unit[:, None], d, axis=1)
    expected = (d - 1) * binary_entropy(unit.mean())
    assert total_correlation(states, "plugin") == pytest.approx(expected, rel=1e-12)
    if d <= 3:  # beyond, the all-ones pattern has product probability 0.3^d << 1 / M
        assert total_correlation(states, "kde") == pytest.approx(expected, abs=0.1)


def markov_chain(n: int, d: int, flip: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    states = np.zeros((n, d), dtype=np.uint8)
    states[:, 0] = rng.random(n) < 0.5
    for unit in range(1, d):
        states[:, unit] = states[:, unit - 1] ^ (rng.random(n) < flip)
    return states


def noisy_prototypes(n: int, d: int, k: int, eps: float, seed: int) -> np.ndarray:
    """Each sample is one of k random prototypes with every bit flipped with probability eps."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((k, d)) < 0.5
    return (prototypes[rng.integers(0, k, n)] ^ (rng.random((n, d)) < eps)).astype(np.uint8)


@pytest.mark.parametrize(
    "states", [markov_chain(2000, 6, 0.2, seed=12), noisy_prototypes(2000, 8, 3, 0.15, seed=13)], ids=["chain", "mixture"]
)
def test_plugin_and_kernel_agree_on_small_layers(states):
    plugin = total_correlation(states, "plugin")
    assert plugin > 0.5
    assert total_correlation(states, "kde") == pytest.approx(plugin, abs=0.25)


@pytest.mark.parametrize("d, tolerance", [(12, 0.01), (20, 0.1)])
def test_antipodal_mixture_plugin_total_correlation_matches_closed_form(d, tolerance):
    eps, n = 0.1, 1_000_000
    rng = np.random.default_rng(4)
    states = np.logical_xor((rng.random(n) < 0.5)[:, None], rng.random((n, d)) < eps)
    assert total_correlation(states, "plugin") == pytest.approx(antipodal_mixture_closed_form(d, eps)[1], abs=tolerance)


def test_wide_independent_layers_read_near_zero_and_wide_structured_layers_read_large():
    rng = np.random.default_rng(14)
    independent = (rng.random((1000, 1000)) < rng.uniform(0.05, 0.95, 1000)).astype(np.uint8)
    assert abs(total_correlation(independent, "kde")) < 0.1
    assert total_correlation(noisy_prototypes(1000, 1000, 10, 0.1, seed=15), "kde") > 10.0


def kde_total_correlation_reference(states: np.ndarray, product: np.ndarray, bandwidth: float) -> float:
    """The leave-one-out density ratio written out densely, to check the chunked version."""
    s, f = states.astype(np.float64), product.astype(np.float64)
    data_distances = ((s[:, None, :] - s[None, :, :]) ** 2).sum(axis=2)
    product_distances = ((s[:, None, :] - f[None, :, :]) ** 2).sum(axis=2)
    variance = bandwidth * product_distances.mean()
    kernel = np.exp(-data_distances / (2 * variance))
    np.fill_diagonal(kernel, 0.0)
    p_hat = kernel.sum(axis=1) / (len(s) - 1)
    q_hat = np.exp(-product_distances / (2 * variance)).mean(axis=1)
    return float(np.mean(np.log2(p_hat / q_hat)))


def test_kernel_total_correlation_equals_dense_reference_for_any_chunking():
    states = noisy_prototypes(150, 40, 4, 0.2, seed=16)
    product = _product_samples(activation_rates(states), 120, seed=3).unpack()
    expected = kde_total_correlation_reference(states, product, 0.05)
    for row_chunk in (1024, 7):
        value = total_correlation(states, "kde", bandwidth=0.05, n_product_samples=120, seed=3, row_chunk=row_chunk)
        assert value == pytest.approx(expected, rel=1e-9)
    assert total_correlation(torch.from_numpy(states).bool(), "kde", bandwidth=0.05, n_product_samples=120, seed=3) == (
        pytest.approx(expected, rel=1e-9)
    )


def test_kernel_total_correlation_is_deterministic_given_the_seed():
    states = noisy_prototypes(300, 64, 3, 0.2, seed=17)
    assert total_correlation(states, "kde", seed=5) == total_correlation(states, "kde", seed=5)
    assert total_correlation(states, "kde", seed=5) != total_correlation(states, "kde", seed=6)


def test_constant_units_have_zero_total_correlation():
    states = np.tile(np.array([[1, 0, 1, 1]], dtype=np.uint8), (50, 1))
    assert total_correlation(states, "kde") == 0.0
    assert total_correlation(states, "plugin") == 0.0


def test_unknown_total_correlation_method_is_rejected_with_choices():
    with pytest.raises(TCMethodError, match=r"unknown total-correlation method 'shannon'; choose one of \['plugin', 'kde'\]"):
        total_correlation(np.ones((3, 3)), "shannon")


def test_plugin_total_correlation_refuses_patterns_that_never_repeat_and_suggests_kde():
    states = far_apart_prototypes(200, 300)
    with pytest.raises(TCMethodError, match=r"all N=200 gating patterns \(d=300\) are distinct.*use method='kde'"):
        total_correlation(states, "plugin")
    assert isinstance(TCMethodError("x"), EstimatorSettingError)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bandwidth": 0.0}, "bandwidth must be a finite number > 0"),
        ({"bandwidth": float("nan")}, "bandwidth must be a finite number > 0"),
        ({"n_product_samples": 0}, "n_product_samples must be an integer >= 1"),
    ],
)
def test_bad_kernel_total_correlation_settings_are_rejected(kwargs, message):
    with pytest.raises(EstimatorSettingError, match=message):
        total_correlation(np.eye(4, dtype=np.uint8), "kde", **kwargs)


def test_total_correlation_needs_two_samples():
    with pytest.raises(InvalidStatesError, match="at least 2 samples"):
        total_correlation(np.ones((1, 5)), "kde")
