"""The Optuna objective of a study: one tracked training run (an MLflow child run) per trial."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from ..experiment import default_run_name, run_experiment
from ..tracking_store import tracking_outage
from ..training import EpochResult, TrainingDivergedError
from .budget import DIVERGED_ATTR, FAULT_ATTR, INTERRUPTED_ATTR, SURPLUS_ATTR, is_surplus, retry_history
from .config import LAM_IS_ZERO, SearchParam, StudyConfig
from .mlflow_runs import RUN_ID_ATTR, end_abandoned_runs, trial_tags

#: Final complexity values stored as trial user attributes (bits), per layer and for the network.
COMPLEXITY_ATTR_PREFIXES = ("H/", "I_XSY/")


def worker_name() -> str:
    """``host:pid`` of this worker process (stored on each trial it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def suggest_params(trial: optuna.Trial, search: Sequence[SearchParam]) -> dict[str, Any]:
    """Ask the trial for every searched setting; returns ``trial.params``."""
    for param in search:
        if param.choices is not None:
            trial.suggest_categorical(param.name, list(param.grid_values()))
        elif param.include_zero and trial.suggest_categorical(LAM_IS_ZERO, [False, True]):
            continue
        elif param.is_int:
            trial.suggest_int(param.name, param.low, param.high, step=param.step or 1, log=param.log)
        else:
            trial.suggest_float(param.name, param.low, param.high, step=param.step, log=param.log)
    return trial.params


class EpochPruning:
    """``EpochCallback`` reporting one metric to Optuna each epoch and pruning when told to.

    Raises :class:`optuna.TrialPruned` (the run then ends FINISHED).  Epoch 0 (the untrained
    network) is not reported.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    def __call__(self, result: EpochResult) -> None:
        if result.epoch == 0:
            return
        value = result.metrics[self.metric]
        self.trial.report(value, step=result.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {result.epoch} with {self.metric} = {value:.4g}")


class RecordRunId:
    """``EpochCallback`` storing the active MLflow run's id on the trial as soon as the run exists,
    so that the run of a trial whose worker dies can still be found and ended."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.done = False

    def __call__(self, result: EpochResult) -> None:
        run = mlflow.active_run()
        if not self.done and run is not None:
            self.trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
            self.done = True


def objective_values(final_row: Mapping[str, float], objectives: Sequence[str]) -> list[float]:
    """The objectives read off the last epoch's row of ``ExperimentResult.history``."""
    return [float(final_row[name]) for name in objectives]


def complexity_attrs(final_row: Mapping[str, float]) -> dict[str, float]:
    """``H/<layer>`` and ``I_XSY/<layer>`` (including ``network``), bits, of the last epoch."""
    return {k: float(v) for k, v in final_row.items() if k.startswith(COMPLEXITY_ATTR_PREFIXES)}


class StudyObjective:
    """Objective of a study's trials.

    Each trial: drop it if it is surplus (see :mod:`.budget`), suggest the parameters, build the
    :class:`~complexity_tracker.config.RunConfig`, run :func:`run_experiment` as a child of the
    study's parent run with epoch-level pruning (single objective), and return the objective values
    of the last epoch.  User attributes: ``mlflow_run_id``, ``lam`` (linear weight), ``worker``
    (host:pid) and the final ``H/<layer>`` / ``I_XSY/<layer>`` in bits; on failure ``interrupted``,
    ``diverged`` (NaN loss) or ``fault`` (the tracking server stopped answering), which decide
    whether the slot is retried (see :mod:`.budget`).

    Args:
        config: the study config.
        tracking_uri: MLflow tracking URI shared by all workers.
        parent_run_id: the study's parent run.
        stop: asked before every training step; True stops the trial (its run ends KILLED and
            ``KeyboardInterrupt`` is raised) so that the worker can queue it again and exit.
        log_model: log each trial's model as an MLflow artifact.
    """

    def __init__(
        self,
        config: StudyConfig,
        *,
        tracking_uri: str,
        parent_run_id: str | None,
        stop: Callable[[], bool] | None = None,
        log_model: bool = True,
    ) -> None:
        self.config = config
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.stop = stop
        self.log_model = log_model
        self.client = MlflowClient(tracking_uri)
        settings = config.study
        # validated by the config: a pruner implies one objective measured every epoch
        self.prune_metric = settings.objectives[0] if settings.pruner != "none" else None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        trials = trial.study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        if is_surplus(frozen, trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise optuna.TrialPruned("surplus trial: its slot is already taken or the study's budget is used up")
        retried = [t for t in trials if t.number in retry_history(frozen)]
        end_abandoned_runs(self.client, retried, self.config.study.objectives)
        trial.set_user_attr("worker", worker_name())
        run_config = self.config.run_config(suggest_params(trial, self.config.search))
        trial.set_user_attr("lam", run_config.lam)
        callbacks: list[Callable[[EpochResult], None]] = [RecordRunId(trial)]
        if self.prune_metric is not None:
            callbacks.append(EpochPruning(trial, self.prune_metric))
        try:
            result = run_experiment(
                run_config,
                tracking_uri=self.tracking_uri,
                experiment_name=self.config.study.experiment_name,
                run_name=default_run_name(run_config, prefix=f"{trial.study.study_name}-trial-{trial.number}-"),
                parent_run_id=self.parent_run_id,
                tags=trial_tags(trial.study.study_name, trial),
                callbacks=callbacks,
                killed_exceptions=(KeyboardInterrupt,),
                finished_exceptions=(optuna.TrialPruned,),
                log_model=self.log_model,
                stop=self.stop,
            )
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise
        except TrainingDivergedError as error:
            trial.set_user_attr(DIVERGED_ATTR, str(error))
            raise
        except Exception as error:
            outage = tracking_outage(error)
            if outage is not None:
                trial.set_user_attr(FAULT_ATTR, f"tracking server {self.tracking_uri}: {outage}")
            raise
        trial.set_user_attr(RUN_ID_ATTR, result.run_id)
        final_row = result.history[-1]
        for key, value in complexity_attrs(final_row).items():
            trial.set_user_attr(key, value)
        values = objective_values(final_row, self.config.study.objectives)
        return values[0] if len(values) == 1 else values
