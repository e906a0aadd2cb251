"""Trained models to compare, from checkpoint files, MLflow runs or an Optuna study.

Models are rebuilt with :func:`~complexity_tracker.models.build_model` from their run config so
that their ``nn.ReLU`` modules (the gates complexity is measured on) are real modules: the
``torch.export`` program MLflow stores has no such modules, only its weights are used.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..config import RunConfig
from ..data import DataSplits, load_data
from ..errors import ComplexityTrackerError
from ..models import build_model
from ..studies.mlflow_runs import PARENT_RUN_ATTR, RUN_ID_ATTR
from ..studies.storage import journal_path, redact_url, storage_kind
from ..training import load_checkpoint
from .errors import IncompatibleModelsError, ModelSourceError

#: Artifact written by the tracker with the run's :class:`RunConfig`.
CONFIG_ARTIFACT = "config.json"
#: Name under which the tracker logs the model.
MODEL_ARTIFACT = "model"
#: Run configuration fields that decide the data split; models compared together must agree, so
#: that no model is attacked on samples it was trained on.
DATA_FIELDS = ("dataset", "data_dir", "task_order", "synthetic_dim", "data_seed", "n_train", "n_test")


@dataclass
class ModelSource:
    """A trained model with the configuration it was trained with and, if any, its MLflow run."""

    name: str
    model: nn.Module
    config: RunConfig
    run_id: str | None = None


def from_checkpoints(paths: Sequence[str | Path]) -> list[ModelSource]:
    """Models saved by :func:`~complexity_tracker.training.save_checkpoint`, named by file stem."""
    sources = []
    for path in paths:
        try:
            model, config = load_checkpoint(path)
        except ComplexityTrackerError as exc:
            raise ModelSourceError(str(exc)) from None
        sources.append(ModelSource(Path(path).stem, model, config))
    return sources


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def from_run(client: MlflowClient, run_id: str, name: str | None = None) -> ModelSource:
    """The model of one tracker run: its ``config.json`` and the weights of its logged ``model``."""
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            config = RunConfig.from_dict(json.loads(Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp))
                                                    .read_text()))
        with _tracking_uri(client.tracking_uri):
            logged = mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}", map_location="cpu")
    except (MlflowException, OSError) as exc:
        raise ModelSourceError(
            f"MLflow run {run_id} at {redact_url(client.tracking_uri)} has no usable model: {exc}. Runs of "
            "`complexity-tracker train` / studies log one (log_model=True); check --tracking-uri"
        ) from None
    data = load_data(config)
    model = build_model(config, data.input_shape, data.n_classes)
    try:
        model.load_state_dict(logged.state_dict())
    except RuntimeError as exc:
        raise ModelSourceError(f"the weights of run {run_id} do not fit its config.json: {exc}") from None
    return ModelSource(name or run.info.run_name or run_id[:8], model.eval(), config, run_id)


def from_runs(run_ids: Sequence[str], tracking_uri: str) -> list[ModelSource]:
    """Models of MLflow runs, named by run name."""
    client = MlflowClient(tracking_uri)
    return [from_run(client, run_id) for run_id in run_ids]


def open_study(study_name: str, storage: str) -> optuna.Study:
    """Load an existing study from a SQLite/PostgreSQL URL or a journal file (``journal:FILE``)."""
    target: str | optuna.storages.BaseStorage = storage
    if storage_kind(storage) == "journal":
        path = journal_path(storage)
        if not path.is_file():
            raise ModelSourceError(f"no journal file {path} for storage {storage!r}")
        target = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    try:
        return optuna.load_study(study_name=study_name, storage=target)
    except KeyError:
        names = optuna.get_all_study_names(target)
        raise ModelSourceError(
            f"no study {study_name!r} in {redact_url(storage)}; studies there: {', '.join(names) or 'none'}"
        ) from None


def select_trials(
    study: optuna.Study,
    *,
    top_k: int | None = None,
    quantiles: Sequence[float] | None = None,
    complexity_key: str = "H/network",
) -> list[FrozenTrial]:
    """The finished trials (with an MLflow run) of ``study``: all, the ``top_k`` best, or the ones
    nearest to the given ``quantiles`` of ``complexity_key`` (a trial user attribute, bits).

    Best means by the first objective in its direction (multi-objective studies too).  Returned
    in trial-number order for ``top_k``/all and in quantile order for ``quantiles``.
    """
    if top_k is not None and quantiles is not None:
        raise ModelSourceError("choose trials by top_k or by quantiles, not both")
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if RUN_ID_ATTR in t.user_attrs]
    if not trials:
        raise ModelSourceError(
            f"study {study.study_name!r} has no COMPLETE trial with an MLflow run ({RUN_ID_ATTR!r} user attribute)"
        )
    if top_k is not None:
        if top_k < 1:
            raise ModelSourceError(f"top_k must be >= 1, got {top_k}")
        sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
        best = sorted(trials, key=lambda t: (sign * t.values[0], t.number))[:top_k]
        return sorted(best, key=lambda t: t.number)
    if quantiles is not None:
        if not quantiles or any(not 0 <= q <= 1 for q in quantiles):
            raise ModelSourceError(f"quantiles must be numbers in [0, 1], got {list(quantiles)}")
        measured = [t for t in trials if math.isfinite(t.user_attrs.get(complexity_key, math.nan))]
        if not measured:
            raise ModelSourceError(
                f"no trial of study {study.study_name!r} records {complexity_key!r}; "
                f"recorded attributes: {sorted(trials[0].user_attrs)}"
            )
        measured.sort(key=lambda t: (t.user_attrs[complexity_key], t.number))
        picked = [measured[round(q * (len(measured) - 1))] for q in quantiles]
        return list({t.number: t for t in picked}.values())
    return sorted(trials, key=lambda t: t.number)


def from_study(
    study_name: str,
    storage: str,
    tracking_uri: str,
    *,
    top_k: int | None = None,
    quantiles: Sequence[float] | None = None,
    complexity_key: str = "H/network",
) -> tuple[list[ModelSource], str | None]:
    """Models of the selected trials (named ``trial-<number>``) and the study's MLflow parent run id."""
    study = open_study(study_name, storage)
    trials = select_trials(study, top_k=top_k, quantiles=quantiles, complexity_key=complexity_key)
    client = MlflowClient(tracking_uri)
    sources = [from_run(client, t.user_attrs[RUN_ID_ATTR], f"trial-{t.number}") for t in trials]
    return sources, study.user_attrs.get(PARENT_RUN_ATTR)


def evaluation_data(sources: Sequence[ModelSource]) -> DataSplits:
    """The data of the first model's config; every model must be configured for the same data."""
    if not sources:
        raise ModelSourceError("no models selected")
    first = sources[0].config
    for source in sources[1:]:
        differing = [f for f in DATA_FIELDS if getattr(source.config, f) != getattr(first, f)]
        if differing:
            details = ", ".join(f"{f}: {getattr(first, f)!r} vs {getattr(source.config, f)!r}" for f in differing)
            raise IncompatibleModelsError(
                f"{sources[0].name} and {source.name} were trained on different data ({details}); "
                "compare models of one dataset"
            )
    return load_data(first)
