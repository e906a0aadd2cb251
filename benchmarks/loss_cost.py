"""Cost per training epoch of each complexity loss, as a ratio to plain training, measured side by side.

Each repetition trains every variant once (the order rotates between repetitions, so that load
from other processes hits all variants alike); an epoch's time is the gap between consecutive
epoch callbacks, i.e. what a user of ``train()`` waits for, including the per-epoch evaluation of
train/test loss (whose own time is printed, to show its share).

On a shared machine load comes in bursts, so the verdict uses the paired ratio: in each
repetition, a variant's epoch time over that of plain training in the same repetition (run next
to it), median over repetitions.  The ratio of the best (minimum) times is printed beside it.
Targets: ebm <= 3x, kde and marginal <= 1.5x (loss on every step, all gating layers).

Usage: python benchmarks/loss_cost.py [--repeats 20] [--epochs 1] [--width 256] [--depth 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.models import build_model
from complexity_tracker.training import EpochResult, evaluate, seed_everything, train

TARGETS = {"kde": 1.5, "marginal": 1.5, "ebm": 3.0, "ebm, every 10 steps": 3.0}


def variants(base: RunConfig) -> dict[str, RunConfig]:
    return {
        "plain": base,
        "marginal": base.replace(loss_method="marginal", lam=1e-3),
        "kde": base.replace(loss_method="kde", lam=1e-3),
        "ebm": base.replace(loss_method="ebm", lam=1e-3),
        "ebm, every 10 steps": base.replace(loss_method="ebm", lam=1e-3, loss_every=10),
    }


def epoch_seconds(config: RunConfig, data) -> list[float]:
    """Wall time of each epoch 1..E of one ``train()`` call."""
    stamps: list[float] = []

    def stamp(result: EpochResult) -> None:
        stamps.append(time.perf_counter())

    seed_everything(config.seed)
    model = build_model(config, data.input_shape, data.n_classes)
    train(model, data, config, callbacks=[stamp], progress=False)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def evaluation_seconds(config: RunConfig, data, repeats: int = 5) -> float:
    """Best time of the per-epoch evaluation (train and test loss/accuracy)."""
    model = build_model(config, data.input_shape, data.n_classes)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate(model, data.x_train, data.y_train)
        evaluate(model, data.x_test, data.y_test)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = RunConfig(model="mlp", dataset="digits", depth=args.depth, width=args.width, epochs=args.epochs,
                     batch_size=args.batch_size, schedule="none")
    data = load_data(base)
    configs = variants(base)
    names = list(configs)
    epoch_seconds(base.replace(epochs=1), data)  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {name: [] for name in names}  # mean epoch seconds, per repetition
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            times[name].append(statistics.mean(epoch_seconds(configs[name], data)))
    eval_time = evaluation_seconds(base, data)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); digits, MLP depth {args.depth} "
          f"width {args.width}, batch {args.batch_size}, {len(data.y_train)} training images; "
          f"{args.repeats} repetitions of {args.epochs} epoch(s) per variant, interleaved; loss on all gating layers")
    print(f"per-epoch evaluation (train+test loss): {eval_time * 1000:.1f} ms (best of 5)")
    print(f"{'variant':<21}{'best ms/epoch':>14}{'paired ratio':>13}{'ratio of bests':>15}{'target':>8}  verdict")
    for name in names:
        paired = statistics.median(t / p for t, p in zip(times[name], times["plain"]))
        of_bests = min(times[name]) / min(times["plain"])
        target = TARGETS.get(name)
        verdict = "" if target is None else ("meets" if paired <= target else "MISSES")
        target_text = "" if target is None else f"<= {target:g}x"
        print(f"{name:<21}{min(times[name]) * 1000:>14.1f}{paired:>13.2f}{of_bests:>15.2f}{target_text:>8}  {verdict}")

if __name__ == "__main__":
    main()
