"""One process drives a study at a time: a kernel file lock on ``study.lock`` (the ``filelock`` library).

The lock is an ``flock`` on the file, so the kernel releases it when its holder exits in any way,
kill -9 included: there is no stale lock to detect or take over, and no pid to mistake for another
process's after a reboot. The file itself stays; the holder writes its pid, host and start time into it
once it holds the lock, for the messages of whoever finds it taken. Whether the study is driven is
only ever decided by trying the lock, never by reading the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from dsm5_hpo.errors import ConfigError
from dsm5_hpo.layout import StudyPaths


class StudyLockedError(ConfigError):
    """Another live process drives this study."""


def _write_owner(fd: int) -> None:
    """Called by filelock once the lock is ours: who holds it, for the others' messages."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
    os.fsync(fd)


def _describe_holder(path: Path) -> str:
    """'process 123 on host' from the lock file; the holder may not have written it yet."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        owner = None
    if not isinstance(owner, dict) or "pid" not in owner:
        return "another process (it is writing its name into the lock)"
    host = owner.get("host", "?")
    where = "this host" if host == socket.gethostname() else f"host {host}"
    return f"process {owner['pid']} on {where}"


def lock_owner(study_dir: Path) -> str | None:
    """Who holds the study's lock ('process 123 on this host'), or None when no process does."""
    path = StudyPaths(study_dir).lock
    if not path.is_file():  # never driven by this code, or a shared study (no lock file there)
        return None
    probe = FileLock(path, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return _describe_holder(path)
    except OSError:  # a read-only folder, say: cannot be told from here, and a process there could not write
        return None
    probe.release()
    return None


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[Path]:
    """Hold the study's lock for the duration of the block; StudyLockedError when a live process has it."""
    path = StudyPaths(study_dir).lock
    lock = FileLock(path, timeout=0, on_acquired=_write_owner)
    try:
        lock.acquire()
    except Timeout as error:
        raise StudyLockedError(
            f"study {study_dir.name} is being run by {_describe_holder(path)} (lock {path}); wait for it "
            "to finish or stop it, then run --resume"
        ) from error
    try:
        yield path
    finally:
        lock.release()
