"""The metrics outbox: every tracking call lands in an fsynced file first, then in MLflow.

Training never waits for MLflow. Each metric, param, tag, artifact dict and run status is an
entry (one JSON line, with a sequence number) appended to this process's outbox file in
``<experiments>/tracking_outbox/``; a background sender thread sends entries to MLflow in order
and in batches, and appends an ``ack`` line once MLflow has them. When MLflow cannot be reached
(server down, SQLite locked, disk error) the sender keeps the entries and retries after 1, 2, 4,
8, 16 s, then every 16 s. Once every entry is acknowledged the file is deleted.

A process holds an exclusive ``flock`` on its own file, so a file whose lock can be taken was left
by a process that died: the next tracker (``train``, ``resume`` or ``python -m dsm5_hpo.cli.sync``)
adopts its unacknowledged entries and deletes it. Entries that may already be in MLflow (adopted
ones: the sender may have died between sending and writing the ack; and those of a run resumed
while MLflow was down) are checked against the run's metric history before sending, so that no
(run, key, step) is logged twice.

Runs created while MLflow is down get a local id (``local-<hex>``); the sender creates the real
run when it can and records the mapping in ``run_ids.json`` beside the outbox files, so that a
later resume that only knows the local id finds the real run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from dsm5_hpo.storage.atomic import atomic_write_json
from dsm5_hpo.utils.logging import redact
from dsm5_hpo.utils.processes import pid_alive

logger = logging.getLogger(__name__)

LOCAL_PREFIX = "local-"
MAPPING_FILE = "run_ids.json"
_OUTBOX_GLOB = "outbox-*.jsonl"
# Codes of MLflow errors that retrying cannot fix (the entry itself is wrong): such an entry is
# dropped with an ERROR. Everything else (connection refused, timeouts, 5xx, a locked SQLite
# database, even an expired token) is retried: the entries wait in the outbox meanwhile.
PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "BAD_REQUEST",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
    }
)


def is_transient(error: BaseException) -> bool:
    """Worth retrying later: anything but an MLflow error that names the entry itself as wrong."""
    return getattr(error, "error_code", None) not in PERMANENT_ERROR_CODES


def short_error(error: BaseException) -> str:
    """The gist of a (often very long) MLflow client error, redacted: 'Connection refused', ..."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    gist = found.group(0) if found else (text.splitlines()[0] if text else type(error).__name__)
    return redact(gist[:300])


LOCAL_RUN_TAG = "dsm5.local_run_id"
"""Tag of every run created through the outbox: its local id, by which any process finds it again."""


def local_id_filter(local: str) -> str:
    """MLflow's search filter for the run created for this local id."""
    return f"tags.`{LOCAL_RUN_TAG}` = '{local}'"


def new_local_run_id() -> str:
    return f"{LOCAL_PREFIX}{uuid.uuid4().hex}"


