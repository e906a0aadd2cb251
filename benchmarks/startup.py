"""Start-up cost of ``complexity-tracker train`` against the cost of importing torch and MLflow.

    .venv/bin/python benchmarks/startup.py                 # 5 interleaved repeats
    .venv/bin/python benchmarks/startup.py --repeats 3 --probe-per-class 100

Each repeat runs, as fresh processes and one after the other (so that load on a shared machine
hits all of them alike):

* ``python -c "import torch, mlflow"`` (the reference);
* ``complexity-tracker train --epochs 1`` on the embedded digits (the default MLP, model logging
  on) into a SQLite store created beforehand, with a probe of 10 per class so that the complexity
  measurement (which scales with the probe, see ``tracking_overhead.py``) does not hide the rest;
* the same with ``--epochs 3``.

CPU is user + sys of the process and its children.  The fixed cost is the 1-epoch run minus one
epoch's cost, the epoch's cost being half the difference between the 3-epoch and the 1-epoch
run (an epoch includes its complexity measurement).  Prints medians side by side and the ratios
(target: fixed cost <= 1.5x the import), and once the CPU of a first run on a new store.
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

PROGRAM = Path(sys.executable).with_name("complexity-tracker")


def cpu_and_wall(command: list[str], cwd: Path) -> tuple[float, float]:
    """CPU seconds (user + sys, children included) and wall seconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def train_command(store: str, epochs: int, probe_per_class: int) -> list[str]:
    return [str(PROGRAM), "train", "--epochs", str(epochs), "--quiet", "--tracking-uri", store,
            "--probe-per-class", str(probe_per_class)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe-per-class", type=int, default=10, help="probe samples per class (default: 10)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        store = f"sqlite:///{cwd / 'mlflow.db'}"
        first_cpu, first_wall = cpu_and_wall(train_command(store, 1, args.probe_per_class), cwd)
        commands = {
            "import torch, mlflow": [sys.executable, "-c", "import torch, mlflow"],
            "train, 1 epoch": train_command(store, 1, args.probe_per_class),
            "train, 3 epochs": train_command(store, 3, args.probe_per_class),
        }
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for repeat in range(args.repeats):
            for name, command in commands.items():
                samples[name].append(cpu_and_wall(command, cwd))
            print(f"repeat {repeat + 1}/{args.repeats}: "
                  + ", ".join(f"{name} {samples[name][-1][0]:.2f} CPU s" for name in commands), flush=True)
    cpu = {name: statistics.median(c for c, _ in values) for name, values in samples.items()}
    wall = {name: statistics.median(w for _, w in values) for name, values in samples.items()}
    reference = cpu["import torch, mlflow"]
    epoch = (cpu["train, 3 epochs"] - cpu["train, 1 epoch"]) / 2
    fixed = cpu["train, 1 epoch"] - epoch
    print(f"\nmedians of {args.repeats} interleaved repeats (CPU = user + sys, children included):")
    for name in commands:
        print(f"  {name:<22} {cpu[name]:6.2f} CPU s  {wall[name]:6.2f} s wall  {cpu[name] / reference:5.2f}x import")
    print(f"  {'one epoch':<22} {epoch:6.2f} CPU s")
    print(f"  {'fixed cost of train':<22} {fixed:6.2f} CPU s  {'':15}{fixed / reference:5.2f}x import  (target <= 1.5x)")
    print(f"first run on a new SQLite store: {first_cpu:.2f} CPU s, {first_wall:.2f} s wall")


if __name__ == "__main__":
    main()
