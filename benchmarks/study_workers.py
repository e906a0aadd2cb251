"""One study with 1 worker vs the same study with N worker processes, timed side by side.

    .venv/bin/python benchmarks/study_workers.py            # 2 workers, 8-cell grid on digits, 10 epochs
    .venv/bin/python benchmarks/study_workers.py --workers 2 --epochs 5 --repeats 2

Each variant runs ``complexity-tracker study run`` as a fresh process (imports and storage set-up
included) in its own temporary folder: 1 worker on SQLite with torch using every core (the
default), 1 worker with one torch thread, and N workers on the journal file with cores/N torch
threads each.  The grid makes both variants do exactly the same
trials.  Prints wall times, CPU seconds of all processes, and the speed-up (target: >= 1.6x with 2
workers on 2 cores).  On a machine shared with other jobs, N processes get a larger share of the
CPU than one, which inflates the speed-up: compare the load average printed with the result.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[study]
name = "bench"
sampler = "grid"

[run]
dataset = "digits"
model = "mlp"
width = {width}
n_train = 1200
n_test = 597
epochs = {epochs}
probe_per_class = 50

[search]
depth = [2, 3]
seed = {seeds}
"""


def run_study(workers: int, epochs: int, cells: int, width: int, threads: int | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (all processes) of one ``study run`` with ``workers`` processes, in a fresh folder."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bench.toml"
        config.write_text(CONFIG.format(epochs=epochs, width=width, seeds=list(range(cells // 2))))
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "COMPLEXITY_TRACKER_STORAGE")}
        command = [sys.executable, "-m", "complexity_tracker.cli.main", "study", "run", str(config),
                   "--workers", str(workers), "--no-progress", "--no-log-model"]
        if threads is not None:
            command += ["--threads", str(threads)]
        cpu_before = _children_cpu()
        started = time.perf_counter()
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"study run --workers {workers} failed:\n{result.stderr[-3000:]}")
        return elapsed, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cells", type=int, default=8, help="grid cells = trials (even)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=128, help="hidden units per layer (sets the trial length)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each variant; medians shown")
    args = parser.parse_args()
    variants = {
        "1 worker, torch on all cores": (1, None),
        "1 worker, 1 torch thread": (1, 1),
        f"{args.workers} workers, cores/{args.workers} threads each": (args.workers, None),
    }
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (workers, threads) in variants.items():
            seconds, cpu_seconds = run_study(workers, args.epochs, args.cells, args.width, threads)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"study of {args.cells} trials x {args.epochs} epochs (digits MLP, width {args.width}), {cores} cores, "
          f"load average now {os.getloadavg()[0]:.1f}, median of {args.repeats}")
    print(f"{'variant':<36} {'wall s':>8} {'trials/min':>11} {'CPU s':>8}")
    medians = {name: statistics.median(values) for name, values in wall.items()}
    for name, seconds in medians.items():
        print(f"{name:<36} {seconds:>8.1f} {60 * args.cells / seconds:>11.2f} {statistics.median(cpu[name]):>8.1f}")
    many = medians[list(variants)[-1]]
    for name in list(variants)[:-1]:
        print(f"speed-up of {args.workers} workers vs {name}: {medians[name] / many:.2f}x (target >= 1.6x on 2 cores)")


if __name__ == "__main__":
    main()
