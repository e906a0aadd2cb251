"""H(S|X) of the zoo's stochastic models against its ceiling log2 K, for several K.

I(X;S) = H(S) - H(S|X), and H(S|X) is estimated from K stochastic passes of each probe input, so
it is at most log2 K bits (``measure_complexity`` flags records within 0.1 bit of it).  This script
measures, for ``dropout_mlp`` and ``vae_mlp`` at their default settings, at initialisation and
after training, the per-layer H(S|X) (the paper's kernel estimate, as ``measure_complexity``
computes it) for each K, from one set of max(K) passes per input whose first K are used.  A value
marked ``*`` lies within 0.1 bit of log2 K (capped).  It also prints the mean fraction of a layer's
units in which two passes of one input differ, beside the kernel's Hamming scale 2 w = 2% of d.

Usage: .venv/bin/python scripts/conditional_entropy_cap.py [--datasets digits mnist5k] [--per-class 20]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.estimators import KDEEstimator
from complexity_tracker.gating import PackedStates, capture_gating_states
from complexity_tracker.metrics import CAP_MARGIN_BITS, class_balanced_probe
from complexity_tracker.models import build_model
from complexity_tracker.nn_utils import forked_global_rng
from complexity_tracker.training import seed_everything, train

REPEATS = (2, 4, 8, 16, 32, 64)
#: Training epochs of the "trained" case, and the split sizes, per dataset.
SETTINGS = {"digits": {"epochs": 10, "n_train": 1200, "n_test": 500},
            "mnist5k": {"epochs": 5, "n_train": 4000, "n_test": 1000}}


def conditional_entropy(passes: list[PackedStates], estimator: KDEEstimator) -> float:
    """Mean over inputs of the kernel entropy of that input's passes (bits)."""
    bits = np.stack([p.bits for p in passes], axis=1)  # (inputs, K, bytes)
    d, is_conv = passes[0].d, passes[0].is_conv
    return float(np.mean([estimator.entropy(PackedStates(rows, d, is_conv)) for rows in bits]))


def report(dataset: str, model_name: str, epochs: int, per_class: int) -> None:
    config = RunConfig(model=model_name, dataset=dataset, **{**SETTINGS[dataset], "epochs": max(epochs, 1)})
    seed_everything(0)
    data = load_data(config)
    model = build_model(config, data.input_shape, data.n_classes)
    if epochs:
        train(model, data, config, progress=False)
    probe = data.x_train[torch.as_tensor(class_balanced_probe(data.y_train, per_class=per_class, seed=0))]
    with forked_global_rng():
        torch.manual_seed(1)
        captures = [capture_gating_states(model, probe, stochastic=True) for _ in range(max(REPEATS))]
    layers = {name: [c[name] for c in captures] for name in captures[0]}
    layers["network"] = [PackedStates.concatenate(list(c.values())) for c in captures]
    estimator = KDEEstimator()
    for name, passes in layers.items():
        differ = float(np.mean(passes[0].unpack() != passes[1].unpack()))
        cells = []
        for k in REPEATS:
            h = conditional_entropy(passes[:k], estimator)
            cells.append(f"{h:5.2f}{'*' if h >= math.log2(k) - CAP_MARGIN_BITS else ' '}")
        print(f"{dataset:8} {model_name:11} {epochs:6} {name:10} {differ:7.3f}  " + " ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"], choices=sorted(SETTINGS))
    parser.add_argument("--per-class", type=int, default=20, help="probe inputs per class (default: 20)")
    args = parser.parse_args()
    print(f"H(S|X) in bits per K (* = within {CAP_MARGIN_BITS} bit of log2 K); 'differ' = fraction of units "
          "in which two passes of one input differ (kernel scale: 0.02)")
    print(f"{'dataset':8} {'model':11} {'epochs':>6} {'layer':10} {'differ':>7}  "
          + " ".join(f"K={k:<4}" for k in REPEATS))
    print(" " * 46 + " ".join(f"{math.log2(k):5.2f} " for k in REPEATS) + " <- log2 K")
    for dataset in args.datasets:
        for model_name in ("dropout_mlp", "vae_mlp"):
            for epochs in (0, SETTINGS[dataset]["epochs"]):
                report(dataset, model_name, epochs, args.per_class)


if __name__ == "__main__":
    main()
