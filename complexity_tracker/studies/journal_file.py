"""Check an Optuna journal file before it is opened: cut off a torn last line, name a damaged one.

Optuna's ``JournalFileBackend`` appends one JSON record per line.  A crash during an append can
leave a *torn* last line without its newline: Optuna silently skips it (the write it held is
lost: e.g. a finished trial shows RUNNING), and the next append would glue a new record onto it,
after which the whole file can no longer be read.  :func:`check_journal` therefore cuts a torn
tail off, under the journal's own lock and after copying the file, before any process appends.
A damaged line elsewhere cannot be repaired without losing what it held: it is reported.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import time
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock

from .storage import StudyStorageError

_log = logging.getLogger(__name__)


def check_journal(path: Path) -> Path | None:
    """Cut a torn last line off the journal at ``path`` (after copying the file next to it);
    returns the copy, or ``None`` when the file was whole.

    Raises:
        StudyStorageError: a line before the last is not a JSON record (the message names the file,
            the line and the byte offset), or a torn file cannot be locked for the repair.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))
    try:
        lock.acquire()
    except OSError as exc:  # a read-only folder: check without repairing
        return _check(path, repair=False, reason=f"its lock file cannot be created ({exc})")
    try:
        return _check(path, repair=True)
    finally:
        lock.release()


def _check(path: Path, repair: bool, reason: str = "") -> Path | None:
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    offset = 0
    for number, line in enumerate(data[:whole].split(b"\n")[:-1], start=1):
        try:
            json.loads(line)
        except ValueError as exc:
            raise StudyStorageError(
                f"journal {path} is damaged at line {number} (byte {offset}): not a JSON record ({exc}). Restore "
                f"it from a backup, or keep a copy and delete that line, losing the write it held: "
                f"sed -i '{number}d' {shlex.quote(str(path.resolve()))}"
            ) from None
        offset += len(line) + 1
    if whole == len(data):
        return None
    if not repair:
        raise StudyStorageError(
            f"journal {path} ends in a torn line at byte {whole} (a crash during a write) and cannot be repaired: "
            f"{reason}. Cut it off after keeping a copy: cp {shlex.quote(str(path.resolve()))} "
            f"{shlex.quote(str(path.resolve()))}.torn && truncate -s {whole} {shlex.quote(str(path.resolve()))}"
        )
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}")
    shutil.copy2(path, backup)
    with open(path, "r+b") as file:
        file.truncate(whole)
        file.flush()
        os.fsync(file.fileno())
    _log.warning(
        "complexity-tracker: warning: journal %s ended in a torn line (bytes %d-%d, left by a crash during a "
        "write); cut it off at byte %d after copying the file to %s", path, whole, len(data), whole, backup,
    )
    return backup
