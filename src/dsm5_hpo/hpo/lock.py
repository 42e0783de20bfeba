"""One process drives a study at a time: a lock file holding the owner's pid and host.

Created with O_EXCL, so two processes cannot both win. A lock left by a process that died
(same host, pid gone) is stale: it is taken over with a WARNING. A lock from another host
cannot be checked from here and is respected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from dsm5_hpo.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_FILE = "study.lock"


class StudyLockedError(ConfigError):
    """Another live process drives this study."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # unreadable (half-written by a crash): treated as stale below


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}, handle
        )
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _holder(owner: dict[str, object]) -> tuple[int, object] | None:
    """(pid, host) of a lock that still binds: a live process on this host, or any process on
    another host (which cannot be checked from here); None when the lock is free or stale."""
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int) or host is None:
        return None
    if host == socket.gethostname():
        return (pid, host) if _alive(pid) else None
    return pid, host


def lock_owner(study_dir: Path) -> str | None:
    """Who holds the study's lock ('process 123 on host'), or None when it is free or stale."""
    holder = _holder(_read(study_dir / LOCK_FILE))
    if holder is None:
        return None
    pid, host = holder
    return f"process {pid} on {host}" if host == socket.gethostname() else f"process {pid} on host {host}"


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[Path]:
    """Hold the study's lock for the duration of the block."""
    path = study_dir / LOCK_FILE
    for _ in range(3):  # a stale lock is removed and creation retried; bounded against races
        if _try_create(path):
            break
        owner = _read(path)
        pid, host = owner.get("pid"), owner.get("host")
        here = socket.gethostname()
        holder = _holder(owner)
        if holder is not None and host == here and pid != os.getpid():
            raise StudyLockedError(
                f"study {study_dir.name} is being run by process {pid} on {host} (lock {path}); wait for it to "
                "finish or stop it, then run --resume"
            )
        if holder is not None and host != here:
            raise StudyLockedError(
                f"study {study_dir.name} is locked by process {pid} on host {host} (lock {path}); if that process "
                "is gone, delete the lock file and run --resume"
            )
        logger.warning(
            "taking over the stale lock of study %s (process %s on %s is gone)", study_dir.name, pid, host
        )
        path.unlink(missing_ok=True)
    else:
        raise StudyLockedError(f"could not take the lock {path}: another process keeps re-creating it")
    try:
        yield path
    finally:
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
