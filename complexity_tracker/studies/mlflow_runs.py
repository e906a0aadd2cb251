"""MLflow side of a study: one parent run per study, the Optuna state mirrored on each trial's run.

Trial runs are created by :func:`complexity_tracker.experiment.run_experiment` (nested under the
parent with ``mlflow.parentRunId``); this module only finds, tags and ends runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow
import optuna
from mlflow.entities import RunStatus, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from ..tracking import get_or_create_experiment
from .budget import DIVERGED_ATTR, FAULT_ATTR, INTERRUPTED_ATTR, SLOT_ATTR

#: Study user attribute holding the parent run's id (how a resumed study finds its run again).
PARENT_RUN_ATTR = "mlflow_parent_run_id"
#: Trial user attribute holding the trial's MLflow run id (read by the robustness evaluation).
RUN_ID_ATTR = "mlflow_run_id"
STUDY_TAG = "optuna.study_name"
ROLE_TAG = "optuna.role"


def run_outcome(trial: FrozenTrial, abandoned: bool = False) -> tuple[str | None, dict[str, str]]:
    """The MLflow status of a finished trial's run and the tags that say why.

    COMPLETE -> FINISHED; PRUNED -> FINISHED with ``optuna.pruned = true`` (the pruner stopped the
    training on purpose: the run holds every epoch it trained); FAIL -> KILLED with
    ``optuna.interrupted = true`` (Ctrl-C, SIGTERM) or, for a run ``abandoned`` by a worker that
    died, with ``optuna.stale = true``; FAIL -> FAILED with ``optuna.fault`` (the tracking server
    or storage failed) or ``optuna.diverged`` (NaN loss), and for any other error.  ``None`` for a
    trial that is not finished.
    """
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        return "FINISHED", {}
    if trial.state == TrialState.PRUNED:
        return "FINISHED", {"optuna.pruned": "true"}
    if trial.state != TrialState.FAIL:
        return None, {}
    if attrs.get(INTERRUPTED_ATTR):
        return "KILLED", {"optuna.interrupted": "true"}
    for attr in (FAULT_ATTR, DIVERGED_ATTR):
        if attr in attrs:
            return "FAILED", {f"optuna.{attr}": str(attrs[attr])[:5000]}
    return ("KILLED", {"optuna.stale": "true"}) if abandoned else ("FAILED", {})


def trial_tags(study_name: str, trial: optuna.Trial) -> dict[str, str]:
    """Tags set when a trial's run starts."""
    tags = {STUDY_TAG: study_name, ROLE_TAG: "trial", "optuna.trial_number": str(trial.number)}
    if SLOT_ATTR in trial.user_attrs:
        tags["optuna.slot"] = str(trial.user_attrs[SLOT_ATTR])
    return tags


def open_parent_run(
    client: MlflowClient,
    study: optuna.Study,
    experiment_name: str,
    params: Mapping[str, Any],
    config_text: str | None = None,
) -> str:
    """The study's parent run, created on the first call and set RUNNING again on a resume.

    The run id is kept in the study's user attribute ``mlflow_parent_run_id``; when the tracking
    store does not know it (e.g. a new tracking URI), a new parent run is created.
    """
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is not None:
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run_id = None
        else:
            client.update_run(run_id, status="RUNNING")
            return run_id
    experiment_id = get_or_create_experiment(client, experiment_name)
    run = client.create_run(
        experiment_id, run_name=study.study_name, tags={STUDY_TAG: study.study_name, ROLE_TAG: "study"}
    )
    run_id = run.info.run_id
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
    if config_text is not None:
        client.log_text(run_id, config_text, "study/config.toml")
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id


def end_parent_run(client: MlflowClient, run_id: str, status: str) -> None:
    client.set_terminated(run_id, status)


def mirror_trial(
    client: MlflowClient, trial: FrozenTrial, objectives: Sequence[str], abandoned: bool = False
) -> None:
    """Copy a finished trial's number, params, values and state onto its run and end it with the
    status of :func:`run_outcome`."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if run_id is None:
        return
    status, reason = run_outcome(trial, abandoned)
    tags = {"optuna.trial_number": str(trial.number), "optuna.state": trial.state.name, **reason}
    tags.update({f"optuna.param.{name}": str(value) for name, value in trial.params.items()})
    if trial.values is not None:
        tags["optuna.values"] = json.dumps(dict(zip(objectives, trial.values)))
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    if status is not None and client.get_run(run_id).info.status != status:
        client.set_terminated(run_id, status)


def end_abandoned_runs(client: MlflowClient, trials: Sequence[FrozenTrial], objectives: Sequence[str]) -> None:
    """Mirror the failed ``trials`` whose runs do not show their final state yet: their worker died,
    was interrupted or lost the tracking server before it could (the run may even have FINISHED
    when only the trial's last storage write was lost)."""
    for trial in trials:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None:
            continue
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:  # logged to another tracking store
            continue
        running = run.info.status == RunStatus.to_string(RunStatus.RUNNING)
        if running or run.data.tags.get("optuna.state") != trial.state.name:
            mirror_trial(client, trial, objectives, abandoned=True)


def child_runs(client: MlflowClient, parent_run_id: str) -> list[mlflow.entities.Run]:
    """Every trial run nested under the study's parent run."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50000
    )
