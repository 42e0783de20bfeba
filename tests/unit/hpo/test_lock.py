"""The study lock (a kernel file lock): one live driver per study, freed by the kernel when its holder dies."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.lock import StudyLockedError, lock_owner, study_lock
from dsm5_hpo.layout import StudyPaths

# Takes the lock, says so on stdout, and holds it until killed.
HOLDER = """
import sys, time
from pathlib import Path
from dsm5_hpo.hpo.lock import study_lock
with study_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""

# Says it is ready, waits for the start signal (a file), tries the lock once and prints "won" or
# "locked"; a winner holds the lock until the release file appears.
RACER = """
import sys, time
from pathlib import Path
from dsm5_hpo.hpo.lock import StudyLockedError, study_lock
folder, go, release = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    with study_lock(folder):
        print("won", flush=True)
        while not release.exists():
            time.sleep(0.01)
except StudyLockedError:
    print("locked", flush=True)
"""


def _holder(folder: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_lock_is_held_with_its_owner_written_then_released(tmp_path: Path) -> None:
    with study_lock(tmp_path) as path:
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert lock_owner(tmp_path) == f"process {os.getpid()} on this host"
    assert lock_owner(tmp_path) is None
    with study_lock(tmp_path):  # free again
        pass


def test_a_live_holder_blocks_a_second_driver_and_its_death_frees_the_lock(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        locked = pytest.raises(StudyLockedError, match=f"process {holder.pid} on this host")
        with locked as error, study_lock(tmp_path):
            pass
        assert isinstance(error.value, ConfigError) and "--resume" in str(error.value)
        assert lock_owner(tmp_path) == f"process {holder.pid} on this host"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # kill -9 leaves the file but not the lock: the next driver takes it at once, nothing to take over.
    assert StudyPaths(tmp_path).lock.exists() and lock_owner(tmp_path) is None
    with study_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_lock_taken_but_not_yet_written_still_binds(tmp_path: Path) -> None:
    # The window the old lock read as stale: the holder has the file but has not written its name yet.
    bare = FileLock(StudyPaths(tmp_path).lock, timeout=0)
    bare.acquire()
    try:
        with pytest.raises(StudyLockedError, match="writing its name"), study_lock(tmp_path):
            pass
        assert lock_owner(tmp_path) is not None
    finally:
        bare.release()


def test_a_first_wave_lock_file_of_a_dead_process_does_not_bind(tmp_path: Path) -> None:
    # What the home-made lock left behind on kill -9: a JSON file naming a process that is gone.
    StudyPaths(tmp_path).lock.write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname()}))
    assert lock_owner(tmp_path) is None
    with study_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_half_written_lock_file_does_not_bind(tmp_path: Path) -> None:
    StudyPaths(tmp_path).lock.write_text("{half written")
    with study_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_processes_racing_for_a_stale_lock_never_both_win(tmp_path: Path) -> None:
    # The old takeover read the stale file, then unlinked it: a racer could unlink the winner's new lock
    # and win too. A kernel lock has no takeover step.
    StudyPaths(tmp_path).lock.write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname()}))
    go, release = tmp_path / "go", tmp_path / "release"
    command = [sys.executable, "-c", RACER, str(tmp_path), str(go), str(release)]
    racers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for racer in racers:
            assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
        go.touch()  # all four try at once; the winner holds on until every racer has answered
        outcomes = sorted(racer.stdout.readline().strip() for racer in racers if racer.stdout is not None)
    finally:
        release.touch()
        for racer in racers:
            racer.communicate(timeout=120)
    assert outcomes == ["locked", "locked", "locked", "won"]


def test_no_lock_file_means_not_driven(tmp_path: Path) -> None:
    assert lock_owner(tmp_path) is None
    assert not StudyPaths(tmp_path).lock.exists(), "asking must not create the lock file"
