"""Run a study: the worker loop, and the launcher behind ``complexity-tracker study run``.

A *worker* takes WAITING trials (the study's slots, see :mod:`.budget`) until none is left.  The
launcher starts ``--workers N`` minus one helper processes (the same CLI with ``--worker``, see
:mod:`.workers`), opens the study and its MLflow parent run, and works itself as the N-th worker;
the helpers join once the study is there and share its storage and tracking URI.  The same
command may run on other machines at the same time.
When the last slot is finished, the launcher that sees it writes the study report onto the
parent run and ends it FINISHED.

Ctrl-C (SIGINT) or SIGTERM: the trial being trained stops, its run ends KILLED, the Optuna trial
is marked FAIL and its slot is queued again; signals that arrive outside training stop the
worker between trials, so the storage is never left half-written.  Run the same command again to
resume.

Faults (see :mod:`.faults`): a trial whose tracking server stops answering (MLflow's retries are
bounded, :func:`~complexity_tracker.tracking_store.bound_tracking_retries`) is failed and its slot
queued again, and the worker stops with one line; a storage error stops it with one line naming
the cause.  A launcher that stops on an error ends the parent run FAILED.  A resume queues again
every failed slot that has retries left; the study is complete when every slot is settled or
given up (:mod:`.budget`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from mlflow.tracking import MlflowClient
from tqdm.auto import tqdm

from ..tracking_store import bound_tracking_retries, check_tracking_server, single_attempt, tracking_outage
from ..training import TrainingDivergedError
from .budget import fail_orphaned_trials, finished, remaining, requeue_unsettled, unsettled
from .config import StudyConfig
from .factory import join_study, open_study
from .faults import TrackingOutageError, storage_errors
from .mlflow_runs import PARENT_RUN_ATTR, end_parent_run, mirror_trial, open_parent_run
from .objective import StudyObjective, worker_name
from .storage import check_workers_supported, create_storage, redact_url, storage_kind, study_tracking_uri
from .workers import EXIT_INTERRUPTED, HelperWorkers


class InterruptGuard:
    """SIGINT/SIGTERM handler that asks the worker to stop cleanly.

    The first signal sets :attr:`requested`: the trial being trained stops before its next step
    (see :meth:`stop_requested`), and the worker stops before asking for another trial, so no
    storage or MLflow write is cut in half.  A second signal raises ``KeyboardInterrupt`` at once.
    ``forward`` is called on every signal (the launcher passes it on to its helper workers).
    """

    def __init__(self, forward: Callable[[], None] = lambda: None) -> None:
        self.requested = False
        self._forward = forward
        self._previous: dict[int, object] = {}

    def __enter__(self) -> InterruptGuard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self._forward()
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def stop_requested(self) -> bool:
        """Whether a signal asked the worker to stop (the ``stop`` of a study objective)."""
        return self.requested


class QuietTrialFailures(logging.Filter):
    """Filter on Optuna's "Trial N failed ..." log records: a tracking fault's records are dropped
    (the worker reports it in one line when it stops) and a diverged training keeps its lines
    without the traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._dropped: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        trial = re.match(r"Trial (\d+) failed", record.getMessage())
        if trial is None:
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and tracking_outage(error) is not None:
            self._dropped.add(trial.group(1))
        if trial.group(1) in self._dropped:
            return False
        if isinstance(error, TrainingDivergedError):
            record.exc_info, record.exc_text = None, None
        return True

    def install(self) -> None:
        """Attach to the logger of ``study.optimize`` (once)."""
        logger = logging.getLogger("optuna.study._optimize")
        if not any(isinstance(f, QuietTrialFailures) for f in logger.filters):
            logger.addFilter(self)


def work(
    study: optuna.Study,
    objective: StudyObjective,
    guard: InterruptGuard,
    *,
    heartbeat: bool,
    after_trial: Callable[[], None] = lambda: None,
    poll_s: float = 1.0,
) -> None:
    """Run queued trials until none is WAITING or RUNNING elsewhere.

    A worker that ran out of WAITING trials waits while others run: a trial of a dead worker comes
    back to the queue, found by the heartbeat (RDB storages) or, without one (journal), because its
    worker process on this machine is gone (:func:`.budget.fail_orphaned_trials`).  Raises
    ``KeyboardInterrupt`` after queueing the interrupted trial again, and
    :class:`TrackingOutageError` after queueing again the trial that lost the tracking server.
    """
    settings = objective.config.study
    QuietTrialFailures().install()

    def mirror(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mirror_trial(objective.client, trial, settings.objectives)

    while not guard.requested:
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        else:
            fail_orphaned_trials(study, settings.max_retry)
        waiting, running = remaining(study)
        if waiting == 0:
            if running == 0:
                return
            time.sleep(poll_s)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(TrainingDivergedError,), callbacks=[mirror])
        except KeyboardInterrupt:
            _requeue_own_trial(study, objective)
            raise
        except Exception as error:
            outage = tracking_outage(error)
            if outage is None:
                raise
            raise _lost_tracking_server(study, objective, outage) from None
        after_trial()


def _requeue_own_trial(study: optuna.Study, objective: StudyObjective) -> list[optuna.trial.FrozenTrial]:
    """Queue again the slot of the trial this worker was running when it failed (if it has retries
    left) and mirror that trial onto its run with single MLflow requests (the server may be down)."""
    settings = objective.config.study
    requeued = requeue_unsettled(study, settings.max_retry, worker=worker_name())
    mine = [t for t in unsettled(study, settings.max_retry)[1] if t.user_attrs.get("worker") == worker_name()]
    with single_attempt():
        for trial in [*requeued, *mine]:
            with contextlib.suppress(Exception):
                mirror_trial(objective.client, trial, settings.objectives)
    return requeued


