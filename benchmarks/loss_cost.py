"""Cost per training epoch of each complexity loss, as a ratio to plain training, measured side by side.

Each repetition trains every variant once (the order rotates between repetitions, so that load
from other processes hits all variants alike).  An epoch's cost is measured between consecutive
epoch callbacks, i.e. what a user of ``train()`` pays, including the per-epoch evaluation of
train/test loss (its own cost is printed, to show its share).

Two clocks: process CPU time (with one torch thread, the work done; barely affected by other
processes on a shared machine, so the verdict uses it) and wall time.  A ratio is the median over
repetitions of (variant / plain training in the same repetition).
Setting: the paper's MNIST network (mlp_mnist, 784-1024-256-128-64-10) on mnist5k (4,000
training images), batch 128, the loss on all four gating layers.  Targets at the default
``loss_every = 10`` (the official code's interval): ebm, kde and marginal <= 1.5x.  The same
losses on every step are printed for reference (no target).

Usage: python benchmarks/loss_cost.py [--repeats 5] [--epochs 2] [--n-train 4000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.models import build_model
from complexity_tracker.training import EpochResult, evaluate, seed_everything, train

TARGETS = {"marginal": 1.5, "kde": 1.5, "ebm": 1.5}
LAM = 1e-4


def variants(base: RunConfig) -> dict[str, RunConfig]:
    """Plain training, each loss every 10 steps (the default), and each loss on every step."""
    every_ten = {method: base.replace(loss_method=method, lam=LAM, loss_every=10) for method in TARGETS}
    every_step = {f"{method}, every step": base.replace(loss_method=method, lam=LAM, loss_every=1)
                  for method in TARGETS}
    return {"plain": base, **every_ten, **every_step}


def epoch_times(config: RunConfig, data) -> tuple[float, float]:
    """Mean (process CPU seconds, wall seconds) per epoch over epochs 1..E of one ``train()`` call."""
    stamps: list[tuple[float, float]] = []

    def stamp(result: EpochResult) -> None:
        stamps.append((time.process_time(), time.perf_counter()))

    seed_everything(config.seed)
    model = build_model(config, data.input_shape, data.n_classes)
    train(model, data, config, callbacks=[stamp], progress=False)
    epochs = len(stamps) - 1
    return (stamps[-1][0] - stamps[0][0]) / epochs, (stamps[-1][1] - stamps[0][1]) / epochs


def evaluation_cpu_seconds(config: RunConfig, data, repeats: int = 5) -> float:
    """Median CPU time of the per-epoch evaluation (train and test loss/accuracy)."""
    model = build_model(config, data.input_shape, data.n_classes)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        evaluate(model, data.x_train, data.y_train)
        evaluate(model, data.x_test, data.y_test)
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=4000, help="mnist5k training images (test set: 1,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 makes CPU time the work done, and is steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = RunConfig(model="mlp_mnist", dataset="mnist5k", n_train=args.n_train, n_test=1000, epochs=args.epochs,
                     batch_size=args.batch_size, schedule="none")
    data = load_data(base)
    configs = variants(base)
    names = list(configs)
    epoch_times(base.replace(epochs=1), data)  # warm-up (allocator, kernels)
    cpu: dict[str, list[float]] = {name: [] for name in names}  # per repetition, seconds per epoch
    wall: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            cpu_seconds, wall_seconds = epoch_times(configs[name], data)
            cpu[name].append(cpu_seconds)
            wall[name].append(wall_seconds)

    def paired(times: dict[str, list[float]], name: str) -> float:
        return statistics.median(t / p for t, p in zip(times[name], times["plain"]))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; mnist5k, mlp_mnist, batch {args.batch_size}, "
          f"{len(data.y_train)} training images; {args.repeats} repetitions of {args.epochs} epoch(s) per variant, "
          "interleaved; loss on all four gating layers")
    print(f"per-epoch evaluation (train+test loss): {evaluation_cpu_seconds(base, data) * 1000:.1f} ms CPU")
    print(f"{'variant':<21}{'CPU ms/epoch':>13}{'CPU ratio':>10}{'wall ratio':>11}{'target':>8}  verdict (CPU ratio)")
    for name in names:
        target = TARGETS.get(name)
        cpu_ratio = paired(cpu, name)
        verdict = "" if target is None else ("meets" if cpu_ratio <= target else "MISSES")
        target_text = "" if target is None else f"<= {target:g}x"
        print(f"{name:<21}{statistics.median(cpu[name]) * 1000:>13.1f}{cpu_ratio:>10.2f}{paired(wall, name):>11.2f}"
              f"{target_text:>8}  {verdict}")


if __name__ == "__main__":
    main()
