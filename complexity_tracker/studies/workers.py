"""Worker processes of ``study run --workers N`` on this machine.

Neither torch nor MLflow is imported here, so the launcher can start its helper workers before it
imports them itself: the helpers' start-up (about 4 CPU seconds of imports each) then overlaps
with the launcher's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .storage import STORAGE_ENV

#: Exit code of a worker stopped by Ctrl-C/SIGTERM (as a shell reports SIGINT).
EXIT_INTERRUPTED = 130


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker so that ``workers`` processes do not oversubscribe the cores."""
    return max(1, cores() // workers)


def worker_command(config_path: str | Path, threads: int, n_trials: int, log_model: bool) -> list[str]:
    """Command line of one helper worker process (storage and tracking URI travel in the environment)."""
    command = [
        sys.executable, "-m", "complexity_tracker.cli.main", "study", "run", str(config_path),
        "--worker", "--threads", str(threads), "--n-trials", str(n_trials),
    ]
    return command + ([] if log_model else ["--no-log-model"])


class HelperWorkers:
    """The ``workers - 1`` processes a launcher starts beside itself (it is the remaining worker).

    Each runs ``study run CONFIG --worker`` in its own session (so a Ctrl-C in the terminal reaches
    only the launcher, which forwards it with :meth:`interrupt`) and joins the study once the
    launcher has created it.  Leaving the ``with`` block on an error interrupts the helpers and
    waits for them, so none is left behind.
    """

    def __init__(
        self,
        config_path: str | Path,
        *,
        workers: int,
        n_trials: int,
        storage_url: str,
        tracking_uri: str,
        log_model: bool,
        threads: int | None = None,
    ) -> None:
        self.threads = threads or threads_per_worker(workers)
        env = {
            **os.environ,
            STORAGE_ENV: storage_url,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
        }
        command = worker_command(config_path, self.threads, n_trials, log_model)
        self.processes = [
            subprocess.Popen(command, env=env, start_new_session=True) for _ in range(workers - 1)
        ]

    def __enter__(self) -> HelperWorkers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.interrupt()
            self.exit_codes()

    def running(self) -> bool:
        """Whether any helper is still running."""
        return any(process.poll() is None for process in self.processes)

    def interrupt(self) -> None:
        """Send SIGINT to the helpers still running: each stops its trial and queues it again."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)

    def exit_codes(self) -> list[int]:
        """Wait for every helper; their exit codes (0 done, 130 interrupted, else failed)."""
        return [process.wait() for process in self.processes]
