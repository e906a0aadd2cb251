"""Optuna studies over training runs: configs, storages, the objective, workers and reports.

Launch with ``complexity-tracker study run studies/quickstart.toml``; see docs/studies.md.
"""

from .config import SearchParam, StudyConfig, StudyConfigError, StudySettings, load_study_config, parse_study_config
from .factory import load_existing_study, open_study
from .objective import EpochPruning, StudyObjective
from .report import format_table, trial_rows, write_report
from .runner import StudyOutcome, run_study, run_worker
from .storage import create_storage, resolve_storage_url

__all__ = [
    "EpochPruning",
    "SearchParam",
    "StudyConfig",
    "StudyConfigError",
    "StudyObjective",
    "StudyOutcome",
    "StudySettings",
    "create_storage",
    "format_table",
    "load_existing_study",
    "load_study_config",
    "open_study",
    "parse_study_config",
    "resolve_storage_url",
    "run_study",
    "run_worker",
    "trial_rows",
    "write_report",
]
