"""Where runs are tracked: the tracking URI and a reachability check for tracking servers.

Kept apart from :mod:`.tracking` so that code choosing a tracking store (the CLI before it starts
worker processes) does not import MLflow.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from .errors import ComplexityTrackerError

#: Tracking store used when neither an argument nor ``MLFLOW_TRACKING_URI`` names one.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: MLflow experiment of runs that name none.
DEFAULT_EXPERIMENT = "complexity-tracker"
#: Environment variable: seconds over which MLflow's client retries a request to a tracking server.
TRACKING_RETRY_ENV = "COMPLEXITY_TRACKER_TRACKING_RETRY_S"
DEFAULT_TRACKING_RETRY_S = 60.0
_MAX_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
_BACKOFF_FACTOR_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
#: The ``NAME=value`` pairs bound_tracking_retries wrote, so a later budget replaces them but not the user's.
_RETRIES_SET_ENV = "COMPLEXITY_TRACKER_MLFLOW_RETRIES_SET"
_log = logging.getLogger(__name__)
_QUOTES = "'\")"


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


def tracking_server_answers(tracking_uri: str, timeout_s: float = 2.0) -> bool:
    """Whether the tracking server answers its ``/health`` probe (always True for other URIs)."""
    try:
        check_tracking_server(tracking_uri, timeout_s)
    except TrackingServerUnreachableError:
        return False
    return True


def bound_tracking_retries(tracking_uri: str) -> float:
    """Make MLflow's HTTP client give up on a tracking server that stopped answering after about a
    minute, and say so in one line as soon as it starts retrying.

    MLflow retries a failed request 7 times with a backoff factor of 2 (about 4 minutes per
    request, and a trial makes several).  The total is ``$COMPLEXITY_TRACKER_TRACKING_RETRY_S``
    seconds (default 60): ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
    ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` are set so that urllib3's backoff sleeps (0, 2f, 4f, ...)
    add up to at most that total (plus MLflow's jitter of up to 1 s per retry); MLflow variables
    the user set are kept.  Returns the retry total in seconds.
    """
    total_s = float(os.environ.get(TRACKING_RETRY_ENV, DEFAULT_TRACKING_RETRY_S))
    factor = max(1, round(total_s / 30))
    retries = 0 if total_s < 1 else min(10, int(math.log2(total_s / factor + 2)))
    # Values an earlier call wrote (in this process or a parent) follow the current budget; the user's own stay.
    written_before = os.environ.get(_RETRIES_SET_ENV, "").split(";")
    written = []
    for name, value in ((_MAX_RETRIES_ENV, retries), (_BACKOFF_FACTOR_ENV, factor)):
        if name not in os.environ or f"{name}={os.environ[name]}" in written_before:
            os.environ[name] = str(value)
            written.append(f"{name}={value}")
    os.environ[_RETRIES_SET_ENV] = ";".join(written)
    retries, factor = int(os.environ[_MAX_RETRIES_ENV]), float(os.environ[_BACKOFF_FACTOR_ENV])
    bounded = factor * (2**retries - 2) if retries > 1 else 0.0
    _RETRY_WARNING.watch(tracking_uri, bounded)
    return bounded


class _RetryWarning(logging.Filter):
    """Filter on urllib3's connection-pool logger: its first "Retrying ..." record of an outage
    becomes one warning naming the tracking server; the rest of the outage's records are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.tracking_uri = ""
        self.total_s = DEFAULT_TRACKING_RETRY_S
        self._last = -math.inf

    def watch(self, tracking_uri: str, total_s: float) -> None:
        self.tracking_uri, self.total_s = tracking_uri, total_s
        logger = logging.getLogger("urllib3.connectionpool")
        if self not in logger.filters:
            logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Retrying"):
            return True
        now = time.monotonic()
        if now - self._last > self.total_s + 5:
            cause = str(record.args[1]).rsplit(": ", 1)[-1] if len(record.args or ()) > 1 else "no answer"
            _log.warning(
                "complexity-tracker: warning: the MLflow tracking server %s does not answer (%s); retrying for up "
                "to %.0f s (%s)", self.tracking_uri, cause.strip(_QUOTES), self.total_s, TRACKING_RETRY_ENV,
            )
        self._last = now
        return False


_RETRY_WARNING = _RetryWarning()


@contextlib.contextmanager
def single_attempt() -> Iterator[None]:
    """MLflow HTTP requests in this block are tried once, without retries (clean-up after an outage)."""
    previous = os.environ.get(_MAX_RETRIES_ENV)
    os.environ[_MAX_RETRIES_ENV] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[_MAX_RETRIES_ENV]
        else:
            os.environ[_MAX_RETRIES_ENV] = previous


def tracking_outage(error: BaseException) -> str | None:
    """One line saying why the tracking server did not answer, when ``error`` (or an exception it
    was raised from) is a connection failure or a timeout; ``None`` for any other error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TrackingServerUnreachableError):
            return str(current)
        if isinstance(current, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
            return f"{type(current).__name__}: {str(current).rsplit(': ', 1)[-1].strip(_QUOTES)}"
        current = current.__cause__ or current.__context__
    return None
