"""The outbox's sender: the background thread that moves outbox entries into MLflow, in order and in
batches, retrying with backoff while MLflow is down, and creating the runs queued while it was."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsm5_hpo.tracking.outbox import (
    LOCAL_PREFIX,
    LOCAL_RUN_TAG,
    Outbox,
    is_transient,
    local_id_filter,
    short_error,
)
from dsm5_hpo.utils.logging import redact

logger = logging.getLogger(__name__)

_BATCHABLE = ("metric", "param", "tag")
# MLflow's log_batch limits: 1000 metrics, 100 params, 100 tags, 1000 entities in all.
_MAX_METRICS, _MAX_PARAMS_OR_TAGS = 900, 90
BACKOFF_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Waits after consecutive failures; after the last, every 16 s until the backend answers."""


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
        sending = False  # once a send is due, the rest follows at once: the outbox is emptied
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # a full disk must not kill the sender; the next sync retries
                self.outbox.sync()  # every poll_s: what was logged survives a crash within a second
            # While failing, send_some's own backoff (1, 2, 4, 8, 16 s) sets the pace.
            due = (
                sending
                or self._failures > 0
                or self._wake.is_set()
                or time.monotonic() - last_send >= self._send_interval_s
            )
            self._wake.clear()
            # More may be waiting after a send: send it now. (Without ``sending`` a woken sender, a
            # drain's, sent one chunk and then waited out the rest of send_interval_s: 3 s at a
            # study's end.)
            sending = due and self.send_some()
            if sending:
                continue
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
