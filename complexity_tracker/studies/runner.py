"""Run a study: the worker loop, and the launcher behind ``complexity-tracker study run``.

A *worker* takes WAITING trials (the study's slots, see :mod:`.budget`) until none is left.  The
launcher opens the study and its MLflow parent run, then either works itself (one worker) or
starts ``--workers N`` independent worker processes (the same CLI with ``--worker``) that share the
storage and the tracking URI; the same command may run on other machines at the same time.
When the last slot is finished, the launcher that sees it writes the study report onto the
parent run and ends it FINISHED.

Ctrl-C (SIGINT) or SIGTERM: the trial being trained stops, its run ends KILLED, the Optuna trial
is marked FAIL and its slot is queued again; signals that arrive outside training stop the
worker between trials, so the storage is never left half-written.  Run the same command again to
resume.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import optuna
import torch
from mlflow.tracking import MlflowClient
from tqdm.auto import tqdm

from ..tracking import check_tracking_server
from ..training import TrainingDivergedError
from .budget import finished, remaining, requeue, retry_history
from .config import StudyConfig
from .factory import open_study
from .mlflow_runs import (
    INTERRUPTED_ATTR,
    PARENT_RUN_ATTR,
    end_parent_run,
    mirror_trial,
    open_parent_run,
    study_tracking_uri,
)
from .objective import StudyObjective, worker_name
from .storage import STORAGE_ENV, check_workers_supported, create_storage, redact_url, storage_kind

#: Exit code of a worker stopped by Ctrl-C/SIGTERM (as a shell reports SIGINT).
EXIT_INTERRUPTED = 130


class InterruptGuard:
    """SIGINT/SIGTERM handler: raise ``KeyboardInterrupt`` only inside :meth:`interruptible` blocks.

    Elsewhere a signal only sets :attr:`requested`, and the worker stops before its next trial.
    """

    def __init__(self) -> None:
        self.requested = False
        self._inside = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> InterruptGuard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        if self._inside:
            self._inside = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.requested:
            raise KeyboardInterrupt
        self._inside = True
        try:
            yield
        finally:
            self._inside = False


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker so that ``workers`` processes do not oversubscribe the cores."""
    return max(1, cores() // workers)


def work(
    study: optuna.Study,
    objective: StudyObjective,
    guard: InterruptGuard,
    *,
    heartbeat: bool,
    after_trial: Callable[[], None] = lambda: None,
    poll_s: float = 1.0,
) -> None:
    """Run queued trials until none is WAITING (with heartbeats: and none RUNNING elsewhere).

    With heartbeats a worker that ran out of WAITING trials waits while others run: a trial of a
    dead worker turns stale and comes back to the queue.  Raises ``KeyboardInterrupt`` after
    queueing the interrupted trial again.
    """
    settings = objective.config.study

    def mirror(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mirror_trial(objective.client, trial, settings.objectives)

    while not guard.requested:
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        waiting, running = remaining(study)
        if waiting == 0:
            if running == 0 or not heartbeat:
                return
            time.sleep(poll_s)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(TrainingDivergedError,), callbacks=[mirror])
        except KeyboardInterrupt:
            _requeue_interrupted(study, objective)
            raise
        after_trial()


def _requeue_interrupted(study: optuna.Study, objective: StudyObjective) -> None:
    """Queue again the slot of the trial this worker was training when interrupted."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in retry_history(t)}
    for trial in trials:
        if (
            trial.state == optuna.trial.TrialState.FAIL
            and trial.user_attrs.get(INTERRUPTED_ATTR)
            and trial.user_attrs.get("worker") == worker_name()
            and trial.number not in retried
        ):
            requeue(study, trial, max_retry=None)
            mirror_trial(objective.client, trial, objective.config.study.objectives)


@dataclass
class StudyOutcome:
    """What ``study run`` did: the study, its parent run, whether it is complete or was interrupted."""

    study: optuna.Study
    parent_run_id: str
    storage_url: str
    tracking_uri: str
    complete: bool
    interrupted: bool
    worker_exit_codes: list[int]


def run_study(
    config: StudyConfig,
    *,
    config_path: str | Path | None = None,
    storage_url: str,
    tracking_uri: str | None = None,
    workers: int = 1,
    progress: bool = True,
    log_model: bool = True,
    finalize: Callable[[optuna.Study, str], None] | None = None,
) -> StudyOutcome:
    """Open (or resume) the study and its parent run, run it with ``workers`` processes, and end
    the parent run: FINISHED after ``finalize(study, parent_run_id)`` when every slot is finished,
    KILLED when interrupted, RUNNING when workers elsewhere still have trials.

    ``workers > 1`` needs ``config_path`` (the worker processes read the same file).
    """
    check_workers_supported(storage_url, workers)
    tracking_uri = study_tracking_uri(tracking_uri, config.study)
    check_tracking_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    config_text = Path(config_path).read_text() if config_path else None

    def parent_run(study: optuna.Study) -> str:
        return open_parent_run(
            client, study, config.study.experiment_name, _study_params(config, storage_url), config_text
        )

    # the creator makes the parent run before the slots appear, so joining workers find it
    study, _ = open_study(config, create_storage(storage_url, config.study), prepare=parent_run)
    parent_run_id = parent_run(study)
    codes: list[int] = []
    with InterruptGuard() as guard, _progress_bar(study, config, progress) as update:
        if workers == 1:
            objective = StudyObjective(
                config, tracking_uri=tracking_uri, parent_run_id=parent_run_id,
                interruptible=guard.interruptible, log_model=log_model,
            )
            try:
                work(study, objective, guard, heartbeat=storage_kind(storage_url) != "journal", after_trial=update)
            except KeyboardInterrupt:
                guard.requested = True
        else:
            if config_path is None:
                raise ValueError("run_study(workers > 1) needs config_path for the worker processes")
            codes = _run_worker_processes(
                config_path, config, workers, storage_url, tracking_uri, guard, update, log_model
            )
    complete = remaining(study) == (0, 0)
    if complete:
        if finalize is not None:
            finalize(study, parent_run_id)
        end_parent_run(client, parent_run_id, "FINISHED")
    elif guard.requested:
        end_parent_run(client, parent_run_id, "KILLED")
    return StudyOutcome(study, parent_run_id, storage_url, tracking_uri, complete, guard.requested, codes)


def run_worker(config: StudyConfig, *, storage_url: str, tracking_uri: str | None, threads: int,
               log_model: bool = True) -> int:
    """Body of a ``study run --worker`` process: load the study and work; returns the exit code."""
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking_uri = study_tracking_uri(tracking_uri, config.study)
    study, _ = open_study(config, create_storage(storage_url, config.study))
    with InterruptGuard() as guard:
        objective = StudyObjective(
            config, tracking_uri=tracking_uri, parent_run_id=study.user_attrs.get(PARENT_RUN_ATTR),
            interruptible=guard.interruptible, log_model=log_model,
        )
        try:
            work(study, objective, guard, heartbeat=storage_kind(storage_url) != "journal")
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if guard.requested else 0


def worker_command(config_path: str | Path, threads: int, n_trials: int, log_model: bool) -> list[str]:
    """Command line of one worker process (storage and tracking URI travel in the environment)."""
    command = [
        sys.executable, "-m", "complexity_tracker.cli.main", "study", "run", str(config_path),
        "--worker", "--threads", str(threads), "--n-trials", str(n_trials),
    ]
    return command + ([] if log_model else ["--no-log-model"])


def _run_worker_processes(
    config_path: str | Path,
    config: StudyConfig,
    workers: int,
    storage_url: str,
    tracking_uri: str,
    guard: InterruptGuard,
    update: Callable[[], None],
    log_model: bool,
) -> list[int]:
    threads = threads_per_worker(workers)
    env = {
        **os.environ,
        STORAGE_ENV: storage_url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    command = worker_command(config_path, threads, config.study.n_trials, log_model)
    processes = [subprocess.Popen(command, env=env, start_new_session=True) for _ in range(workers)]
    forwarded = False
    try:
        while any(p.poll() is None for p in processes):
            if guard.requested and not forwarded:
                for process in processes:
                    if process.poll() is None:
                        process.send_signal(signal.SIGINT)
                forwarded = True
            update()
            time.sleep(2.0)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        codes = [process.wait() for process in processes]
    update()
    if any(code == EXIT_INTERRUPTED for code in codes):
        guard.requested = True
    return codes


@contextlib.contextmanager
def _progress_bar(study: optuna.Study, config: StudyConfig, enabled: bool) -> Iterator[Callable[[], None]]:
    """A bar over the study's slots; yields the function that refreshes it from the storage."""
    total = config.study.n_trials
    with tqdm(total=total, desc=f"study {config.study.name}", unit="trial", disable=not enabled,
              file=sys.stderr) as bar:
        def update() -> None:
            done = min(total, len(finished(study)))
            if done != bar.n:
                bar.n = done
                bar.refresh()

        update()
        yield update


def _study_params(config: StudyConfig, storage_url: str) -> dict[str, str]:
    settings = config.study
    return {
        "study.name": settings.name,
        "study.objectives": ",".join(settings.objectives),
        "study.directions": ",".join(settings.directions),
        "study.n_trials": str(settings.n_trials),
        "study.sampler": settings.sampler,
        "study.pruner": settings.pruner,
        "study.storage": redact_url(storage_url),
        "study.search": ",".join(p.name for p in config.search),
    }


def print_browse_hints(outcome: StudyOutcome, config_path: str, out: TextIO = sys.stdout) -> None:
    """How to look at the study: status table, MLflow UI, optuna-dashboard."""
    storage = f" --storage {redact_url(outcome.storage_url)}" if outcome.storage_url else ""
    ui = (
        f"complexity-tracker ui --backend-store-uri {outcome.tracking_uri}"
        if not outcome.tracking_uri.startswith("http") else f"open {outcome.tracking_uri}"
    )
    print(
        "\nBrowse the study:\n"
        f"  trials table:     complexity-tracker study status {config_path}{storage}\n"
        f"  plots + tables:   complexity-tracker study report {config_path}{storage}\n"
        f"  MLflow runs:      {ui}   (parent run {outcome.parent_run_id})\n"
        f"  Optuna dashboard: complexity-tracker dashboard {config_path}{storage}",
        file=out,
    )
