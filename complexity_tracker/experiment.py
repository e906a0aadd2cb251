"""One tracked training run: data, model, the built-in trainer and a :class:`ComplexityTracker`."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from .config import RunConfig
from .data import load_data
from .metrics import ComplexityReport
from .models import build_model
from .tracking import DEFAULT_EXPERIMENT, ComplexityTracker
from .tracking_store import bound_tracking_retries, check_tracking_server, resolve_tracking_uri
from .training import EpochCallback, seed_everything, train


@dataclass
class ExperimentResult:
    """Outcome of :func:`run_experiment`.

    Attributes:
        run_id: the MLflow run holding params, per-epoch metrics and artifacts.
        config: the configuration that was run.
        history: one dict per epoch 0..epochs: the training metrics and, on measured epochs,
            every complexity value (``"<metric>/<layer>"``, bits).
        final_report: complexity at the last measured epoch.
        model: the trained model.
        experiment_id: the MLflow experiment holding the run.
    """

    run_id: str
    config: RunConfig
    history: list[dict[str, float]]
    final_report: ComplexityReport | None
    model: nn.Module
    experiment_id: str


def default_run_name(config: RunConfig, prefix: str = "") -> str:
    """A run name that tells runs apart: model, depth x width, complexity-loss weight, seed and a
    random 4-hex-digit suffix, e.g. ``mlp-4x128-lam1e-03-seed0-9f3a``."""
    lam = f"lam{config.lam:.0e}" if config.lam else "lam0"
    return f"{prefix}{config.model}-{config.depth}x{config.width}-{lam}-seed{config.seed}-{secrets.token_hex(2)}"


def run_experiment(
    config: RunConfig,
    *,
    tracking_uri: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    callbacks: Sequence[EpochCallback] = (),
    killed_exceptions: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
    finished_exceptions: tuple[type[BaseException], ...] = (),
    log_model: bool = True,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
) -> ExperimentResult:
    """Train ``config`` with complexity tracking on, as one MLflow run.

    The probe is a class-balanced sample of the training set (``probe_per_class`` per class,
    seeded by ``data_seed``, so runs that differ only in ``seed`` share it).  ``callbacks`` run
    after the tracker each epoch.  The run ends FINISHED; KILLED when the training raises one of
    ``killed_exceptions`` (e.g. Ctrl-C); FINISHED for one of ``finished_exceptions`` (a training
    stopped early on purpose, e.g. ``optuna.TrialPruned``); FAILED for any other exception.
    Exceptions are re-raised; metrics and artifacts logged until then stay in the run.  ``stop``
    is passed to :func:`~complexity_tracker.training.train` (a requested stop ends the run KILLED).
    ``run_name`` defaults to :func:`default_run_name`.  ``log_model`` stores the trained weights as a plain
    state_dict (:meth:`~complexity_tracker.tracking.ComplexityTracker.log_state_dict`), which with
    the run's ``config.json`` rebuilds the model.

    Raises:
        TrackingServerUnreachableError: the tracking server does not answer (before training).
    """
    resolved_uri = resolve_tracking_uri(tracking_uri)
    check_tracking_server(resolved_uri)  # before the data are loaded
    bound_tracking_retries(resolved_uri)  # a server that dies mid-run costs about a minute, not MLflow's 4 per request
    seed_everything(config.seed, config.deterministic)
    data = load_data(config)
    model = build_model(config, data.input_shape, data.n_classes)
    tracker = ComplexityTracker.from_dataset(
        data.x_train,
        data.y_train,
        per_class=config.probe_per_class,
        seed=config.data_seed,
        tracking_uri=tracking_uri,
        experiment_name=experiment_name,
        run_name=run_name or default_run_name(config),
        parent_run_id=parent_run_id,
        tags=tags,
        config=config,
        estimator=config.estimator,
        tc_method=config.tc_method,
        kernel_width=config.kernel_width,
        stochastic=None,
        measure_every=config.measure_every,
        last_epoch=config.epochs,
        killed_exceptions=killed_exceptions,
        finished_exceptions=finished_exceptions,
    )
    with tracker:
        result = train(model, data, config, callbacks=[tracker, *callbacks], progress=progress, stop=stop)
        if log_model:
            tracker.log_state_dict(result.model)
    return ExperimentResult(
        run_id=tracker.run_id,
        config=config,
        history=tracker.history,
        final_report=tracker.reports[max(tracker.reports)] if tracker.reports else None,
        model=result.model,
        experiment_id=tracker.experiment_id,
    )
