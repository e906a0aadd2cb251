"""Run a web server (``mlflow server``, ``optuna-dashboard``) as a child that behaves like the server itself.

* A port already in use is refused before the server starts.
* A server that dies before it answers (bad store URI, a port taken meanwhile) is reported in one
  line: the last error line it printed.
* SIGINT, SIGTERM and SIGHUP are forwarded to the server's whole process group (``mlflow server``
  runs uvicorn as a child of its own), which is waited for, so nothing is left holding the port.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import FrameType

from ..errors import ComplexityTrackerError

#: Signals passed on to the server.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How long a stopped server may take to exit before it is killed.
STOP_GRACE_S = 10.0
_ERROR_LINE = re.compile(r"error|exception|errno", re.IGNORECASE)
_EXCEPTION_PREFIX = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception):\s*")


class ServerError(ComplexityTrackerError, RuntimeError):
    """The server could not start: its port is taken, or it exited before answering."""


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Raise :class:`ServerError` unless ``host:port`` can be bound now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServerError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc}; stop what holds the port or choose "
                f"another with {flag} N"
            ) from None


def error_summary(lines: Sequence[str]) -> str:
    """The last line of a server's output that reports an error, without the exception's module path."""
    text = [line.strip() for line in lines if line.strip()]
    errors = [line for line in text if _ERROR_LINE.search(line)]
    line = (errors or text or ["(it printed nothing)"])[-1]
    return _EXCEPTION_PREFIX.sub("", line)[:400]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def local_url(host: str, port: int, path: str) -> str:
    """The URL at which this machine reaches a server bound to ``host``."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"http://{reach}:{port}{path}"


def serve(command: Sequence[str], *, name: str, host: str, port: int, ready_path: str,
          hint: str, startup_timeout_s: float = 180.0) -> int:
    """Run ``command`` (a server on ``host:port``) until it exits or this process is signalled.

    Returns 0 when stopped by a signal, else the server's exit code.  Raises :class:`ServerError`
    (one line, ending with ``hint``) when the port is taken, or the server exits or stays silent
    for ``startup_timeout_s`` before ``ready_path`` answers (it is then stopped).
    """
    check_port_free(host, port)
    print(f"starting {name} on {host}:{port}", flush=True)
    recent: collections.deque[str] = collections.deque(maxlen=200)
    ready = threading.Event()
    stopping: list[int] = []
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", start_new_session=True)

    def relay() -> None:
        # startup chatter is kept for the error message; once the server answers its log is shown
        for line in process.stdout:
            recent.append(line)
            if ready.is_set():
                sys.stderr.write(line)

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        url = local_url(host, port, ready_path)
        while not stopping and process.poll() is None and not _answers(url):
            if time.monotonic() > deadline:
                raise ServerError(f"{name} did not answer at {url} within {startup_timeout_s:.0f} s "
                                  f"(last output: {error_summary(list(recent))}); {hint}")
            time.sleep(0.3)
        if not stopping and process.poll() is None:
            ready.set()
            print(f"{name} is up at {local_url(host, port, '')} (Ctrl-C stops it)", flush=True)
        _wait(process, stopping)
        reader.join(timeout=2)
        if stopping:
            return 0
        if not ready.is_set():
            raise ServerError(f"{name} exited before serving (code {process.returncode}): "
                              f"{error_summary(list(recent))}; {hint}")
        return process.returncode
    finally:
        if process.poll() is None:
            forward(signal.SIGTERM, None)
            _wait(process, stopping)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(process: subprocess.Popen, stopping: list[int]) -> None:
    """Wait for the server and for every process of its group.  Once it is asked to stop, or once
    the leader has exited, the group gets SIGTERM and, after :data:`STOP_GRACE_S`, SIGKILL."""
    asked_at = None
    while process.poll() is None:
        if stopping and asked_at is None:
            asked_at = time.monotonic()
        if asked_at is not None and time.monotonic() - asked_at > STOP_GRACE_S:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
    if _group_alive(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
