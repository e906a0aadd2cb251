"""``complexity-tracker dashboard``: optuna-dashboard on a study's storage, bound to 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ..studies.config import load_study_config
from ..studies.storage import STORAGE_ENV, dashboard_target, existing_storage_url, redact_url, storage_kind
from .server_process import serve
from .ui import UIError, port_number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve optuna-dashboard on the storage of a study config (or --storage); stop it with Ctrl-C or SIGTERM."
    )
    parser.add_argument("config", nargs="?", help="study config whose storage to open (e.g. studies/quickstart.toml)")
    parser.add_argument("--storage", help=f"Optuna storage URL (default: ${STORAGE_ENV}, the config's storage, "
                        "else the default SQLite/journal file found here)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=port_number, default=8080, help="port (default: 8080)")
    parser.set_defaults(handler=run)


def dashboard_command(storage_url: str, host: str, port: int) -> list[str]:
    """The ``optuna-dashboard`` command line serving ``storage_url`` on ``host:port``."""
    executable = Path(sys.executable).with_name("optuna-dashboard")
    program = str(executable) if executable.exists() else shutil.which("optuna-dashboard")
    if program is None:
        raise UIError("optuna-dashboard is not installed: pip install 'complexity-tracker[dashboard]'")
    storage_class = "JournalFileStorage" if storage_kind(storage_url) == "journal" else "RDBStorage"
    return [program, dashboard_target(storage_url), "--storage-class", storage_class,
            "--host", host, "--port", str(port)]


def run(args: argparse.Namespace) -> int:
    if args.config is not None:
        storage_url = existing_storage_url(args.storage, load_study_config(args.config).study)
    else:
        storage_url = args.storage or os.environ.get(STORAGE_ENV)
    if not storage_url:
        raise UIError(f"give a study config (e.g. studies/quickstart.toml), --storage URL or ${STORAGE_ENV}")
    command = dashboard_command(storage_url, args.host, args.port)
    return serve(command, name=f"optuna-dashboard of {redact_url(storage_url)}", host=args.host, port=args.port,
                 ready_path="/api/studies",
                 hint="check --storage (e.g. sqlite:///optuna.db, journal:optuna.journal)")
