"""Optuna studies over training runs: configs, storages, the objective, workers and reports.

Launch with ``complexity-tracker study run studies/quickstart.toml``; see docs/studies.md.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "EpochPruning": ".objective",
    "SearchParam": ".config",
    "StudyConfig": ".config",
    "StudyConfigError": ".config",
    "StudyObjective": ".objective",
    "StudyOutcome": ".runner",
    "StudySettings": ".config",
    "create_storage": ".storage",
    "format_table": ".report",
    "load_existing_study": ".factory",
    "load_study_config": ".config",
    "open_study": ".factory",
    "parse_study_config": ".config",
    "resolve_storage_url": ".storage",
    "run_study": ".runner",
    "run_worker": ".runner",
    "trial_rows": ".report",
    "write_report": ".report",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
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

if TYPE_CHECKING:
    from .config import SearchParam, StudyConfig, StudyConfigError, StudySettings, load_study_config, parse_study_config
    from .factory import load_existing_study, open_study
    from .objective import EpochPruning, StudyObjective
    from .report import format_table, trial_rows, write_report
    from .runner import StudyOutcome, run_study, run_worker
    from .storage import create_storage, resolve_storage_url