class Outbox:
    """This process's append-only outbox file and the entries not yet acknowledged (thread-safe)."""

    def __init__(self, directory: Path, *, warn_bytes: int = 100_000_000) -> None:
        self.directory = directory
        self.warn_bytes = warn_bytes
        self.path = directory / f"outbox-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._lock = threading.RLock()
        self._pending: list[dict[str, Any]] = []
        self._seq = 0
        self._file: Any = None
        self._dirty = False
        self._warned = False
        self._check: set[str] = set()
        """Runs whose metrics may already be in MLflow: checked against its history before sending."""
        directory.mkdir(parents=True, exist_ok=True)
        self._mapping: dict[str, str] = self._read_mapping()

    # -- appending (training thread) ---------------------------------------------------------

    def append(self, entries: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            lines = []
            for entry in entries:
                self._seq += 1
                record = {**entry, "seq": self._seq}
                self._pending.append(record)
                lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
            if lines:
                self._write("\n".join(lines) + "\n")

    def sync(self) -> None:
        """Flush and fsync the file: what was appended survives a crash from now on."""
        with self._lock:
            if self._file is not None and self._dirty:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._dirty = False

    # -- the sender's side -------------------------------------------------------------------

    def head(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pending[:limit])

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending_keys(self, run_id: str) -> set[tuple[str, int]]:
        """(key, step) of the metrics of ``run_id`` still waiting here."""
        with self._lock:
            return {
                (e["key"], int(e["step"]))
                for e in self._pending
                if e["op"] == "metric" and e["run"] == run_id
            }

    def ack(self, upto_seq: int) -> None:
        """Entries up to ``upto_seq`` are in MLflow; once none is left, the file goes."""
        with self._lock:
            self._pending = [e for e in self._pending if e["seq"] > upto_seq]
            if self._pending:
                self._write(json.dumps({"ack": upto_seq}) + "\n")
            else:
                self._remove_file()

    def creation_queued(self, run_id: str) -> bool:
        """Whether a create_run entry for this local id waits here."""
        with self._lock:
            return any(e["op"] == "create_run" and e["run"] == run_id for e in self._pending)

    def flag_check(self, run_id: str) -> None:
        with self._lock:
            self._check.add(run_id)

    def needs_check(self, run_id: str) -> bool:
        """Whether ``run_id`` (or the local id it was flagged under before MLflow had it) is checked."""
        with self._lock:
            return run_id in self._check or any(
                self._mapping.get(flagged) == run_id for flagged in self._check
            )

    # -- run ids -----------------------------------------------------------------------------

    def resolve(self, run_id: str) -> str:
        """The real MLflow id of ``run_id`` (itself when it is real or not created yet)."""
        with self._lock:
            if run_id.startswith(LOCAL_PREFIX) and run_id not in self._mapping:
                # Perhaps created by another process of this folder since: its mapping is on disk.
                self._mapping = {**self._read_mapping(), **self._mapping}
            return self._mapping.get(run_id, run_id)

    def record_mapping(self, local: str, real: str) -> None:
        """Remember (and persist) that ``local`` is MLflow's ``real``. Every process of the experiments
        folder (the workers of a shared study) writes this file: merged with what is on disk under a
        file lock, so that no process's runs are forgotten by another's write."""
        with self._lock, FileLock(self.directory / f"{MAPPING_FILE}.lock"):
            self._mapping = {**self._read_mapping(), **self._mapping, local: real}
            atomic_write_json(self.directory / MAPPING_FILE, self._mapping)

    def _read_mapping(self) -> dict[str, str]:
        path = self.directory / MAPPING_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.warning(
                "cannot read %s (%s): runs created offline before may be created twice", path, error
            )
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    # -- files left by dead processes --------------------------------------------------------

    def adopt_orphans(self) -> int:
        """Take over the unacknowledged entries of outbox files whose process is gone."""
        adopted = 0
        for path in sorted(self.directory.glob(_OUTBOX_GLOB)):
            if path == self.path or _owner_alive(path):
                continue
            try:
                handle = path.open("r+", encoding="utf-8")
            except FileNotFoundError:  # its owner finished meanwhile
                continue
            with handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it
                entries = _unacknowledged(handle.read(), path)
                for entry in entries:
                    entry.pop("seq", None)
                    self.flag_check(self.resolve(str(entry["run"])))
                self.append(entries)
                self.sync()
                path.unlink()
            if entries:
                logger.info(
                    "replaying %d tracking entries left by an earlier run in %s (now in %s)",
                    len(entries),
                    path.name,
                    self.path.name,
                )
            adopted += len(entries)
        return adopted

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> int:
        """Fsync and release the file; it stays (for a later replay) only if entries are pending."""
        with self._lock:
            left = len(self._pending)
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()  # releases the flock: the next tracker may adopt it
                self._file = None
            return left

    def _write(self, text: str) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.write(text)
        self._dirty = True
        if not self._warned and self._file.tell() > self.warn_bytes:
            self._warned = True
            logger.warning(
                "the tracking outbox %s passed %d MB: MLflow has not taken entries for a while (is it up?); "
                "nothing is lost, the file keeps growing until it does",
                self.path,
                self.warn_bytes // 1_000_000,
            )

    def _remove_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._dirty = self._warned = False


def _owner_alive(path: Path) -> bool:
    """The file's name says it belongs to a process of this host that still runs.

    Checked on top of the flock: a new file exists for an instant before its owner locks it.
    """
    parts = path.stem.split("-")  # outbox-<host>-<pid>-<hex>; the host name may contain dashes
    if len(parts) < 4 or not parts[-2].isdigit() or "-".join(parts[1:-2]) != socket.gethostname():
        return False
    pid = int(parts[-2])
    if pid == os.getpid():
        return False  # an earlier outbox of this very process (a closed tracker): adoptable
    return pid_alive(pid)


def _unacknowledged(text: str, path: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    acked = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # the last line of a process killed mid-write
            logger.warning("skipping an incomplete line %d of %s", number, path)
            continue
        if "ack" in record:
            acked = max(acked, int(record["ack"]))
        elif "seq" in record:
            entries.append(record)
    return [e for e in entries if int(e["seq"]) > acked]
