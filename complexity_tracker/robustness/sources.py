"""Trained models to compare, from checkpoint files, MLflow runs or an Optuna study.

Models are rebuilt with :func:`~complexity_tracker.models.build_model` from their run config so
that their ``nn.ReLU`` modules (the gates complexity is measured on) are real modules.  From a run
only formats that cannot run code are read: its ``config.json`` and the plain state_dict the
tracker logs (:data:`~complexity_tracker.tracking.STATE_DICT_ARTIFACT`), loaded with
``torch.load(..., weights_only=True)``.  The MLflow model itself is never loaded: a run on a shared
server could hold a pickle there, and unpickling runs code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import optuna
import torch
from mlflow.entities import Run
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
from ..tracking import LOGGED_COMPLEXITY, STATE_DICT_ARTIFACT
from ..training import load_checkpoint
from .errors import IncompatibleModelsError, ModelSourceError

#: Artifact written by the tracker with the run's :class:`RunConfig`.
CONFIG_ARTIFACT = "config.json"
#: Run configuration fields that decide the data split; models compared together must agree, so
#: that no model is attacked on samples it was trained on.
DATA_FIELDS = ("dataset", "data_dir", "task_order", "synthetic_dim", "data_seed", "n_train", "n_test")
#: Prefixes of the complexity metrics (bits) a tracker run logs per layer and for the network.
COMPLEXITY_PREFIXES = tuple(f"{name}/" for name in (*LOGGED_COMPLEXITY, "I_XS"))


@dataclass
class LoggedComplexity:
    """The complexity (bits) a run logged at its last measured epoch, on its own probe."""

    values: dict[str, float]
    epoch: int
    probe_size: str
    estimator: str

    def describe(self) -> str:
        return f"logged by the run at epoch {self.epoch} (its probe of {self.probe_size} samples, {self.estimator})"


@dataclass
class ModelSource:
    """A trained model with the configuration it was trained with and, if any, its MLflow run
    and the complexity that run logged."""

    name: str
    model: nn.Module
    config: RunConfig
    run_id: str | None = None
    logged: LoggedComplexity | None = field(default=None, repr=False)


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


def _quiet_downloads() -> contextlib.AbstractContextManager:
    """No MLflow "Downloading artifacts" progress bars (MLflow reads the variable at each download)."""
    return mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})


def load_state_dict(path: Path, run_id: str) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file, read with ``weights_only=True``; anything else is refused."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(
            f"refused the weights of MLflow run {run_id} ({STATE_DICT_ARTIFACT}): not a plain state_dict of "
            f"tensors, and loading it any other way could run code ({reason}); re-log the model with "
            "ComplexityTracker.log_state_dict"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelSourceError(
            f"refused the weights of MLflow run {run_id} ({STATE_DICT_ARTIFACT}): expected a mapping of "
            f"parameter names to tensors, got {type(state).__name__}; re-log the model with "
            "ComplexityTracker.log_state_dict"
        )
    return dict(state)


def logged_complexity(client: MlflowClient, run: Run) -> LoggedComplexity | None:
    """The complexity metrics of ``run`` at its last measured epoch (``None`` when it logged none)."""
    metrics = run.data.metrics
    values = {k: float(v) for k, v in metrics.items() if k.startswith(COMPLEXITY_PREFIXES)}
    if "H/network" not in values:
        return None
    epoch = max(m.step for m in client.get_metric_history(run.info.run_id, "H/network"))
    params = run.data.params
    return LoggedComplexity(values, epoch, params.get("tracker.probe_size", "?"),
                            params.get("tracker.estimator", "?"))


def from_run(client: MlflowClient, run_id: str, name: str | None = None) -> ModelSource:
    """The model of one tracker run, rebuilt from its ``config.json`` and its state_dict artifact."""
    where = f"MLflow run {run_id} at {redact_url(client.tracking_uri)}"
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ModelSourceError(f"{where} cannot be read: {exc.message}; check the run id and --tracking-uri") from None
    try:
        with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
            config = RunConfig.from_dict(json.loads(Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp))
                                                    .read_text()))
            state = load_state_dict(Path(client.download_artifacts(run_id, STATE_DICT_ARTIFACT, tmp)), run_id)
    except (MlflowException, OSError) as exc:
        raise ModelSourceError(
            f"{where} has no usable model: it lacks {CONFIG_ARTIFACT} or {STATE_DICT_ARTIFACT} ({exc}). Runs of "
            "`complexity-tracker train` and of studies log both unless model logging is off; older runs "
            "carry only an MLflow model, which is not loaded because "
            "unpickling it could run code: train them again"
        ) from None
    data = load_data(config)
    model = build_model(config, data.input_shape, data.n_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelSourceError(
            f"the weights of run {run_id} do not fit the {config.model} of its {CONFIG_ARTIFACT} "
            f"({' '.join(first[:2])[:300]}); the run's artifacts were changed after training"
        ) from None
    return ModelSource(name or run.info.run_name or run_id[:8], model.eval(), config, run_id,
                       logged_complexity(client, run))


def logged_complexities(sources: Sequence[ModelSource]) -> tuple[dict[str, dict[str, float]], str]:
    """name -> the complexity (bits) each model's run logged, and a sentence saying what it is."""
    missing = [s.name for s in sources if s.logged is None]
    if missing:
        raise ModelSourceError(
            f"{', '.join(missing)} logged no complexity (no H/network metric): measure it on a probe instead "
            "(evaluate --remeasure)"
        )
    described = {s.logged.describe() for s in sources}
    if len(described) == 1:
        text = described.pop()
    else:
        text = "logged by each run at its last measured epoch, on its own probe (" + "; ".join(
            f"{s.name}: epoch {s.logged.epoch}, {s.logged.probe_size} samples, {s.logged.estimator}" for s in sources
        ) + ")"
    return {s.name: s.logged.values for s in sources}, text


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
