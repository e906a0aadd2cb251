"""The paper's MNIST MLP at initialisation: H(S) and I(S;Y) beside the paper's 10.85 and 3.28 bits.

For each seed, builds ``mlp_mnist`` (784-1024-256-128-64-10, no biases, Kaiming-normal weights,
inputs mapped to [-1, 1] inside the model) with that seed, draws a 200-per-class probe
(N = 2,000) of mnist5k's training split with that seed, and measures the network record
(all 1,472 gating units) with ``measure_complexity``'s defaults (the paper's kernel estimate).
For this deterministic network I(X;S;Y) = I(S;Y).  Prints one line per seed, then the mean,
sample standard deviation and range over the seeds beside the paper's values (its notebook,
epoch 0; shared paper notes, section 3).

Usage: .venv/bin/python scripts/init_complexity.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.metrics import class_balanced_probe, measure_complexity
from complexity_tracker.models import build_model
from complexity_tracker.training import seed_everything

PAPER_BITS = {"H": 10.85, "I_XSY": 3.28}
PROBE_PER_CLASS = 200


def measure_at_initialisation(seed: int) -> dict[str, float]:
    """H(S) and I(S;Y) (bits) of a freshly initialised mlp_mnist on a seeded mnist5k probe."""
    config = RunConfig(model="mlp_mnist", dataset="mnist5k", seed=seed)
    data = load_data(config)
    seed_everything(seed)
    model = build_model(config, data.input_shape, data.n_classes)
    probe = class_balanced_probe(data.y_train, per_class=PROBE_PER_CLASS, seed=seed)
    network = measure_complexity(model, data.x_train[probe], data.y_train[probe]).network
    return {"H": network.H, "I_XSY": network.I_XSY, "d": network.d, "N": network.N,
            "params": network.estimator_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds 0..k-1 (default: 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    runs = []
    for seed in range(args.seeds):
        run = measure_at_initialisation(seed)
        runs.append(run)
        print(f"seed {seed}: d = {run['d']}, N = {run['N']}, H(S) = {run['H']:.3f} bits, "
              f"I(S;Y) = {run['I_XSY']:.3f} bits  (estimator parameters {run['params']})")
    print(f"\nmlp_mnist at initialisation on mnist5k, {args.seeds} seeds (mean +- sample std [min, max]), "
          f"ceilings log2 N = {math.log2(runs[0]['N']):.3f} and log2 10 = {math.log2(10):.3f} bits:")
    for key, label in (("H", "H(S)  "), ("I_XSY", "I(S;Y)")):
        values = [run[key] for run in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {label} = {statistics.mean(values):.3f} +- {spread:.3f} [{min(values):.3f}, {max(values):.3f}] bits"
              f"   paper: {PAPER_BITS[key]:.2f} bits")


if __name__ == "__main__":
    main()
