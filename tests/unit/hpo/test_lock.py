"""The study lock: one live driver per study; stale locks from dead processes are taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import captured_logs
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.lock import LOCK_FILE, StudyLockedError, study_lock


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_is_held_then_released(tmp_path: Path) -> None:
    with study_lock(tmp_path) as path:
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert not (tmp_path / LOCK_FILE).exists()


def test_live_owner_blocks_a_second_driver(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(StudyLockedError, match=f"process {sleeper.pid}") as error, study_lock(tmp_path):
            pass
        assert isinstance(error.value, ConfigError)
        assert (tmp_path / LOCK_FILE).exists()  # the owner's lock is left alone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with captured_logs("dsm5_hpo.hpo.lock") as records, study_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert any(r.levelno == logging.WARNING and "stale lock" in r.getMessage() for r in records)


def test_unreadable_lock_counts_as_stale(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("{half written")
    with study_lock(tmp_path):
        pass


def test_lock_of_another_host_is_respected(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "some-other-host"}))
    with pytest.raises(StudyLockedError, match="some-other-host"), study_lock(tmp_path):
        pass
