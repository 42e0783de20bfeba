"""Waits bounded by progress, not by the speed of the machine a test was written on.

A subprocess test waits for a condition (a checkpoint, a log line, the process's exit). A fixed
deadline fails on a slower or loaded machine while the process is still making progress; no deadline
hangs the suite when it is stuck. Here the bound is progress: the wait fails when the process died
before the condition, or when its log has not grown for ``stall_s`` seconds (it is stuck), never
while it is still writing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

STALL_S = 300.0
"""A study that writes nothing to its log for this long is stuck (it logs every epoch, every save)."""


class ProcessEnded(AssertionError):
    """The process exited before the condition held."""


def _size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def wait_for(
    condition: Callable[[], T | None],
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    what: str,
    stall_s: float = STALL_S,
    poll_s: float = 0.2,
) -> T:
    """``condition()``'s first truthy value, polled while ``process`` runs and its log grows."""
    size, progressed = _size(log), time.monotonic()
    while True:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            found = condition()  # it may have happened just before the exit
            if found:
                return found
            raise ProcessEnded(f"the process ended ({process.returncode}) before {what}:\n{_tail(log)}")
        now_size = _size(log)
        if now_size != size:
            size, progressed = now_size, time.monotonic()
        elif time.monotonic() - progressed > stall_s:
            raise AssertionError(f"no progress for {stall_s:.0f} s while waiting for {what}:\n{_tail(log)}")
        time.sleep(poll_s)


def wait_for_exit(process: subprocess.Popen[bytes], log: Path, *, stall_s: float = STALL_S) -> int:
    """The process's exit code, waiting as long as its log keeps growing."""
    wait_for(lambda: process.poll() is not None or None, process, log, what="its exit", stall_s=stall_s)
    return int(process.wait())


def log_shows(log: Path, text: str, *, count: int = 1, offset: int = 0) -> Callable[[], bool]:
    """A condition: the log (from byte ``offset``) shows ``text`` at least ``count`` times."""

    def shows() -> bool:
        if not log.exists():
            return False
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace").count(text) >= count

    return shows
