"""Commands the CLI prints for the user to run next.

A printed command must run exactly as printed, from any directory and without an activated
virtual environment: it names this program by its absolute path, every file by its absolute path
and every store it needs by a flag.  Passwords are never printed: a URL holding one is printed
without it, and :func:`credential_note` says which environment variable supplies it instead.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

from ..tracking_store import resolve_tracking_uri

PROGRAM = "complexity-tracker"
_PASSWORD = re.compile(r"(://[^:/@]+):[^@]*@")
_USER_INFO = re.compile(r"://[^/@]+@")


def program() -> list[str]:
    """The command that runs this program: the console script that is running (absolute), else the
    one beside this Python, else ``python -m complexity_tracker.cli.main`` with this Python."""
    invoked = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if invoked is not None and invoked.name == PROGRAM and invoked.is_file():
        return [str(invoked.absolute())]
    beside_python = Path(sys.executable).absolute().with_name(PROGRAM)
    if beside_python.is_file():
        return [str(beside_python)]
    return [str(Path(sys.executable).absolute()), "-m", "complexity_tracker.cli.main"]


def command(*args: str | Path) -> str:
    """A shell command line running this program with ``args`` (quoted where needed)."""
    return shlex.join([*program(), *(str(arg) for arg in args)])


def absolute_path(path: str | Path) -> str:
    """``path`` made absolute against the working directory (symlinks kept)."""
    return str(Path(path).absolute())


def tracking_uri(uri: str) -> str:
    """A tracking URI with a relative SQLite file made absolute, and without its password (a tracking
    server's user name goes too: MLflow takes both from MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    uri = resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        return _USER_INFO.sub("://", uri)
    return _PASSWORD.sub(r"\1@", uri)


def storage_url(url: str) -> str:
    """An Optuna storage URL with a relative SQLite or journal file made absolute, and without its password."""
    from ..studies.storage import JOURNAL_PREFIX, journal_path, storage_kind

    if storage_kind(url) == "journal":
        return JOURNAL_PREFIX + str(journal_path(url).absolute())
    return tracking_uri(url) if url.startswith("sqlite:") else _PASSWORD.sub(r"\1@", url)


def credential_note(urls: Iterable[str]) -> str | None:
    """A line saying where the passwords left out of the printed ``urls`` come from (None if none)."""
    sources = []
    for url in urls:
        if not _PASSWORD.search(url):
            continue
        if url.startswith(("http://", "https://")):
            sources.append("MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD for the tracking server")
        else:
            sources.append("PGPASSWORD (or ~/.pgpass) for the database")
    if not sources:
        return None
    return f"(passwords are not printed: set {' and '.join(dict.fromkeys(sources))} before running these)"
