"""Where runs are tracked: the tracking URI and a reachability check for tracking servers.

Kept apart from :mod:`.tracking` so that code choosing a tracking store (the CLI before it starts
worker processes) does not import MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from .errors import ComplexityTrackerError

#: Tracking store used when neither an argument nor ``MLFLOW_TRACKING_URI`` names one.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: MLflow experiment of runs that name none.
DEFAULT_EXPERIMENT = "complexity-tracker"


class TrackingServerUnreachableError(ComplexityTrackerError, ConnectionError):
    """The MLflow tracking server named by the tracking URI does not answer."""


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use: the argument, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

    A relative SQLite path is made absolute (against the current directory): MLflow caches one
    store per URI string, so a relative one would keep pointing at the first directory it was used in.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        uri = prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


def check_tracking_server(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when an ``http(s)://`` tracking server does not answer within ``timeout_s``.

    MLflow's own client retries for minutes before giving up; this probes the server's
    ``/health`` endpoint once.  Other URIs (``sqlite:``, ``postgresql:``, ...) are not checked here.

    Raises:
        TrackingServerUnreachableError: no connection, a timeout, or a server error (5xx).
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    health = tracking_uri.rstrip("/") + "/health"
    try:
        response = requests.get(health, timeout=timeout_s)
    except requests.RequestException as exc:
        reason = f"{type(exc).__name__}: {exc}"
    else:
        if response.status_code < 500:
            return
        reason = f"HTTP {response.status_code} from {health}"
    raise TrackingServerUnreachableError(
        f"cannot reach the MLflow tracking server at {tracking_uri} within {timeout_s:g} s ({reason}). "
        "Start it (e.g. `mlflow server --host 127.0.0.1 --port 5000`), correct the tracking URI "
        "(argument or MLFLOW_TRACKING_URI), or unset it to use the embedded store "
        f"{DEFAULT_TRACKING_URI}."
    )