def _lost_tracking_server(study: optuna.Study, objective: StudyObjective, outage: str) -> TrackingOutageError:
    """Requeue this worker's failed trial; the one-line error the worker stops with."""
    requeued = {t.number for t in _requeue_own_trial(study, objective)}
    own = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker_name()]
    last = own[-1] if own else None
    if last is None or last.state != optuna.trial.TrialState.FAIL:
        news = ""
    elif last.number in requeued:
        news = f"trial {last.number} failed and its slot is queued again; "
    else:
        news = (f"trial {last.number} failed and its slot has used up its retries "
                f"([study] max_retry = {objective.config.study.max_retry}); ")
    return TrackingOutageError(
        f"the MLflow tracking server {objective.tracking_uri} stopped answering ({outage}); {news}"
        "run the same command again to resume once it answers"
    )


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
    given_up: list[optuna.trial.FrozenTrial] = field(default_factory=list)


def run_study(
    config: StudyConfig,
    *,
    config_path: str | Path | None = None,
    storage_url: str,
    tracking_uri: str | None = None,
    workers: int = 1,
    helpers: HelperWorkers | None = None,
    threads: int | None = None,
    progress: bool = True,
    log_model: bool = True,
    finalize: Callable[[optuna.Study, str], None] | None = None,
) -> StudyOutcome:
    """Open (or resume) the study and its parent run, queue again its failed slots that have
    retries left, run it with ``workers`` processes (this one and ``workers - 1`` helpers), and end
    the parent run: FINISHED after ``finalize(study, parent_run_id)`` when every slot is settled or
    given up, KILLED when interrupted, FAILED when this process stops on an error, RUNNING when
    workers elsewhere still have trials.

    ``helpers`` are helper processes the caller started already (the CLI starts them before its
    own imports); without them, ``workers > 1`` starts them here and needs ``config_path`` (the
    helpers read the same file).  ``threads``: torch threads of each worker (default: torch's own
    for one worker, cores / workers for several).
    """
    check_workers_supported(storage_url, workers)
    tracking_uri = study_tracking_uri(tracking_uri, config.study)
    bound_tracking_retries(tracking_uri)  # before helpers start: they inherit the settings
    if workers > 1 and helpers is None:
        if config_path is None:
            raise ValueError("run_study(workers > 1) needs config_path for the helper worker processes")
        started: contextlib.AbstractContextManager[HelperWorkers | None] = HelperWorkers(
            config_path, workers=workers, n_trials=config.study.n_trials, storage_url=storage_url,
            tracking_uri=tracking_uri, log_model=log_model, threads=threads,
        )
    else:
        started = contextlib.nullcontext(helpers)
    with started as helpers, storage_errors(storage_url):
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
        requeue_unsettled(study, config.study.max_retry)
        if threads is not None or helpers is not None:
            torch.set_num_threads(threads or helpers.threads)
        forward = helpers.interrupt if helpers is not None else lambda: None
        with _parent_run_failed_on_error(client, parent_run_id), InterruptGuard(forward) as guard, \
                _progress_bar(study, config, progress) as update:
            objective = StudyObjective(
                config, tracking_uri=tracking_uri, parent_run_id=parent_run_id,
                stop=guard.stop_requested, log_model=log_model,
            )
            try:
                work(study, objective, guard, heartbeat=storage_kind(storage_url) != "journal", after_trial=update)
            except KeyboardInterrupt:
                guard.requested = True
            codes = _wait_for_helpers(helpers, update) if helpers is not None else []
            if any(code == EXIT_INTERRUPTED for code in codes):
                guard.requested = True
            to_retry, given_up = unsettled(study, config.study.max_retry)
            complete = remaining(study) == (0, 0) and not to_retry
            if complete:
                if finalize is not None:
                    finalize(study, parent_run_id)
                end_parent_run(client, parent_run_id, "FINISHED")
            elif guard.requested:
                end_parent_run(client, parent_run_id, "KILLED")
    return StudyOutcome(study, parent_run_id, storage_url, tracking_uri, complete, guard.requested, codes, given_up)


@contextlib.contextmanager
def _parent_run_failed_on_error(client: MlflowClient, parent_run_id: str) -> Iterator[None]:
    """End the parent run FAILED when the block raises an error (not on Ctrl-C), with a single
    request: after a tracking fault the server may still be down (the run then stays RUNNING and
    is set RUNNING again on resume anyway)."""
    try:
        yield
    except Exception:
        with single_attempt(), contextlib.suppress(Exception):
            end_parent_run(client, parent_run_id, "FAILED")
        raise


def _wait_for_helpers(helpers: HelperWorkers, update: Callable[[], None], poll_s: float = 0.2) -> list[int]:
    """Refresh the progress bar until the helpers exit; their exit codes."""
    while helpers.running():
        update()
        time.sleep(poll_s)
    update()
    return helpers.exit_codes()


def run_worker(config: StudyConfig, *, storage_url: str, tracking_uri: str | None, threads: int,
               log_model: bool = True) -> int:
    """Body of a ``study run --worker`` helper process: join the study the launcher is creating and
    work; returns the exit code."""
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking_uri = study_tracking_uri(tracking_uri, config.study)
    bound_tracking_retries(tracking_uri)
    with InterruptGuard() as guard, storage_errors(storage_url):
        study = join_study(config, create_storage(storage_url, config.study), stop=lambda: guard.requested)
        if study is None:
            return EXIT_INTERRUPTED
        objective = StudyObjective(
            config, tracking_uri=tracking_uri, parent_run_id=study.user_attrs.get(PARENT_RUN_ATTR),
            stop=guard.stop_requested, log_model=log_model,
        )
        try:
            work(study, objective, guard, heartbeat=storage_kind(storage_url) != "journal")
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if guard.requested else 0


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
