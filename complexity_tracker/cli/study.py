"""``complexity-tracker study run|status|report``: Optuna studies over tracked training runs.

Torch, MLflow and the study runner are imported inside the handlers: ``study run --workers N``
starts its helper workers first, so that their start-up overlaps with this process's own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..studies.config import StudyConfig, load_study_config
from ..studies.storage import (
    STORAGE_ENV,
    check_workers_supported,
    create_storage,
    existing_storage_url,
    redact_url,
    resolve_storage_url,
    study_tracking_uri,
)
from ..studies.workers import EXIT_INTERRUPTED, HelperWorkers, threads_per_worker
from ..tracking_store import check_tracking_server
from . import hints

if TYPE_CHECKING:
    import optuna


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Optuna studies whose trials are tracked training runs (one MLflow child run per trial)."
    )
    commands = parser.add_subparsers(dest="study_command", required=True, metavar="STUDY_COMMAND")

    run = commands.add_parser(
        "run", help="run or resume a study",
        description="Run the study of CONFIG, or resume it when a study of that name exists in the storage. "
        "Start the same command on other machines (shared PostgreSQL storage and MLflow server) to add workers.",
    )
    _add_common(run)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, [study] "
                     "tracking_uri, else sqlite:///mlflow.db)")
    run.add_argument("--n-trials", type=int, help="total trials of the study, over all workers (default: [study] n_trials)")
    run.add_argument("--workers", type=int, help="worker processes on this machine (default: [study] workers, 1)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-log-model", action="store_true", help="do not store each trial's model in MLflow")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--threads", type=int, help="torch threads of this worker (default: cores / workers)")
    run.set_defaults(handler=run_command)

    status = commands.add_parser("status", help="table of the study's trials: params, values, complexity, state")
    _add_common(status)
    status.set_defaults(handler=status_command)

    report = commands.add_parser(
        "report", help="rebuild the study's tables and figures from the storage and MLflow",
        description="Write trials.csv and the figures (ceiling heatmap and curves, gap vs lambda, Pareto front, "
        "parameter importances) to --out and log them on the study's MLflow parent run under study/.",
    )
    _add_common(report)
    report.add_argument("--tracking-uri", help="MLflow tracking URI (as for study run)")
    report.add_argument("--out", help="output folder (default: reports/<study name>)")
    report.add_argument("--no-upload", action="store_true", help="do not read from or log to MLflow")
    report.set_defaults(handler=report_command)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="study config (TOML), e.g. studies/quickstart.toml")
    parser.add_argument("--storage", help=f"Optuna storage URL (default: ${STORAGE_ENV}, [study] storage, else "
                        "sqlite:///optuna.db for one worker, journal:optuna.journal for several)")


def run_command(args: argparse.Namespace) -> int:
    config = load_study_config(args.config).with_n_trials(args.n_trials)
    workers = args.workers or config.study.workers
    storage_url = resolve_storage_url(args.storage, config.study, workers)
    tracking_uri = study_tracking_uri(args.tracking_uri, config.study)
    log_model = not args.no_log_model
    if args.worker:
        return _work_as_helper(args, config, storage_url, tracking_uri)
    check_workers_supported(storage_url, workers)
    check_tracking_server(tracking_uri)  # before helpers start, so that only this process reports it
    print(
        f"study {config.study.name!r}: {config.study.n_trials} trials, {workers} worker(s) x "
        f"{args.threads or threads_per_worker(workers)} torch thread(s)\n  storage:  {redact_url(storage_url)}\n"
        f"  tracking: {redact_url(tracking_uri)}  (experiment {config.study.experiment_name!r})",
        flush=True,
    )
    if workers == 1:
        return _launch(args, config, storage_url, tracking_uri, workers, None)
    with HelperWorkers(args.config, workers=workers, n_trials=config.study.n_trials, storage_url=storage_url,
                       tracking_uri=tracking_uri, log_model=log_model, threads=args.threads) as helpers:
        return _launch(args, config, storage_url, tracking_uri, workers, helpers)


def _work_as_helper(args: argparse.Namespace, config: StudyConfig, storage_url: str, tracking_uri: str) -> int:
    """Body of a helper worker (``--worker``); stopped by its launcher, it exits quietly."""
    try:
        from ..studies.runner import run_worker

        return run_worker(config, storage_url=storage_url, tracking_uri=tracking_uri,
                          threads=args.threads or threads_per_worker(1), log_model=not args.no_log_model)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _launch(args: argparse.Namespace, config: StudyConfig, storage_url: str, tracking_uri: str, workers: int,
            helpers: HelperWorkers | None) -> int:
    """Run the study in this process (with ``helpers`` beside it) and print how it went."""
    import optuna

    from ..studies.budget import given_up_line
    from ..studies.report import summary_line
    from ..studies.runner import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    outcome = run_study(
        config, config_path=args.config, storage_url=storage_url, tracking_uri=tracking_uri,
        workers=workers, helpers=helpers, threads=args.threads,
        progress=not args.no_progress, log_model=not args.no_log_model, finalize=_report_writer(config, tracking_uri),
    )
    print(summary_line(outcome.study, config))
    for trial in outcome.given_up:
        print(given_up_line(trial), file=sys.stderr)
    if outcome.interrupted:
        print("interrupted: run the same command again to resume the study", file=sys.stderr)
    elif not outcome.complete:
        print("trials are still running in other workers; `study status` shows their progress")
    print_best_trials(outcome.study, config)
    print_browse_hints(args.config, outcome.storage_url, outcome.tracking_uri, outcome.parent_run_id)
    failed_workers = [c for c in outcome.worker_exit_codes if c not in (0, EXIT_INTERRUPTED)]
    if failed_workers:
        print(f"{len(failed_workers)} worker process(es) failed (exit codes {failed_workers}); see their output above",
              file=sys.stderr)
        return 1
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return 1 if outcome.given_up else 0


def print_best_trials(study: optuna.Study, config: StudyConfig) -> None:
    """The best trial (single objective) or the Pareto front: parameters, objective values, complexity (bits)."""
    from ..studies.report import format_table, trial_rows

    best = {trial.number for trial in study.best_trials}
    if not best:
        return
    heading = "best trial" if len(config.study.objectives) == 1 else "Pareto front"
    directions = ", ".join(f"{name} ({direction})" for name, direction in
                           zip(config.study.objectives, config.study.directions, strict=True))
    print(f"\n{heading} of {directions}; complexity of the last epoch in bits:")
    print(format_table([row for row in trial_rows(study, config) if row["trial"] in best]))


def print_browse_hints(config_path: str, storage_url: str, tracking_uri: str, parent_run_id: str) -> None:
    """Commands that show the study, each runnable as printed from any directory."""
    config = hints.absolute_path(config_path)
    storage = ("--storage", hints.storage_url(storage_url))
    tracking = ("--tracking-uri", hints.tracking_uri(tracking_uri))
    if tracking_uri.startswith(("http://", "https://")):
        mlflow_runs = f"open {hints.tracking_uri(tracking_uri)}"
    else:
        mlflow_runs = hints.command("ui", "--backend-store-uri", hints.tracking_uri(tracking_uri))
    print(
        "\nBrowse the study:\n"
        f"  trials table:     {hints.command('study', 'status', config, *storage)}\n"
        f"  plots + tables:   {hints.command('study', 'report', config, *storage, *tracking)}\n"
        f"  MLflow runs:      {mlflow_runs}   (parent run {parent_run_id})\n"
        f"  Optuna dashboard: {hints.command('dashboard', config, *storage)}"
    )
    note = hints.credential_note([storage_url, tracking_uri])
    if note:
        print(note)


def _report_writer(config: StudyConfig, tracking_uri: str) -> Callable[[optuna.Study, str], None]:
    """Writes the study report onto the parent run (called once the last trial has finished)."""

    def write(study: optuna.Study, parent_run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        from ..studies.report import write_report

        with tempfile.TemporaryDirectory() as folder:
            write_report(study, config, folder, client=MlflowClient(tracking_uri), parent_run_id=parent_run_id)

    return write


def status_command(args: argparse.Namespace) -> int:
    from ..studies.factory import load_existing_study
    from ..studies.faults import storage_errors
    from ..studies.report import format_table, summary_line, trial_rows

    config = load_study_config(args.config)
    storage_url = existing_storage_url(args.storage, config.study)
    with storage_errors(storage_url):
        study = load_existing_study(config, create_storage(storage_url, config.study))
        print(summary_line(study, config))
        print(format_table(trial_rows(study, config)))
    return 0


def report_command(args: argparse.Namespace) -> int:
    config = load_study_config(args.config)
    tracking_uri = study_tracking_uri(args.tracking_uri, config.study)
    if not args.no_upload:
        check_tracking_server(tracking_uri)  # before torch and MLflow are imported

    from mlflow.tracking import MlflowClient

    from ..studies.factory import load_existing_study
    from ..studies.mlflow_runs import PARENT_RUN_ATTR
    from ..studies.report import summary_line, write_report

    study = load_existing_study(config, create_storage(existing_storage_url(args.storage, config.study), config.study))
    out = Path(args.out or Path("reports") / config.study.name)
    client = None if args.no_upload else MlflowClient(tracking_uri)
    parent_run_id = None if args.no_upload else study.user_attrs.get(PARENT_RUN_ATTR)
    written = write_report(study, config, out, client=client, parent_run_id=parent_run_id)
    print(summary_line(study, config))
    for path in written:
        print(f"  {path}")
    if parent_run_id:
        print(f"logged under study/ on MLflow parent run {parent_run_id}")
    return 0
