"""Disk monitor: a background thread that publishes the free space of the experiments' filesystem.

It follows optuna's heartbeat pattern: a context manager starts a daemon thread looping on
``Event.wait(interval)``, so stopping it is immediate rather than a sleep away. The thread only
*publishes* a status and logs; deciding to prune is the checkpoint manager's job (it reads the
status, or calls ``check_now``, before each save), so no deletion can race a save from here.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from dsm5_hpo.errors import StorageError

logger = logging.getLogger(__name__)

Level = Literal["ok", "warning", "critical"]
DiskUsage = Callable[[str], tuple[int, int, int]]

UNLIMITED = 2**63 - 1
"""Free bytes reported by ``NullStorageMonitor``: more than any checkpoint needs."""

_LOG_LEVELS: dict[Level, int] = {"ok": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
# How long ``__exit__`` waits for the thread: a hung ``disk_usage`` (dead NFS mount) must not hang
# the study's shutdown; the thread is a daemon, so the process still exits.
_JOIN_TIMEOUT_S = 5.0


def format_bytes(count: int) -> str:
    """Binary units (GiB), as ``df -h`` shows them: '9.3 GiB', '512 B'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class DiskStatus:
    """One reading of a filesystem; the thresholds travel with it so ``level`` needs no monitor."""

    path: Path
    total: int
    used: int
    free: int
    checked_at: float
    warn_percent: float = 10.0
    critical_percent: float = 5.0

    @property
    def free_percent(self) -> float:
        # A zero-size filesystem (some pseudo filesystems) has nothing to run out of.
        return 100.0 * self.free / self.total if self.total > 0 else 100.0

    @property
    def level(self) -> Level:
        if self.free_percent < self.critical_percent:
            return "critical"
        if self.free_percent < self.warn_percent:
            return "warning"
        return "ok"

    def describe(self) -> str:
        return (
            f"{self.path}: {format_bytes(self.free)} free of {format_bytes(self.total)} "
            f"({self.free_percent:.1f}% free, {format_bytes(self.used)} used)"
        )


class DiskMonitor(Protocol):
    """What the checkpoint manager and the study need from a monitor (real or null)."""

    def __enter__(self) -> DiskMonitor: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def status(self) -> DiskStatus: ...
    def check_now(self) -> DiskStatus: ...


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent: the experiments dir may not exist yet."""
    candidate = path.absolute()
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


class StorageMonitor:
    """Reads free space every ``interval_s`` on a daemon thread; ``status()`` is the latest reading."""

    def __init__(
        self,
        path: Path,
        *,
        interval_s: float = 60.0,
        info_every_s: float = 600.0,
        warn_percent: float = 10.0,
        critical_percent: float = 5.0,
        disk_usage: DiskUsage = shutil.disk_usage,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0 or info_every_s < 0:
            raise ValueError(
                f"interval_s must be > 0 and info_every_s >= 0, got {interval_s}, {info_every_s}"
            )
        if not 0 <= critical_percent <= warn_percent <= 100:
            raise ValueError(
                f"need 0 <= critical_percent <= warn_percent <= 100, got {critical_percent}, {warn_percent}"
            )
        self.path = Path(path)
        self.interval_s = interval_s
        self.info_every_s = info_every_s
        self.warn_percent = warn_percent
        self.critical_percent = critical_percent
        self._disk_usage = disk_usage
        self._clock = clock
        self._lock = threading.Lock()
        self._status: DiskStatus | None = None
        # Rate limiting: one record per info_every_s unless the level changes (None = never logged).
        self._logged_at: float | None = None
        self._logged_level: Level | None = None
        self._failing_since_log: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StorageMonitor:
        if self._thread is not None:
            raise RuntimeError("StorageMonitor is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dsm5-storage-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                logger.warning(
                    "disk monitor did not stop within %.0f s; leaving it (daemon)", _JOIN_TIMEOUT_S
                )
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> DiskStatus:
        """The latest reading; reads the disk now if there is none yet."""
        with self._lock:
            current = self._status
        return current if current is not None else self.check_now()

    def check_now(self) -> DiskStatus:
        """Read the disk on the caller's thread and publish the result.

        When the read fails the previous status stays (it is the best we know); with no previous
        status there is nothing to answer, so a ``StorageError`` names the path and the cause.
        """
        status = self._check()
        if status is None:
            raise StorageError(
                f"cannot read the free space of {existing_ancestor(self.path)} (experiments dir "
                f"{self.path}): is the filesystem mounted and readable?"
            )
        return status

    def _run(self) -> None:
        # First reading at once, so the study logs its disk usage when it starts.
        self._check()
        while not self._stop.wait(self.interval_s):
            self._check()

    def _check(self) -> DiskStatus | None:
        target = existing_ancestor(self.path)
        try:
            total, used, free = self._disk_usage(str(target))
        except Exception as error:  # noqa: BLE001 - any failure must leave the thread alive; keep the last status
            self._log_failure(target, error)
            with self._lock:
                return self._status
        status = DiskStatus(
            target, int(total), int(used), int(free), self._clock(), self.warn_percent, self.critical_percent
        )
        with self._lock:
            # Decided under the lock so that the thread and a concurrent check_now log once, not twice.
            self._status = status
            self._failing_since_log = None
            self._log_status(status)
        return status

    def _log_status(self, status: DiskStatus) -> None:
        level = status.level
        due = self._logged_at is None or status.checked_at - self._logged_at >= self.info_every_s
        if not due and level == self._logged_level:
            return
        self._logged_at, self._logged_level = status.checked_at, level
        if level == "ok":
            logger.info("disk usage %s", status.describe())
        elif level == "warning":
            logger.warning(
                "low disk space, below %g%% free: %s; retention prunes harder before the next checkpoint "
                "(`make cleanup` lists what can go)",
                self.warn_percent,
                status.describe(),
            )
        else:
            logger.error(
                "disk nearly full, below %g%% free: %s; the next checkpoint may not fit "
                "(`make cleanup` lists what can go, `make cleanup APPLY=1` deletes it)",
                self.critical_percent,
                status.describe(),
            )

    def _log_failure(self, target: Path, error: Exception) -> None:
        now = self._clock()
        with self._lock:
            if self._failing_since_log is not None and now - self._failing_since_log < self.info_every_s:
                return
            self._failing_since_log = now
        logger.warning("cannot read disk usage of %s (%s); keeping the previous status", target, error)


class NullStorageMonitor:
    """A monitor for tests and for checkpointing off: unlimited free space, level 'ok'."""

    def __init__(self, path: Path | None = None) -> None:
        self._status = DiskStatus(Path(path or "."), UNLIMITED, 0, UNLIMITED, 0.0)

    def __enter__(self) -> NullStorageMonitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    @property
    def running(self) -> bool:
        return False

    def status(self) -> DiskStatus:
        return self._status

    def check_now(self) -> DiskStatus:
        return self._status
