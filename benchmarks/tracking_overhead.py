"""Complexity-tracking overhead per epoch, as a ratio to the epoch's training time, side by side in one run.

Cases (built-in trainer, tracker on, embedded SQLite store in a temporary folder):
  a. the paper's MNIST MLP 784-1024-256-128-64-10 on a synthetic set of MNIST size
     (60,000 train / 10,000 test images 1x28x28, 10 classes), probe 2,000 = 200 per class
     (target: tracking <= 10% of the epoch's training time);
  b. the default MLP (4 x 128) on the embedded digits set, probe 200 per class (all training digits
     of each class that has fewer).

"Training time" is the trainer's own work between two epoch callbacks (the updates and its
train/test evaluation); "tracking" is the tracker's callback: capturing the gating states,
the estimates for every layer and the network, and the one log_batch request.

Usage: python benchmarks/tracking_overhead.py [--epochs 2] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from complexity_tracker.config import RunConfig
from complexity_tracker.data import DataSplits, load_data
from complexity_tracker.models import build_model
from complexity_tracker.tracking import ComplexityTracker
from complexity_tracker.training import EpochResult, seed_everything, train

TARGET = 0.10


def synthetic_mnist(n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> DataSplits:
    """MNIST-sized images in [0, 1] labelled by a random linear teacher (10 classes)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, 1, 28, 28, generator=generator)
    teacher = torch.randn(784, 10, generator=generator)
    y = ((x.reshape(len(x), -1) - 0.5) @ teacher).argmax(dim=1)
    return DataSplits(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10, "synthetic-mnist")


class TimedTracker:
    """Epoch callback timing the tracker and the training work between two of its calls."""

    def __init__(self, tracker: ComplexityTracker) -> None:
        self.tracker = tracker
        self.train_seconds: list[float] = []
        self.track_seconds: list[float] = []
        self._last_exit: float | None = None

    def __call__(self, result: EpochResult) -> None:
        entered = time.perf_counter()
        if self._last_exit is not None:
            self.train_seconds.append(entered - self._last_exit)
        self.tracker(result)
        self._last_exit = time.perf_counter()
        if result.epoch > 0:
            self.track_seconds.append(self._last_exit - entered)


def run_case(name: str, config: RunConfig, data: DataSplits, store: str) -> dict[str, float]:
    seed_everything(config.seed, config.deterministic)
    model = build_model(config, data.input_shape, data.n_classes)
    tracker = ComplexityTracker.from_dataset(
        data.x_train, data.y_train, per_class=config.probe_per_class, tracking_uri=store,
        experiment_name="tracking-overhead", run_name=name, config=config,
    )
    timed = TimedTracker(tracker)
    with tracker:
        train(model, data, config, callbacks=[timed], progress=False)
    measure = [tracker.measure_seconds[e] for e in sorted(tracker.measure_seconds) if e > 0]
    train_s = statistics.mean(timed.train_seconds)
    track_s = statistics.mean(timed.track_seconds)
    return {
        "probe": len(tracker.probe_inputs),
        "gating units": sum(r.d for r in tracker.reports[0].layers),
        "train s/epoch": train_s,
        "tracking s/epoch": track_s,
        "of which measuring": statistics.mean(measure),
        "ratio": track_s / train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mnist = RunConfig(model="mlp_mnist", dataset="digits", epochs=args.epochs, batch_size=128, lr=0.05,
                      probe_per_class=100, device="cpu")
    digits = RunConfig(dataset="digits", epochs=args.epochs, probe_per_class=100, device="cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{args.epochs} epochs per case (epoch 0 excluded)")
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{folder}/mlflow.db"
        results = {
            "a. MNIST MLP, 60k synthetic": run_case("mnist-mlp", mnist, synthetic_mnist(), store),
            "b. MLP 4x128, digits": run_case("digits-mlp", digits, load_data(digits), store),
        }
    columns = list(next(iter(results.values())))
    print(f"{'case':<30}" + "".join(f"{c:>20}" for c in columns))
    for case, row in results.items():
        print(f"{case:<30}" + "".join(f"{v:>20.3f}" if isinstance(v, float) else f"{v:>20}" for v in row.values()))
    ratio = results["a. MNIST MLP, 60k synthetic"]["ratio"]
    print(f"MNIST MLP tracking overhead {ratio:.1%} of the epoch's training time "
          f"(target <= {TARGET:.0%}): {'met' if ratio <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
