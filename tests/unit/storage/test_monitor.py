"""Disk monitor: thresholds, rate-limited logging, the background thread, failures, the null monitor."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import captured_logs
from dsm5_hpo.errors import StorageError
from dsm5_hpo.storage import monitor as monitor_module
from dsm5_hpo.storage.monitor import (
    UNLIMITED,
    DiskMonitor,
    DiskStatus,
    NullStorageMonitor,
    StorageMonitor,
    existing_ancestor,
    format_bytes,
)

GB = 1_000_000_000


class FakeDisk:
    """``shutil.disk_usage`` stand-in: set ``free`` (of 100 GB) or ``error``; counts calls."""

    def __init__(self, free: int = 50 * GB, total: int = 100 * GB) -> None:
        self.total, self.free = total, free
        self.error: Exception | None = None
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, path: str) -> tuple[int, int, int]:
        with self._lock:
            self.calls.append(path)
        if self.error is not None:
            raise self.error
        return self.total, self.total - self.free, self.free


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    with captured_logs("dsm5_hpo.storage.monitor") as records:
        yield records


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """True as soon as ``condition`` holds; the timeout only bounds a hang (a loaded 2-core machine can
    starve the monitor's thread for seconds, so no test's outcome depends on how soon)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def make(tmp_path: Path, disk: FakeDisk, clock: FakeClock | None = None, **kwargs: float) -> StorageMonitor:
    return StorageMonitor(tmp_path, disk_usage=disk, clock=clock or FakeClock(), **kwargs)


@pytest.mark.parametrize(
    ("free_percent", "level"),
    [(50.0, "ok"), (10.0, "ok"), (9.99, "warning"), (5.0, "warning"), (4.99, "critical"), (0.0, "critical")],
)
def test_level_thresholds(free_percent: float, level: str) -> None:
    free = int(free_percent * 100)
    status = DiskStatus(Path("/x"), total=10_000, used=10_000 - free, free=free, checked_at=0.0)
    assert status.free_percent == pytest.approx(free_percent)
    assert status.level == level


def test_custom_thresholds_and_empty_filesystem() -> None:
    status = DiskStatus(Path("/x"), 100, 80, 20, 0.0, warn_percent=30.0, critical_percent=25.0)
    assert status.level == "critical"
    assert DiskStatus(Path("/x"), 0, 0, 0, 0.0).free_percent == 100.0


def test_check_now_reads_nearest_existing_parent(tmp_path: Path) -> None:
    disk = FakeDisk(free=30 * GB)
    clock = FakeClock()
    clock.now = 12.5
    monitor = make(tmp_path / "experiments" / "not" / "yet", disk, clock)
    status = monitor.check_now()
    assert disk.calls == [str(tmp_path)]
    assert (status.path, status.total, status.used, status.free) == (tmp_path, 100 * GB, 70 * GB, 30 * GB)
    assert status.checked_at == 12.5 and status.level == "ok"
    assert existing_ancestor(tmp_path / "a" / "b") == tmp_path


def test_status_checks_once_then_serves_the_latest(tmp_path: Path) -> None:
    disk = FakeDisk()
    monitor = make(tmp_path, disk)
    first = monitor.status()
    assert len(disk.calls) == 1
    assert monitor.status() is first
    assert len(disk.calls) == 1
    disk.free = 1 * GB
    assert monitor.check_now().level == "critical"
    assert monitor.status().free == 1 * GB


def test_logging_is_rate_limited_unless_the_level_changes(
    tmp_path: Path, logs: list[logging.LogRecord]
) -> None:
    disk, clock = FakeDisk(), FakeClock()
    monitor = make(tmp_path, disk, clock, info_every_s=600.0)
    steps = [  # (time, free GB, expected log level or None)
        (0, 50, logging.INFO),  # at start
        (60, 50, None),
        (600, 50, logging.INFO),  # every info_every_s
        (610, 8, logging.WARNING),  # level changed
        (670, 8, None),
        (1200, 7, None),
        (1210, 7, logging.WARNING),  # 600 s after the last warning
        (1220, 4, logging.ERROR),  # level changed
        (1280, 3, None),
        (1820, 3, logging.ERROR),
        (1830, 40, logging.INFO),  # back to ok
        (1840, 40, None),
    ]
    for now, free_gb, expected in steps:
        clock.now, disk.free = float(now), free_gb * GB
        before = len(logs)
        monitor.check_now()
        emitted = [record.levelno for record in logs[before:]]
        assert emitted == ([expected] if expected is not None else []), f"at t={now}"
    assert "below 10% free" in logs[2].getMessage()
    assert "make cleanup" in logs[4].getMessage() and "below 5% free" in logs[4].getMessage()
    assert str(tmp_path) in logs[0].getMessage() and "50.0% free" in logs[0].getMessage()


