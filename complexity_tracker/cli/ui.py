"""``complexity-tracker ui``: the MLflow UI on the tracking store (default ``sqlite:///mlflow.db``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ComplexityTrackerError
from ..studies.storage import redact_url
from ..tracking_store import DEFAULT_TRACKING_URI, resolve_tracking_uri
from .server_process import serve


class UIError(ComplexityTrackerError, ValueError):
    """The UI cannot be started with the given store."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the MLflow UI (mlflow server) on a tracking store; stop it with Ctrl-C or SIGTERM."
    )
    parser.add_argument(
        "--backend-store-uri",
        default=None,
        help=f"tracking store to browse (default: MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI} "
        "in the working directory)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=port_number, default=5000, help="port (default: 5000)")
    parser.set_defaults(handler=run)


def port_number(text: str) -> int:
    """``type`` of a ``--port`` argument: an integer from 1 to 65535."""
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {port}")
    return port


def mlflow_ui_command(backend_store_uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line serving ``backend_store_uri`` on ``host:port``."""
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri", backend_store_uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]


def run(args: argparse.Namespace) -> int:
    store = resolve_tracking_uri(args.backend_store_uri)
    if store.startswith(("http://", "https://")):
        raise UIError(f"{store} is a tracking server, which serves the UI itself: open {store} in a browser")
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).exists():
        raise UIError(
            f"no tracking store at {store} (looked in {Path.cwd()}); train first "
            "(`complexity-tracker train`) or pass --backend-store-uri"
        )
    return serve(mlflow_ui_command(store, args.host, args.port), name=f"the MLflow UI of {redact_url(store)}",
                 host=args.host, port=args.port, ready_path="/health",
                 hint="check --backend-store-uri (e.g. sqlite:///mlflow.db, postgresql://user@host/db)")
