"""Study configuration files (TOML): ``[study]`` settings, ``[run]`` base run, ``[search]`` space.

A study config is read with :func:`load_study_config` and validated completely before anything
runs; every error is a :class:`StudyConfigError` naming the table and field at fault.

Example::

    [study]
    name = "lambda_depth"
    objectives = ["test_loss", "loss_gap"]
    n_trials = 24

    [run]
    dataset = "digits"
    epochs = 10
    loss_method = "marginal"

    [search]
    log10_lam = { low = -5.0, high = -2.0, include_zero = true }
    depth = [2, 3, 4, 6]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig

#: Objectives read from the last epoch's metrics (``training.EpochResult.metrics``); prunable.
EPOCH_OBJECTIVES = ("test_loss", "train_loss", "loss_gap", "test_acc", "train_acc")
#: Objectives read from the final complexity report (bits); not prunable.
COMPLEXITY_OBJECTIVES = ("H/network", "I_XSY/network", "I_XS/network")
OBJECTIVES = EPOCH_OBJECTIVES + COMPLEXITY_OBJECTIVES
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random", "grid", "nsga2", "qmc")
PRUNERS = ("none", "median", "percentile", "hyperband", "successive_halving")
#: Search key meaning "complexity-loss weight on a log10 scale" (``RunConfig.from_dict`` accepts it).
LOG10_LAM = "log10_lam"
#: Categorical companion of a continuous ``log10_lam`` range with ``include_zero``: True means lam = 0.
LAM_IS_ZERO = "lam_is_zero"
_UNSEARCHABLE = ("extra", "loss_layers", "lam", "data_dir", "device")
_PARAM_KEYS = ("low", "high", "step", "log", "choices", "include_zero")
_STUDY_KEYS = (
    "name", "objective", "objectives", "direction", "directions", "n_trials", "sampler", "pruner",
    "storage", "tracking_uri", "experiment", "workers", "heartbeat_interval", "grace_period", "max_retry",
)


class StudyConfigError(ConfigError):
    """A study config file is missing, unreadable, or has a bad field (the message names it)."""


@dataclass(frozen=True)
class SearchParam:
    """One searched setting: a ``RunConfig`` field name (or ``log10_lam``) and its range or choices.

    Exactly one of ``choices`` or (``low``, ``high``) is set.  ``include_zero`` (only for
    ``log10_lam``) adds the run without complexity loss (lam = 0) to the space: as the choice
    ``None`` for choices, as the categorical parameter ``lam_is_zero`` for a range.
    """

    name: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    include_zero: bool = False
    is_int: bool = False

    def grid_values(self) -> tuple[Any, ...]:
        """The values a grid search visits (choices only; ranges are not griddable)."""
        if self.choices is None:
            raise StudyConfigError(
                f"search.{self.name}: the grid sampler needs a list of values, e.g. {self.name} = [1, 2, 3]"
            )
        return ((None,) if self.include_zero else ()) + self.choices


@dataclass(frozen=True)
class StudySettings:
    """The ``[study]`` table.

    Attributes:
        name: study name in the Optuna storage; running the same name again resumes it.
        objectives: metric names optimised (see :data:`OBJECTIVES`); two or more = multi-objective.
        directions: ``"minimize"`` / ``"maximize"`` per objective.
        n_trials: total trials of the study over all workers (for the grid sampler: the grid size).
        sampler, sampler_options: Optuna sampler name and keyword arguments.
        pruner, pruner_options: Optuna pruner name and keyword arguments (single objective only).
        storage: Optuna storage URL (``None``: the embedded default, see :mod:`.storage`).
        tracking_uri: MLflow tracking URI (``None``: ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
        experiment: MLflow experiment name (default: the study name).
        workers: worker processes started by ``study run`` on this machine.
        heartbeat_interval, grace_period: seconds; a RUNNING trial without a heartbeat for
            ``grace_period`` is failed and retried (RDB storages: SQLite, PostgreSQL).
        max_retry: how often a slot is run again after a fault: its worker died, or its tracking
            server or storage failed (interruptions do not count; see :mod:`.budget`).
    """

    name: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    n_trials: int
    sampler: str = "tpe"
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    pruner: str = "none"
    pruner_options: Mapping[str, Any] = field(default_factory=dict)
    storage: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    workers: int = 1
    heartbeat_interval: int = 10
    grace_period: int | None = None
    max_retry: int = 3

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name


@dataclass(frozen=True)
class StudyConfig:
    """A validated study config: settings, the base run and the search space."""

    study: StudySettings
    run: Mapping[str, Any]
    search: tuple[SearchParam, ...]

    def base_run_config(self) -> RunConfig:
        return RunConfig.from_dict(dict(self.run))

    def run_config(self, params: Mapping[str, Any]) -> RunConfig:
        """The run of one trial: ``[run]`` overridden by the trial's parameters.

        ``lam_is_zero=True`` or ``log10_lam=None`` means lam = 0; the complexity loss is then
        switched off (``loss_method="none"``) so that the run is the paper's "no loss" baseline.
        """
        values = dict(self.run)
        values.update({k: v for k, v in params.items() if k != LAM_IS_ZERO})
        if params.get(LAM_IS_ZERO):
            values[LOG10_LAM] = None
        config = RunConfig.from_dict(values)
        if config.lam == 0.0:
            config = config.replace(loss_method="none")
        return config

    def grid(self) -> list[dict[str, Any]]:
        """Every cell of the grid (the cartesian product of the choices), in a fixed order."""
        names = [p.name for p in self.search]
        return [dict(zip(names, cell)) for cell in itertools.product(*(p.grid_values() for p in self.search))]

    def with_n_trials(self, n_trials: int | None) -> StudyConfig:
        """This config with another trial budget (``None``: unchanged); a grid's budget is its size."""
        if n_trials is None or n_trials == self.study.n_trials:
            return self
        if self.study.sampler == "grid":
            raise StudyConfigError(
                f"--n-trials {n_trials}: the grid of study {self.study.name!r} has {self.study.n_trials} cells "
                "and runs each once; leave --n-trials out"
            )
        _check_int(n_trials, "--n-trials", minimum=1)
        return dataclasses.replace(self, study=dataclasses.replace(self.study, n_trials=n_trials))

    def searched(self, name: str) -> bool:
        return any(p.name == name for p in self.search)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study config file (TOML)."""
    path = Path(path)
    if not path.is_file():
        raise StudyConfigError(f"study config {str(path)!r} does not exist (see studies/*.toml for examples)")
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise StudyConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return parse_study_config(document)
    except StudyConfigError as exc:
        raise StudyConfigError(f"{path}: {exc}") from exc


def parse_study_config(document: Mapping[str, Any]) -> StudyConfig:
    """Validate a parsed document (the tables ``study``, ``run``, ``search``)."""
    unknown = sorted(set(document) - {"study", "run", "search"})
    if unknown:
        raise StudyConfigError(f"unknown table(s) {unknown}; a study config has [study], [run] and [search]")
    run = _table(document, "run")
    try:
        base = RunConfig.from_dict(run)
    except ConfigError as exc:
        raise StudyConfigError(f"[run]: {exc}") from exc
    searched = _table(document, "search")
    if LOG10_LAM in searched and base.loss_method == "none":  # before each value is checked against the run
        raise StudyConfigError(
            "[search] log10_lam needs a complexity loss: set [run] loss_method to ebm, kde or marginal "
            "(runs with lam = 0 switch it off by themselves)"
        )
    search = tuple(_parse_param(name, spec, run) for name, spec in searched.items())
    if not search:
        raise StudyConfigError("[search] is empty: name at least one run setting to search, e.g. depth = [2, 4]")
    study = _parse_study(_table(document, "study"), search)
    if study.pruner != "none" and base.epochs < 2:
        raise StudyConfigError("[study] pruner needs [run] epochs >= 2 (it compares trials epoch by epoch)")
    return StudyConfig(study=study, run=dict(run), search=search)


def _table(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise StudyConfigError(f"{name} must be a table ([{name}]), got {type(table).__name__}")
    return dict(table)


def _parse_study(table: dict[str, Any], search: Sequence[SearchParam]) -> StudySettings:
    unknown = sorted(set(table) - set(_STUDY_KEYS))
    if unknown:
        raise StudyConfigError(f"[study] unknown field(s) {unknown}; known: {', '.join(_STUDY_KEYS)}")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StudyConfigError("[study] name is required: a non-empty string (the study's name in the storage)")
    objectives = _one_or_many(table, "objective", "objectives", default=("test_loss",))
    for objective in objectives:
        if objective not in OBJECTIVES:
            raise StudyConfigError(f"[study] objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise StudyConfigError(f"[study] objectives {list(objectives)} name the same metric twice")
    default_directions = tuple("maximize" if o.endswith("_acc") else "minimize" for o in objectives)
    directions = _one_or_many(table, "direction", "directions", default=default_directions)
    if len(directions) != len(objectives):
        raise StudyConfigError(
            f"[study] directions has {len(directions)} entries but objectives has {len(objectives)}: give one per objective"
        )
    for direction in directions:
        if direction not in DIRECTIONS:
            raise StudyConfigError(f"[study] direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    sampler, sampler_options = _named_options(table, "sampler", SAMPLERS, "tpe")
    pruner, pruner_options = _named_options(table, "pruner", PRUNERS, "none")
    if pruner != "none":
        if len(objectives) > 1:
            raise StudyConfigError(
                "[study] pruner works with one objective only (Optuna cannot prune multi-objective trials); "
                "set pruner = \"none\" or a single objective"
            )
        if objectives[0] not in EPOCH_OBJECTIVES:
            raise StudyConfigError(
                f"[study] pruner needs an objective measured every epoch ({', '.join(EPOCH_OBJECTIVES)}), "
                f"got {objectives[0]!r}"
            )
    n_trials = table.get("n_trials")
    if sampler == "grid":
        grid_size = math.prod(len(p.grid_values()) for p in search)
        if n_trials is not None and n_trials != grid_size:
            raise StudyConfigError(
                f"[study] n_trials={n_trials} but the grid has {grid_size} cells; "
                "leave n_trials out for a grid (it runs every cell once)"
            )
        n_trials = grid_size
    _check_int(n_trials, "[study] n_trials", minimum=1)
    for key in ("storage", "tracking_uri", "experiment"):
        if table.get(key) is not None and not isinstance(table[key], str):
            raise StudyConfigError(f"[study] {key} must be a string, got {table[key]!r}")
    workers = table.get("workers", 1)
    _check_int(workers, "[study] workers", minimum=1)
    heartbeat_interval = table.get("heartbeat_interval", 10)
    _check_int(heartbeat_interval, "[study] heartbeat_interval (seconds)", minimum=1)
    grace_period = table.get("grace_period")
    if grace_period is not None:
        _check_int(grace_period, "[study] grace_period (seconds)", minimum=heartbeat_interval + 1)
    max_retry = table.get("max_retry", 3)
    _check_int(max_retry, "[study] max_retry", minimum=0)
    return StudySettings(
        name=name, objectives=objectives, directions=directions, n_trials=n_trials,
        sampler=sampler, sampler_options=sampler_options, pruner=pruner, pruner_options=pruner_options,
        storage=table.get("storage"), tracking_uri=table.get("tracking_uri"), experiment=table.get("experiment"),
        workers=workers, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry,
    )


def _one_or_many(table: dict[str, Any], single: str, plural: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if single in table and plural in table:
        raise StudyConfigError(f"[study] give either {single} or {plural}, not both")
    if single in table:
        if not isinstance(table[single], str):
            raise StudyConfigError(f"[study] {single} must be a string, got {table[single]!r}")
        return (table[single],)
    if plural in table:
        values = table[plural]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise StudyConfigError(f"[study] {plural} must be a non-empty list of strings, got {values!r}")
        return tuple(values)
    return default


def _named_options(table: dict[str, Any], key: str, allowed: Sequence[str], default: str) -> tuple[str, dict]:
    """``key = "name"`` or ``key = { name = "...", option = value, ... }``."""
    value = table.get(key, default)
    options: dict[str, Any] = {}
    if isinstance(value, dict):
        options = dict(value)
        value = options.pop("name", None)
    if value not in allowed:
        raise StudyConfigError(
            f"[study] {key} {value!r} is not one of {', '.join(allowed)} "
            f"(write {key} = \"{allowed[0]}\" or {key} = {{ name = \"{allowed[0]}\", ... }})"
        )
    return value, options


def _check_int(value: Any, label: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise StudyConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")


def _parse_param(name: str, spec: Any, run: Mapping[str, Any]) -> SearchParam:
    label = f"search.{name}"
    searchable = sorted({f for f in RunConfig.__dataclass_fields__ if f not in _UNSEARCHABLE} | {LOG10_LAM})
    if name not in searchable:
        hint = " (search log10_lam for the complexity-loss weight)" if name == "lam" else ""
        raise StudyConfigError(f"{label}: {name!r} cannot be searched{hint}; searchable: {', '.join(searchable)}")
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise StudyConfigError(
            f"{label} must be a list of values or a table {{ low = ..., high = ... }}, got {spec!r}"
        )
    unknown = sorted(set(spec) - set(_PARAM_KEYS))
    if unknown:
        raise StudyConfigError(f"{label}: unknown key(s) {unknown}; known: {', '.join(_PARAM_KEYS)}")
    include_zero = spec.get("include_zero", False)
    if not isinstance(include_zero, bool):
        raise StudyConfigError(f"{label}.include_zero must be true or false, got {include_zero!r}")
    if include_zero and name != LOG10_LAM:
        raise StudyConfigError(f"{label}.include_zero only applies to log10_lam (it adds lam = 0)")
    if "choices" in spec:
        if set(spec) - {"choices", "include_zero"}:
            raise StudyConfigError(f"{label}: give either choices (a list) or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise StudyConfigError(f"{label}: choices must be a non-empty list, got {choices!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise StudyConfigError(f"{label}: choices {choices} repeat a value")
        for choice in choices:
            _check_run_value(label, name, choice, run)
        return SearchParam(name=name, choices=tuple(choices), include_zero=include_zero)
    low, high = spec.get("low"), spec.get("high")
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StudyConfigError(f"{label}.{bound} must be a number, got {value!r} (or give choices = [...])")
    if not low < high:
        raise StudyConfigError(f"{label}: low={low} must be below high={high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise StudyConfigError(f"{label}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise StudyConfigError(f"{label}: log = true needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise StudyConfigError(f"{label}.step must be a number > 0, got {step!r}")
    if step is not None and log:
        raise StudyConfigError(f"{label}: step and log = true cannot be combined (Optuna forbids it)")
    is_int = name != LOG10_LAM and RunConfig.__dataclass_fields__[name].type == "int"
    if is_int and not all(isinstance(v, int) for v in (low, high, step or 1)):
        raise StudyConfigError(f"{label} is an integer setting: low, high and step must be integers")
    if not is_int and name != LOG10_LAM and RunConfig.__dataclass_fields__[name].type != "float":
        raise StudyConfigError(f"{label} is not numeric: give its values as a list, e.g. {name} = [...]")
    param = SearchParam(name=name, low=low, high=high, step=step, log=log, include_zero=include_zero, is_int=is_int)
    for value in (low, high):
        _check_run_value(label, name, value, run)
    return param


def _check_run_value(label: str, name: str, value: Any, run: Mapping[str, Any]) -> None:
    """The base run with ``name = value`` must be a valid run."""
    try:
        RunConfig.from_dict({**run, name: value})
    except (ConfigError, TypeError, ValueError) as exc:
        raise StudyConfigError(f"{label}: value {value!r} gives an invalid run: {exc}") from exc
