"""Build a study's sampler and pruner from its config, and create or load the study itself."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.storages import BaseStorage

from .budget import enqueue_slots, n_slots
from .config import StudyConfig, StudyConfigError

_POLL_S = 0.2

_SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "qmc": optuna.samplers.QMCSampler,
}
_PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
}


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The ``[study] sampler`` with its options.

    A grid study enqueues every cell with fixed parameters (:func:`.budget.enqueue_slots`), so no
    sampler ever picks its values; Optuna's ``GridSampler`` would only get in the way (its
    ``after_trial`` reads a ``grid_id`` that enqueued trials lack, and it stops studies on its own).
    """
    settings = config.study
    if settings.sampler == "grid":
        return _build("sampler", "grid", optuna.samplers.RandomSampler, settings.sampler_options)
    return _build("sampler", settings.sampler, _SAMPLERS[settings.sampler], settings.sampler_options)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The ``[study] pruner`` with its options; epochs are the pruner's steps."""
    settings = config.study
    options = dict(settings.pruner_options)
    if settings.pruner == "hyperband":
        options.setdefault("max_resource", config.base_run_config().epochs)
    return _build("pruner", settings.pruner, _PRUNERS[settings.pruner], options)


def _build(kind: str, name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factory(**options)
    except (TypeError, ValueError) as exc:
        raise StudyConfigError(f"[study] {kind} {name!r}: bad option in {dict(options)}: {exc}") from exc


def open_study(
    config: StudyConfig,
    storage: BaseStorage,
    wait_s: float = 120.0,
    prepare: Callable[[optuna.Study], None] | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study and enqueue its trial budget, or load it when it exists (a resume or a
    second worker).  Returns ``(study, created)``.

    Only the process whose ``create_study`` succeeds calls ``prepare(study)`` (e.g. to create the
    MLflow parent run) and then enqueues the slots; others wait (up to ``wait_s`` seconds) until
    the slots are there, so they see whatever ``prepare`` stored.  A larger ``n_trials`` than the
    stored one enqueues the extra slots; a smaller one is an error.
    """
    settings = config.study
    sampler, pruner = make_sampler(config), make_pruner(config)
    try:
        study = optuna.create_study(
            storage=storage, study_name=settings.name, directions=list(settings.directions),
            sampler=sampler, pruner=pruner,
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=settings.name, storage=storage, sampler=sampler, pruner=pruner)
        return _join(study, config, wait_s), False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(settings.objectives))
    if prepare is not None:
        prepare(study)
    enqueue_slots(study, config)
    return study, True


def join_study(
    config: StudyConfig, storage: BaseStorage, wait_s: float = 120.0, stop: Callable[[], bool] = lambda: False
) -> optuna.Study | None:
    """Load the study another process is creating or growing (a launcher's helper worker): wait up
    to ``wait_s`` seconds until it exists with the config's ``n_trials`` slots, so that only the
    launcher enqueues.  Returns None when ``stop()`` turns true while waiting."""
    deadline = time.monotonic() + wait_s
    study = None
    while not stop():
        if study is None:
            with contextlib.suppress(KeyError):
                study = optuna.load_study(
                    study_name=config.study.name, storage=storage,
                    sampler=make_sampler(config), pruner=make_pruner(config),
                )
        if study is not None and (n_slots(study) or 0) >= config.study.n_trials:
            return _join(study, config, wait_s=0.0)
        if time.monotonic() > deadline:
            raise StudyConfigError(
                f"study {config.study.name!r} did not appear with its trial budget within {wait_s:.0f} s"
            )
        time.sleep(_POLL_S)
    return None


def load_existing_study(config: StudyConfig, storage: BaseStorage) -> optuna.Study:
    """Load the study named in the config (for status, report and dashboard)."""
    try:
        return optuna.load_study(study_name=config.study.name, storage=storage)
    except KeyError as exc:
        raise StudyConfigError(
            f"no study named {config.study.name!r} in this storage; run `complexity-tracker study run` first "
            "or pass the storage it used with --storage"
        ) from exc


def _check_same_directions(study: optuna.Study, config: StudyConfig) -> None:
    stored = [d.name.lower() for d in study.directions]
    if stored != list(config.study.directions):
        raise StudyConfigError(
            f"study {config.study.name!r} exists with directions {stored}, the config asks for "
            f"{list(config.study.directions)}: change [study] name for a new study"
        )


def _join(study: optuna.Study, config: StudyConfig, wait_s: float) -> optuna.Study:
    """Check an existing study against the config once its slots are there; enqueue extra slots
    when the config asks for more trials."""
    settings = config.study
    _check_same_directions(study, config)
    stored = _wait_for_slots(study, wait_s)
    if settings.n_trials < stored:
        raise StudyConfigError(
            f"study {settings.name!r} already has n_trials={stored}; n_trials can only grow "
            f"(asked for {settings.n_trials}); use another [study] name for a smaller study"
        )
    if settings.n_trials > stored:
        enqueue_slots(study, config, start=stored)
    return study


def _wait_for_slots(study: optuna.Study, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    while (stored := n_slots(study)) is None:
        if time.monotonic() > deadline:
            raise StudyConfigError(
                f"study {study.study_name!r} has no trial budget after {wait_s:.0f} s: it was not created by "
                "complexity-tracker, or its creator died while enqueuing; use a new [study] name"
            )
        time.sleep(_POLL_S)
    return stored
