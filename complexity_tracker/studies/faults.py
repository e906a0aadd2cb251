"""Faults of a study's services, in one line each: the MLflow tracking server and the Optuna storage.

A trial that loses its tracking server is failed, its slot queued again (:mod:`.budget`), and its
worker stops with :class:`TrackingOutageError`; a storage that cannot be used stops the worker
with :class:`StudyStorageError` naming the root cause (read-only, locked, corrupt, unreachable).
Both are :class:`~complexity_tracker.errors.ComplexityTrackerError` (``study run`` exits 2).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator

import optuna
import sqlalchemy.exc

from ..errors import ComplexityTrackerError
from .journal_file import check_journal
from .storage import StudyStorageError, journal_path, redact_url, storage_kind

__all__ = ["StudyStorageError", "TrackingOutageError", "storage_errors", "storage_fault"]


class TrackingOutageError(ComplexityTrackerError, ConnectionError):
    """The tracking server stopped answering during the study; the trial's slot is queued again."""


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Raise errors of the storage at ``url`` as one-line :class:`StudyStorageError` naming the cause.

    A journal that Optuna cannot parse is checked again to name the damaged line.
    """
    try:
        yield
    except (ComplexityTrackerError, KeyboardInterrupt):
        raise
    except Exception as error:
        if storage_kind(url) == "journal" and isinstance(error, (ValueError, json.JSONDecodeError)):
            check_journal(journal_path(url))  # raises StudyStorageError naming the damaged line
        cause = storage_fault(error)
        if cause is None:
            raise
        raise StudyStorageError(f"storage {redact_url(url)} {cause}") from error


#: (text in the database's own error message, what it means, what to do).
_STORAGE_CAUSES = (
    ("readonly database", "is read-only", "make the file and its folder writable, or pass --storage with a "
     "writable location"),
    ("read-only", "is read-only", "make the database writable, or pass --storage with a writable location"),
    ("database is locked", "is locked by another process", "wait for or stop the process writing it; several "
     "workers need journal:FILE.journal or postgresql://"),
    ("file is not a database", "is corrupt", "restore it from a backup, or pass --storage "
     "with a new file for a new study"),
    ("malformed", "is corrupt", "restore it from a backup, or pass --storage with a new file for a new study"),
    ("unable to open database file", "cannot be opened", "check that its folder exists and is writable"),
    ("connection refused", "is unreachable", "start the database server or correct the URL"),
    ("could not connect", "is unreachable", "start the database server or correct the URL"),
    ("server closed the connection", "closed the connection", "check the database server, then run the same "
     "command again to resume"),
    ("terminating connection", "closed the connection", "check the database server, then run the same command "
     "again to resume"),
)


def storage_fault(error: BaseException) -> str | None:
    """``"<meaning> (<database's message>): <fix>"`` when ``error`` (or an exception it was raised
    from) comes from the database behind an Optuna storage; ``None`` for any other error.

    Optuna reports a failed commit as "... e.g. exceeding max length"; the database's own error,
    which it was raised from, names the real cause.
    """
    chain = _chain(error)
    if not any(isinstance(e, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                              sqlite3.Error)) for e in chain):
        return None
    root = next((e.orig for e in chain if isinstance(e, sqlalchemy.exc.DBAPIError) and e.orig is not None), chain[-1])
    message = " ".join(str(root).split()) or type(root).__name__
    for text, meaning, fix in _STORAGE_CAUSES:
        if text in message.lower():
            return f"{meaning} ({message}): {fix}"
    return f"failed ({type(root).__name__}: {message})"


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
