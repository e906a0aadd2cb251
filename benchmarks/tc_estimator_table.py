"""The kernel total correlation against closed forms and the plug-in, per bandwidth (docs/estimators.md).

Prints one row per synthetic layer (N = 2000 probes, M = N product samples): the true TC where
a closed form exists, the plug-in C - H, the kde estimate at several bandwidths (sigma^2 as a
fraction of the mean squared probe-to-product distance; 1 is the paper code's width), and the
mean and spread of the default bandwidth over 5 product-sample seeds.

Usage: python benchmarks/tc_estimator_table.py
"""

from __future__ import annotations

import math

import numpy as np
import torch

from complexity_tracker.estimators import DEFAULT_TC_BANDWIDTH, TCMethodError, total_correlation

N = 2000
BANDWIDTHS = (1.0, 0.1, 0.05, 0.02, 0.01)
SEEDS = range(5)


def binary_entropy(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def antipodal_tc(d: int, eps: float) -> float:
    h = 0.0
    for w in range(d + 1):
        p_w = (eps**w * (1 - eps) ** (d - w) + eps ** (d - w) * (1 - eps) ** w) / 2
        h -= math.comb(d, w) * p_w * math.log2(p_w)
    return d - h


def layers(rng: np.random.Generator) -> list[tuple[str, np.ndarray, float]]:
    """(name, states, true TC in bits or nan)."""
    fair4 = rng.random((N, 4)) < 0.5
    unit = rng.random((N, 1)) < 0.3
    antipodal = (rng.random((N, 1)) < 0.5) ^ (rng.random((N, 20)) < 0.1)
    prototypes = rng.random((10, 1000)) < 0.5
    label = rng.integers(0, 10, N)
    return [
        ("8 independent units, p = 0.3", rng.random((N, 8)) < 0.3, 0.0),
        *[(f"{k} copies of 4 fair units", np.tile(fair4, (1, k)), 4.0 * (k - 1)) for k in (1, 2, 3)],
        ("3 copies of one Bernoulli(0.3) unit", np.tile(unit, (1, 3)), 2 * binary_entropy(0.3)),
        ("10 copies of one Bernoulli(0.3) unit", np.tile(unit, (1, 10)), 9 * binary_entropy(0.3)),
        ("antipodal mixture d = 20, eps = 0.1", antipodal, antipodal_tc(20, 0.1)),
        ("d = 1000 independent, p = 0.3", rng.random((N, 1000)) < 0.3, 0.0),
        ("d = 1000 independent, p ~ U(0.02, 0.98)", rng.random((N, 1000)) < rng.uniform(0.02, 0.98, 1000), 0.0),
        ("d = 1000 independent, sparse p = 0.03", rng.random((N, 1000)) < 0.03, 0.0),
        ("d = 1000, 10 prototypes, eps = 0.1", prototypes[label] ^ (rng.random((N, 1000)) < 0.1), math.nan),
        ("d = 1000, 10 prototypes, eps = 0.3", prototypes[label] ^ (rng.random((N, 1000)) < 0.3), math.nan),
        ("d = 1000, 2 prototypes, eps = 0.1", prototypes[label % 2] ^ (rng.random((N, 1000)) < 0.1), math.nan),
    ]


def plugin_or_note(states: np.ndarray) -> str:
    try:
        return f"{total_correlation(states, 'plugin'):.2f}"
    except TCMethodError:
        return "refused"


def main() -> None:
    torch.set_num_threads(1)
    header = ["layer (N = 2000)", "true TC", "plug-in", *[f"kde x{b:g}" for b in BANDWIDTHS],
              f"kde x{DEFAULT_TC_BANDWIDTH:g}, 5 seeds"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, states, true_tc in layers(np.random.default_rng(0)):
        states = states.astype(np.uint8)
        by_bandwidth = [total_correlation(states, "kde", bandwidth=b) for b in BANDWIDTHS]
        seeds = [total_correlation(states, "kde", seed=seed) for seed in SEEDS]
        cells = [name, "large" if math.isnan(true_tc) else f"{true_tc:.2f}", plugin_or_note(states),
                 *[f"{v:.2f}" for v in by_bandwidth], f"{np.mean(seeds):.2f} ± {np.std(seeds):.2f}"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
