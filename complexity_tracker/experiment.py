"""One tracked training run: data, model, the built-in trainer and a :class:`ComplexityTracker`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from .config import RunConfig
from .data import load_data
from .metrics import ComplexityReport
from .models import build_model
from .tracking import DEFAULT_EXPERIMENT, ComplexityTracker
from .tracking_store import check_tracking_server, resolve_tracking_uri
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
        model_uri: where ``mlflow.pytorch.load_model`` finds it (``None`` with ``log_model=False``).
    """

    run_id: str
    config: RunConfig
    history: list[dict[str, float]]
    final_report: ComplexityReport | None
    model: nn.Module
    model_uri: str | None = None


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
    log_model: bool = True,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
) -> ExperimentResult:
    """Train ``config`` with complexity tracking on, as one MLflow run.

    The probe is a class-balanced sample of the training set (``probe_per_class`` per class,
    seeded by ``data_seed``, so runs that differ only in ``seed`` share it).  ``callbacks`` run
    after the tracker each epoch.  The run ends FINISHED; KILLED when the training raises one of
    ``killed_exceptions`` (e.g. Ctrl-C, ``optuna.TrialPruned``); FAILED for any other exception.
    Exceptions are re-raised; metrics and artifacts logged until then stay in the run.  ``stop``
    is passed to :func:`~complexity_tracker.training.train` (a requested stop ends the run KILLED).

    Raises:
        TrackingServerUnreachableError: the tracking server does not answer (before training).
    """
    check_tracking_server(resolve_tracking_uri(tracking_uri))  # before the data are loaded
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
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags=tags,
        config=config,
        estimator=config.estimator,
        kde_lam=config.kde_lam,
        stochastic=None,
        measure_every=config.measure_every,
        last_epoch=config.epochs,
        killed_exceptions=killed_exceptions,
    )
    model_uri = None
    with tracker:
        result = train(model, data, config, callbacks=[tracker, *callbacks], progress=progress, stop=stop)
        if log_model:
            model_uri = tracker.log_model(result.model)
    return ExperimentResult(
        run_id=tracker.run_id,
        config=config,
        history=tracker.history,
        final_report=tracker.reports[max(tracker.reports)] if tracker.reports else None,
        model=result.model,
        model_uri=model_uri,
    )
