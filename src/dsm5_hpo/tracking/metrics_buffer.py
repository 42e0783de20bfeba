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
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from dsm5_hpo.storage.atomic import atomic_write_json
from dsm5_hpo.utils.logging import redact

logger = logging.getLogger(__name__)

LOCAL_PREFIX = "local-"
MAPPING_FILE = "run_ids.json"
_OUTBOX_GLOB = "outbox-*.jsonl"
_BATCHABLE = ("metric", "param", "tag")
# MLflow's log_batch limits: 1000 metrics, 100 params, 100 tags, 1000 entities in all.
_MAX_METRICS, _MAX_PARAMS_OR_TAGS = 900, 90
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
BACKOFF_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Waits after consecutive failures; after the last, every 16 s until the backend answers."""


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


class OutboxSender:
    """The background thread that moves outbox entries into MLflow, retrying while it is down."""

    def __init__(
        self,
        outbox: Outbox,
        client: Any,
        *,
        wait: Callable[[threading.Event, float], bool] | None = None,
        poll_s: float = 1.0,
        send_interval_s: float = 5.0,
    ) -> None:
        self.outbox = outbox
        self._client = client
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._retry_now = threading.Event()
        """Cuts a backoff wait short: set by drain and stop, not by every new entry."""
        self._wait = wait or (lambda event, seconds: event.wait(seconds))
        self._poll_s = poll_s
        self._send_interval_s = send_interval_s
        self._failures = 0
        self._known: dict[str, set[tuple[str, int]]] = {}
        self._fetched: dict[str, set[str]] = {}
        self._one_at_a_time = False
        """After a batch was refused as a whole: send entries singly until the culprit is found."""
        self._thread: threading.Thread | None = None
        self.delays: list[float] = []
        """Every backoff wait so far (tests read them)."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dsm5-tracking-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def nudge(self) -> None:
        """Called after each append: wakes the sender only once a full batch is waiting.

        Otherwise it sends on its own every ``send_interval_s``: a few large MLflow calls instead
        of one per training step, which matters because MLflow's client is Python that competes
        with the training loop for the interpreter (its cost is mostly per call, not per metric).
        """
        if self.outbox.pending_count() >= _MAX_METRICS:
            self._wake.set()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every entry is in MLflow (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        self.wake()
        self._retry_now.set()
        while self.outbox.pending_count():
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._retry_now.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        # Lowest CPU priority for this thread (Linux: nice applies per thread): on a busy machine
        # the training's own threads go first and MLflow gets the idle time.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        last_send = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # a full disk must not kill the sender; the next sync retries
                self.outbox.sync()  # every poll_s: what was logged survives a crash within a second
            # While failing, send_some's own backoff (1, 2, 4, 8, 16 s) sets the pace.
            due = (
                self._failures > 0
                or self._wake.is_set()
                or time.monotonic() - last_send >= self._send_interval_s
            )
            self._wake.clear()
            if due and self.send_some():
                continue  # more may be waiting: send it now
            if due:
                last_send = time.monotonic()
            self._wake.wait(self._poll_s)

    def send_some(self) -> bool:
        """Send the next batch; True when something was sent (more may follow at once)."""
        batch = self.outbox.head()
        if not batch:
            self._failures = 0
            return False
        chunk = batch[:1] if self._one_at_a_time else _next_chunk(batch)
        try:
            self._send(chunk)
        except Exception as error:  # noqa: BLE001 - whatever MLflow raises, the entries are kept
            if not is_transient(error):
                if len(chunk) > 1:  # one bad entry must not take the others with it
                    self._one_at_a_time = True
                    return True
                logger.error(
                    "MLflow refused %s for run %s (%s); dropping it: it cannot succeed on retry",
                    chunk[0]["op"],
                    chunk[0]["run"],
                    redact(str(error)),
                )
                self.outbox.ack(chunk[-1]["seq"])
                return True
            delay = BACKOFF_DELAYS[min(self._failures, len(BACKOFF_DELAYS) - 1)]
            if self._failures < len(BACKOFF_DELAYS) or self._failures % 10 == 0:
                logger.warning(
                    "MLflow unreachable (%s); %d tracking entries kept in %s, retrying in %.0f s",
                    short_error(error),
                    self.outbox.pending_count(),
                    self.outbox.path,
                    delay,
                )
            self._failures += 1
            self.delays.append(delay)
            self._wait(self._retry_now, delay)
            self._retry_now.clear()
            return False
        self._one_at_a_time = False
        if self._failures:
            logger.info(
                "MLflow reachable again; sending the %d entries kept meanwhile", self.outbox.pending_count()
            )
        self._failures = 0
        self.outbox.ack(chunk[-1]["seq"])
        return True

    def _send(self, chunk: list[dict[str, Any]]) -> None:
        first = chunk[0]
        op = first["op"]
        if op == "create_run":
            self._create_run(first)
            return
        run_id = self.outbox.resolve(str(first["run"]))
        if op in _BATCHABLE:
            self._send_batch(run_id, chunk)
        elif op == "dict":
            self._client.log_dict(run_id, first["data"], first["file"])
        elif op == "artifact":
            path = Path(first["path"])
            if not path.is_file():  # replaced or deleted since it was queued: nothing left to send
                logger.warning("artifact %s is gone; not logged to run %s", path, run_id)
                return
            self._client.log_artifact(run_id, str(path), first.get("dir"))
        elif op == "status":
            self._client.update_run(run_id, status=first["status"])
        elif op == "terminate":
            self._client.set_terminated(run_id, status=first["status"], end_time=first.get("ts"))
        else:
            raise ValueError(f"unknown outbox entry {op!r}")

    def _create_run(self, entry: dict[str, Any]) -> None:
        """The run of a create_run entry: the one already carrying its local id (created by this entry
        before a crash, or by another machine's outbox for the same trial), else a new one."""
        local = str(entry["run"])
        if not self.outbox.resolve(local).startswith(LOCAL_PREFIX):
            return  # created already (an entry queued twice for it)
        found = self._client.search_runs(
            [entry["experiment_id"]], filter_string=local_id_filter(local), max_results=1
        )
        if found:
            self.outbox.record_mapping(local, found[0].info.run_id)
            return
        tags = dict(entry.get("tags") or {})
        tags[LOCAL_RUN_TAG] = local
        if entry.get("parent"):
            tags["mlflow.parentRunId"] = self.outbox.resolve(str(entry["parent"]))
        run = self._client.create_run(entry["experiment_id"], run_name=entry["name"], tags=tags)
        self.outbox.record_mapping(local, run.info.run_id)

    def _send_batch(self, run_id: str, chunk: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics = [e for e in chunk if e["op"] == "metric"]
        if metrics and self.outbox.needs_check(run_id):
            known = self._history(run_id, {e["key"] for e in metrics})
            metrics = [e for e in metrics if (e["key"], int(e["step"])) not in known]
        self._client.log_batch(
            run_id,
            metrics=[Metric(e["key"], float(e["value"]), int(e["ts"]), int(e["step"])) for e in metrics],
            params=[Param(e["key"], e["value"]) for e in chunk if e["op"] == "param"],
            tags=[RunTag(e["key"], e["value"]) for e in chunk if e["op"] == "tag"],
        )
        if self.outbox.needs_check(run_id):
            self._known.setdefault(run_id, set()).update((e["key"], int(e["step"])) for e in metrics)

    def _history(self, run_id: str, keys: set[str]) -> set[tuple[str, int]]:
        """(key, step) already in MLflow for these keys (fetched once per key)."""
        known = self._known.setdefault(run_id, set())
        fetched = self._fetched.setdefault(run_id, set())
        for key in sorted(keys - fetched):
            known.update((key, m.step) for m in self._client.get_metric_history(run_id, key))
            fetched.add(key)
        return known


def _next_chunk(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The head entry alone, or the longest run of batchable entries of one run within MLflow's limits."""
    first = batch[0]
    if first["op"] not in _BATCHABLE:
        return [first]
    chunk: list[dict[str, Any]] = []
    counts = {"metric": 0, "param": 0, "tag": 0}
    limits = {"metric": _MAX_METRICS, "param": _MAX_PARAMS_OR_TAGS, "tag": _MAX_PARAMS_OR_TAGS}
    for entry in batch:
        op = entry["op"]
        if op not in _BATCHABLE or entry["run"] != first["run"] or counts[op] >= limits[op]:
            break
        counts[op] += 1
        chunk.append(entry)
    return chunk