def test_failing_disk_usage_keeps_the_previous_status(tmp_path: Path, logs: list[logging.LogRecord]) -> None:
    disk, clock = FakeDisk(), FakeClock()
    monitor = make(tmp_path, disk, clock, info_every_s=600.0)
    good = monitor.check_now()
    disk.error = FileNotFoundError("gone")
    logs.clear()
    for now in (10.0, 20.0, 30.0):
        clock.now = now
        assert monitor.check_now() is good
        assert monitor.status() is good
    warnings = [r for r in logs if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "repeated failures are rate-limited"
    assert "gone" in warnings[0].getMessage()
    clock.now = 700.0
    monitor.check_now()
    assert len([r for r in logs if r.levelno == logging.WARNING]) == 2


def test_failure_with_no_previous_status_is_a_storage_error(tmp_path: Path) -> None:
    disk = FakeDisk()
    disk.error = PermissionError("denied")
    monitor = make(tmp_path, disk)
    with pytest.raises(StorageError, match="cannot read the free space") as info:
        monitor.status()
    assert info.value.exit_code == 4


def test_thread_checks_at_once_and_stops_without_waiting_out_the_interval(
    tmp_path: Path, logs: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FakeDisk()
    # An interval far longer than the join timeout: a stop that waited it out would leave the thread
    # alive past the join and log "did not stop" (no wall-clock assertion needed).
    monkeypatch.setattr(monitor_module, "_JOIN_TIMEOUT_S", 5.0)
    monitor = make(tmp_path, disk, interval_s=3600.0)
    with monitor:
        assert monitor.running
        thread = monitor._thread
        assert wait_until(lambda: len(disk.calls) >= 1), "first check happens at start"
    assert thread is not None and not thread.is_alive()
    assert not monitor.running
    assert not [r for r in logs if "did not stop" in r.getMessage()]
    assert len(disk.calls) == 1


def test_thread_keeps_checking_and_publishes(tmp_path: Path) -> None:
    disk = FakeDisk()
    monitor = make(tmp_path, disk, interval_s=0.01)
    with monitor:
        assert wait_until(lambda: len(disk.calls) >= 3)
        disk.free = 2 * GB
        assert wait_until(lambda: monitor.status().free == 2 * GB)
    calls = len(disk.calls)
    time.sleep(0.05)
    assert len(disk.calls) == calls, "no checks after exit"
    assert monitor.status().level == "critical"


@pytest.mark.parametrize("error", [OSError("vanished"), RuntimeError("unexpected")])
def test_exceptions_do_not_kill_the_thread(tmp_path: Path, error: Exception) -> None:
    disk = FakeDisk()
    disk.error = error
    monitor = make(tmp_path, disk, interval_s=0.01)
    with monitor:
        assert wait_until(lambda: len(disk.calls) >= 3)
        assert monitor.running
        disk.error = None
        assert wait_until(lambda: monitor._status is not None)
        assert monitor.status().free == 50 * GB


def test_restart_after_stop_and_no_double_start(tmp_path: Path) -> None:
    monitor = make(tmp_path, FakeDisk(), interval_s=0.01)
    with monitor, pytest.raises(RuntimeError, match="already running"):
        monitor.__enter__()
    with monitor:
        assert monitor.running
    assert not monitor.running


def test_real_disk_usage(tmp_path: Path) -> None:
    status = StorageMonitor(tmp_path).check_now()
    assert status.total > 0 and 0 <= status.free <= status.total
    assert status.level in ("ok", "warning", "critical")


@pytest.mark.parametrize(
    "kwargs",
    [{"interval_s": 0.0}, {"info_every_s": -1.0}, {"warn_percent": 4.0}, {"critical_percent": -1.0}],
)
def test_invalid_settings(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StorageMonitor(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_null_monitor_reports_unlimited_space(tmp_path: Path) -> None:
    monitor: DiskMonitor = NullStorageMonitor(tmp_path)
    with monitor as entered:
        status = entered.status()
        assert status.free == UNLIMITED and status.level == "ok" and status.free_percent == 100.0
        assert entered.check_now() == status
    assert NullStorageMonitor().status().path == Path(".")


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(10 * 1024**3) == "10.0 GiB"
    assert format_bytes(3 * 1024**5) == "3072.0 TiB"
