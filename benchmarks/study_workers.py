"""One study run with 1 worker and with N workers, timed side by side.

    .venv/bin/python benchmarks/study_workers.py                        # studies/gap.toml, 2 workers
    .venv/bin/python benchmarks/study_workers.py --epochs 10 --repeats 2
    .venv/bin/python benchmarks/study_workers.py --config studies/quickstart.toml

Each variant runs ``complexity-tracker study run CONFIG`` as a fresh process (imports, storage and
MLflow set-up, the final report included) in its own temporary folder, on the same trials: 1
worker with torch on every core (the default), 1 worker with one torch thread, and ``--workers N``
(the launcher and N - 1 helper processes, cores/N torch threads each).  Prints the wall time, the
CPU seconds of all processes, where the wall time went (before the first trial started, trials,
after the last trial ended) and the speed-ups (target: >= 1.6x with 2 workers on 2 cores).  On a
machine shared with other jobs N processes get a larger share of the CPU than one, which inflates
the speed-up: compare the load average printed with the result.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from complexity_tracker.studies import create_storage, load_study_config

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Timing:
    """Seconds of one ``study run``: wall, CPU of all its processes, and the wall split in three."""

    wall: float
    cpu: float
    before_trials: float
    trials: float
    after_trials: float
    trials_done: int


def configure(text: str, epochs: int | None, width: int | None) -> str:
    """The config with ``[run] epochs`` / ``width`` replaced (each must be set in the file)."""
    for key, value in (("epochs", epochs), ("width", width)):
        if value is None:
            continue
        text, count = re.subn(rf"(?m)^{key}\s*=\s*\d+", f"{key} = {value}", text)
        if count != 1:
            raise SystemExit(f"--{key} needs exactly one '{key} = N' line in the config, found {count}")
    return text


def run_study(config_text: str, workers: int, threads: int | None) -> Timing:
    """One ``study run`` in a fresh folder with ``workers`` processes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.toml"
        path.write_text(config_text)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "COMPLEXITY_TRACKER_STORAGE")}
        storage = f"journal:{folder}/optuna.journal" if workers > 1 else f"sqlite:///{folder}/optuna.db"
        command = [sys.executable, "-m", "complexity_tracker.cli.main", "study", "run", str(path),
                   "--workers", str(workers), "--storage", storage, "--no-progress"]
        if threads is not None:
            command += ["--threads", str(threads)]
        cpu_before = _children_cpu()
        started = time.time()
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        ended = time.time()
        if result.returncode != 0:
            raise SystemExit(f"study run --workers {workers} failed:\n{result.stderr[-3000:]}")
        config = load_study_config(path)
        trials = optuna.load_study(
            study_name=config.study.name, storage=create_storage(storage, config.study)
        ).get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
        first = min(t.datetime_start.timestamp() for t in trials)
        last = max(t.datetime_complete.timestamp() for t in trials)
        return Timing(ended - started, _children_cpu() - cpu_before, first - started, last - first, ended - last,
                      len(trials))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "studies" / "gap.toml", help="study config to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="replace the config's [run] epochs (sets the trial length)")
    parser.add_argument("--width", type=int, help="replace the config's [run] width")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each variant; medians shown")
    args = parser.parse_args()
    config_text = configure(args.config.read_text(), args.epochs, args.width)
    variants = {
        "1 worker, torch on all cores": (1, None),
        "1 worker, 1 torch thread": (1, 1),
        f"{args.workers} workers, cores/{args.workers} threads each": (args.workers, None),
    }
    timings: dict[str, list[Timing]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (workers, threads) in variants.items():
            timings[name].append(run_study(config_text, workers, threads))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    trials = timings[next(iter(variants))][0].trials_done
    print(f"{args.config.name} (epochs {args.epochs or 'as configured'}, width {args.width or 'as configured'}): "
          f"{trials} trials, {cores} cores, load average now {os.getloadavg()[0]:.1f}, median of {args.repeats}")
    print(f"{'variant':<36} {'wall s':>7} {'CPU s':>7} {'before':>7} {'trials':>7} {'after':>7}")
    medians: dict[str, float] = {}
    for name, runs in timings.items():
        medians[name] = statistics.median(t.wall for t in runs)
        columns = [statistics.median(getattr(t, f) for t in runs) for f in ("cpu", "before_trials", "trials", "after_trials")]
        print(f"{name:<36} {medians[name]:>7.1f} " + " ".join(f"{c:>7.1f}" for c in columns))
    many = list(variants)[-1]
    many_trials = statistics.median(t.trials for t in timings[many])
    for name in list(variants)[:-1]:
        trial_phase = statistics.median(t.trials for t in timings[name]) / many_trials
        print(f"speed-up of {args.workers} workers vs {name}: {medians[name] / medians[many]:.2f}x "
              f"(trial phase alone {trial_phase:.2f}x; target >= 1.6x on 2 cores)")


if __name__ == "__main__":
    main()
