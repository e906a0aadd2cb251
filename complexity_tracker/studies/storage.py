"""Optuna storages for studies: SQLite (one process), journal file (one machine), PostgreSQL (many).

Storage URLs:

* ``sqlite:///path/optuna.db``: the default for one worker process.
* ``journal:path/optuna.journal`` (or a path ending in ``.journal``): Optuna's
  ``JournalStorage(JournalFileBackend)``, safe for several processes on one machine; the default
  when ``--workers`` is above 1.
* ``postgresql://user@host:5432/db`` (any SQLAlchemy URL): for workers on several machines.

RDB storages (SQLite, PostgreSQL) get a heartbeat: a RUNNING trial whose worker stopped beating
for ``grace_period`` seconds is failed and its slot queued again (:class:`.budget.RetryStaleSlot`).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from ..errors import ComplexityTrackerError
from ..tracking_store import resolve_tracking_uri
from .budget import RetryStaleSlot
from .config import StudyConfigError, StudySettings

class StudyStorageError(ComplexityTrackerError):
    """The Optuna storage cannot be read or written (the message names the cause and the fix)."""


STORAGE_ENV = "COMPLEXITY_TRACKER_STORAGE"
DEFAULT_SQLITE_URL = "sqlite:///optuna.db"
DEFAULT_JOURNAL_URL = "journal:optuna.journal"
JOURNAL_PREFIX = "journal:"


def resolve_storage_url(explicit: str | None, settings: StudySettings, workers: int) -> str:
    """The storage URL: ``--storage``, else ``$COMPLEXITY_TRACKER_STORAGE``, else ``[study] storage``,
    else SQLite for one worker and the journal file for several."""
    return _chosen_storage_url(explicit, settings) or (DEFAULT_SQLITE_URL if workers == 1 else DEFAULT_JOURNAL_URL)


def _chosen_storage_url(explicit: str | None, settings: StudySettings) -> str | None:
    return explicit or os.environ.get(STORAGE_ENV) or settings.storage


def study_tracking_uri(explicit: str | None, settings: StudySettings) -> str:
    """The tracking URI: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``[study] tracking_uri``,
    else ``sqlite:///mlflow.db``."""
    return resolve_tracking_uri(explicit or os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri)


def storage_kind(url: str) -> str:
    """``"journal"``, ``"sqlite"``, ``"postgresql"`` or ``"rdb"`` (another SQLAlchemy database)."""
    if url.startswith(JOURNAL_PREFIX) or url.endswith(".journal"):
        return "journal"
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql:", "postgresql+", "postgres:")):
        return "postgresql"
    if "://" in url:
        return "rdb"
    raise StudyConfigError(
        f"storage {redact_url(url)!r} is not a storage URL: use sqlite:///FILE.db, journal:FILE.journal "
        "or postgresql://USER@HOST:PORT/DB"
    )


def journal_path(url: str) -> Path:
    """The journal file of a journal storage URL."""
    path = url[len(JOURNAL_PREFIX):] if url.startswith(JOURNAL_PREFIX) else url
    if path.startswith("//"):
        path = path[2:]
    return Path(path)


def check_workers_supported(url: str, workers: int) -> None:
    """SQLite locks the whole file: refuse it for several worker processes."""
    if workers > 1 and storage_kind(url) == "sqlite":
        raise StudyConfigError(
            f"storage {url!r} is SQLite, which is not safe for {workers} worker processes; "
            f"use --storage {DEFAULT_JOURNAL_URL} (one machine) or a postgresql:// URL (several machines)"
        )


def create_storage(url: str, settings: StudySettings, attempts: int = 5) -> BaseStorage:
    """Open (creating if needed) the storage at ``url`` with the study's heartbeat settings.

    Concurrent workers may create the tables at the same moment; a failed first connection is
    retried a few times before the error is raised (one line naming the cause).  A journal file is
    checked first (:func:`.journal_file.check_journal`): a torn last line is cut off after a backup.
    """
    kind = storage_kind(url)
    if kind == "journal":
        from .journal_file import check_journal

        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict = {"pool_pre_ping": True}
    if kind == "sqlite":
        database = _sqlite_file(url)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=settings.heartbeat_interval,
                    grace_period=settings.grace_period,
                    heartbeat_stale_trial_callback=RetryStaleSlot(settings.max_retry),
                )
        except ImportError as exc:
            raise StudyConfigError(
                f"storage {redact_url(url)!r} needs a database driver: pip install 'complexity-tracker[postgres]'"
            ) from exc
        except Exception as exc:  # sqlalchemy.exc.* while another worker creates the tables
            if attempt == attempts - 1:
                from .faults import storage_fault

                cause = storage_fault(exc) or f"cannot be opened ({exc})"
                raise StudyStorageError(f"storage {redact_url(url)} {cause}") from exc
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def dashboard_target(url: str) -> str:
    """What ``optuna-dashboard`` takes for this storage (a journal file's path, else the URL)."""
    return str(journal_path(url)) if storage_kind(url) == "journal" else url


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print and log)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None in memory)."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(path) if path and path != ":memory:" else None


def existing_storage_url(explicit: str | None, settings: StudySettings) -> str:
    """The storage of an existing study: as :func:`resolve_storage_url`, but without an explicit
    choice the default file (SQLite or journal) that exists, preferring the one ``workers`` implies."""
    url = _chosen_storage_url(explicit, settings)
    if url:
        return url
    defaults = [DEFAULT_SQLITE_URL, DEFAULT_JOURNAL_URL]
    if settings.workers > 1:
        defaults.reverse()
    for candidate in defaults:
        path = journal_path(candidate) if storage_kind(candidate) == "journal" else _sqlite_file(candidate)
        if path is not None and path.exists():
            return candidate
    raise StudyConfigError(
        f"no study storage found here ({DEFAULT_SQLITE_URL} or {DEFAULT_JOURNAL_URL} in {Path.cwd()}); "
        f"pass --storage URL or set {STORAGE_ENV}"
    )
