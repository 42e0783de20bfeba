"""The outbox and its sender, against a fake MLflow client that fails on demand (no waiting)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import captured_logs
from dsm5_hpo.tracking.outbox import (
    LOCAL_RUN_TAG,
    MAPPING_FILE,
    Outbox,
    is_transient,
    short_error,
)
from dsm5_hpo.tracking.sender import OutboxSender


class Refused(Exception):
    """What MLflow raises for an entry it will never accept."""

    error_code = "INVALID_PARAMETER_VALUE"


class FakeClient:
    """Records what reaches 'MLflow'; ``down`` makes every call fail like a dead server."""

    def __init__(self) -> None:
        self.down = False
        self.refuse: set[str] = set()
        self.metrics: dict[tuple[str, str], list[tuple[int, float, int]]] = {}
        self.params: dict[tuple[str, str], str] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.status: dict[str, str] = {}
        self.created = 0
        self.batches = 0
        self.artifacts: list[tuple[str, str, str | None]] = []

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("[Errno 111] Connection refused")

    def log_batch(self, run_id: str, metrics: list[Any], params: list[Any], tags: list[Any]) -> None:
        self._check()
        if any(p.key in self.refuse for p in params):
            raise Refused(f"param {params} already logged with a different value")
        self.batches += 1
        for m in metrics:
            self.metrics.setdefault((run_id, m.key), []).append((m.step, m.value, m.timestamp))
        self.params.update({(run_id, p.key): p.value for p in params})
        self.tags.update({(run_id, t.key): t.value for t in tags})

    def get_metric_history(self, run_id: str, key: str) -> list[Any]:
        self._check()
        return [SimpleNamespace(step=s) for s, _, _ in self.metrics.get((run_id, key), [])]

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> Any:
        self._check()
        self.created += 1
        run_id = f"real-{self.created}"
        self.tags.update({(run_id, k): v for k, v in tags.items()})
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def search_runs(
        self, experiment_ids: list[str], filter_string: str, max_results: int = 1000
    ) -> list[Any]:
        """Only what the sender asks: tags.`key` = 'value'."""
        self._check()
        found = re.fullmatch(r"tags\.`([^`]+)` = '([^']*)'", filter_string)
        assert found, filter_string
        key, value = found.groups()
        runs = sorted({run for (run, k), v in self.tags.items() if k == key and v == value})
        return [SimpleNamespace(info=SimpleNamespace(run_id=run)) for run in runs[:max_results]]

    def set_terminated(self, run_id: str, status: str, end_time: int | None = None) -> None:
        self._check()
        self.status[run_id] = status

    def update_run(self, run_id: str, status: str) -> None:
        self._check()
        self.status[run_id] = status

    def log_dict(self, run_id: str, data: dict[str, Any], artifact_file: str) -> None:
        self._check()

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self._check()
        self.artifacts.append((run_id, Path(local_path).read_text(), artifact_path))


def metric(run: str, key: str, step: int, value: float = 0.5) -> dict[str, Any]:
    return {"op": "metric", "run": run, "key": key, "value": value, "step": step, "ts": 1000 + step}


def pump(sender: OutboxSender, times: int = 50) -> None:
    """Run the sender's loop body by hand until nothing is left (or ``times`` turns)."""
    for _ in range(times):
        if not sender.outbox.pending_count():
            return
        sender.send_some()


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


def make_sender(outbox: Outbox, client: FakeClient) -> OutboxSender:
    return OutboxSender(outbox, client, wait=lambda event, seconds: False)  # backoff without waiting


def test_entries_reach_mlflow_in_batches_and_the_file_goes(tmp_path: Path, client: FakeClient) -> None:
    outbox = Outbox(tmp_path)
    outbox.append(
        [metric("r1", "loss", s) for s in range(2000)]
        + [{"op": "param", "run": "r1", "key": "lr", "value": "1"}]
    )
    outbox.sync()
    assert outbox.path.is_file()
    pump(make_sender(outbox, client))
    assert [s for s, _, _ in client.metrics[("r1", "loss")]] == list(range(2000))
    assert client.params[("r1", "lr")] == "1"
    assert client.batches == 3  # 900 + 900 + (200 metrics and the param)
    assert not outbox.path.exists() and outbox.pending_count() == 0


def test_artifacts_are_sent_when_mlflow_is_back_and_a_vanished_file_is_skipped(
    tmp_path: Path, client: FakeClient
) -> None:
    plot, gone = tmp_path / "plot.png", tmp_path / "gone.png"
    plot.write_text("png bytes")
    outbox = Outbox(tmp_path / "outbox")
    outbox.append(
        [
            {"op": "artifact", "run": "r1", "path": str(plot), "dir": "plots"},
            {"op": "artifact", "run": "r1", "path": str(gone), "dir": "plots"},
        ]
    )
    client.down = True
    sender = make_sender(outbox, client)
    sender.send_some()
    assert client.artifacts == [] and outbox.pending_count() == 2  # kept while MLflow is down
    client.down = False
    with captured_logs("dsm5_hpo.tracking.sender") as records:
        pump(sender)
    assert client.artifacts == [("r1", "png bytes", "plots")]
    assert outbox.pending_count() == 0
    assert any("gone.png is gone" in r.getMessage() for r in records)


def test_backoff_while_down_then_everything_once(tmp_path: Path, client: FakeClient) -> None:
    outbox = Outbox(tmp_path)
    sender = make_sender(outbox, client)
    client.down = True
    outbox.append([metric("r1", "loss", 0)])
    for _ in range(8):
        sender.send_some()
    assert sender.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]
    assert outbox.pending_count() == 1 and outbox.path.exists()  # kept, on disk
    outbox.append([metric("r1", "loss", 1)])
    client.down = False
    pump(sender)
    assert [s for s, _, _ in client.metrics[("r1", "loss")]] == [0, 1]
    assert not outbox.path.exists()


def test_a_refused_entry_is_dropped_alone(tmp_path: Path, client: FakeClient) -> None:
    outbox = Outbox(tmp_path)
    client.refuse = {"bad"}
    outbox.append(
        [metric("r1", "a", 0), {"op": "param", "run": "r1", "key": "bad", "value": "x"}, metric("r1", "a", 1)]
    )
    pump(make_sender(outbox, client))
    assert [s for s, _, _ in client.metrics[("r1", "a")]] == [0, 1]  # its batch-mates got through
    assert ("r1", "bad") not in client.params and outbox.pending_count() == 0


def test_runs_created_offline_get_their_real_id(tmp_path: Path, client: FakeClient) -> None:
    outbox = Outbox(tmp_path)
    outbox.append(
        [
            {
                "op": "create_run",
                "run": "local-1",
                "experiment_id": "0",
                "name": "t",
                "tags": {},
                "parent": "real-9",
            },
            metric("local-1", "loss", 0),
            {"op": "terminate", "run": "local-1", "status": "FINISHED", "ts": 5},
        ]
    )
    pump(make_sender(outbox, client))
    assert outbox.resolve("local-1") == "real-1"
    assert client.metrics[("real-1", "loss")] == [(0, 0.5, 1000)]
    assert client.tags[("real-1", "mlflow.parentRunId")] == "real-9" and client.status["real-1"] == "FINISHED"
    # Persisted: a later process that only knows the local id finds the real run.
    assert json.loads((tmp_path / MAPPING_FILE).read_text()) == {"local-1": "real-1"}
    assert Outbox(tmp_path).resolve("local-1") == "real-1"


def test_a_run_another_process_created_is_found_by_its_local_id_not_created_twice(
    tmp_path: Path, client: FakeClient
) -> None:
    # A trial retried on another machine: its local run id came from the dead worker's outbox, which had
    # created the run already; this outbox queues the creation again, for a run it cannot resolve.
    client.create_run("0", run_name="trial-3", tags={LOCAL_RUN_TAG: "local-from-elsewhere"})
    outbox = Outbox(tmp_path)
    entry = {"op": "create_run", "run": "local-from-elsewhere", "experiment_id": "0", "name": "trial-3"}
    outbox.append([{**entry, "tags": {}, "parent": None}, metric("local-from-elsewhere", "loss", 4)])
    pump(make_sender(outbox, client))
    assert client.created == 1 and outbox.resolve("local-from-elsewhere") == "real-1"
    assert client.metrics[("real-1", "loss")] == [(4, 0.5, 1004)]


def test_a_dead_process_file_is_adopted_and_not_sent_twice(tmp_path: Path, client: FakeClient) -> None:
    dead = Outbox(tmp_path)
    dead.append([metric("r1", "loss", s) for s in range(4)])
    dead.ack(2)  # steps 0..1 were confirmed before the process died
    client.metrics[("r1", "loss")] = [(0, 0.5, 1000), (1, 0.5, 1001), (2, 0.5, 1002)]  # 2 sent, ack lost
    dead.close()  # the process is gone: its lock is released, its file stays
    assert dead.path.exists()
    live = Outbox(tmp_path)
    assert live.adopt_orphans() == 2  # steps 2 and 3
    assert not dead.path.exists()
    pump(make_sender(live, client))
    assert [s for s, _, _ in client.metrics[("r1", "loss")]] == [0, 1, 2, 3]  # step 2 not again


def test_a_live_process_file_is_left_alone(tmp_path: Path) -> None:
    running = Outbox(tmp_path)
    running.append([metric("r1", "loss", 0)])
    other = Outbox(tmp_path)
    assert other.adopt_orphans() == 0 and running.path.exists()


def test_a_file_cut_mid_line_by_a_crash_is_read_up_to_the_cut(tmp_path: Path) -> None:
    dead = Outbox(tmp_path)
    dead.append([metric("r1", "loss", 0)])
    dead.close()
    with dead.path.open("a") as handle:
        handle.write('{"op": "metric", "run": "r1", "ke')
    assert Outbox(tmp_path).adopt_orphans() == 1


def test_size_warning(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, warn_bytes=1000)
    with captured_logs("dsm5_hpo.tracking.outbox") as records:
        outbox.append([metric("r1", "loss", s) for s in range(50)])
        outbox.append([metric("r1", "loss", s) for s in range(50, 100)])
    warnings = [r for r in records if "passed" in r.getMessage()]
    assert len(warnings) == 1  # once, not at every append


def test_a_woken_sender_sends_everything_waiting_not_one_chunk_per_interval(
    tmp_path: Path, client: FakeClient
) -> None:
    outbox = Outbox(tmp_path)
    # A long interval: only the wake (a drain's) can make these go out within the test.
    sender = OutboxSender(outbox, client, poll_s=0.01, send_interval_s=3600.0)
    sender.start()
    try:
        # Four chunks: two runs' metrics, a param, a terminate (each its own MLflow call).
        outbox.append(
            [metric("r1", "loss", s) for s in range(5)] + [metric("r2", "loss", s) for s in range(5)]
        )
        outbox.append([{"op": "param", "run": "r1", "key": "lr", "value": "1"}])
        outbox.append([{"op": "terminate", "run": "r1", "status": "FINISHED", "ts": 1}])
        assert sender.drain(5.0)
    finally:
        sender.stop()
    assert len(client.metrics[("r1", "loss")]) == len(client.metrics[("r2", "loss")]) == 5


def test_the_thread_drains_and_stops(tmp_path: Path, client: FakeClient) -> None:
    outbox = Outbox(tmp_path)
    sender = OutboxSender(outbox, client, poll_s=0.01)
    sender.start()
    outbox.append([metric("r1", "loss", s) for s in range(10)])
    assert sender.drain(10)
    sender.stop()
    assert len(client.metrics[("r1", "loss")]) == 10
    assert not any(t.name == "dsm5-tracking-outbox" for t in threading.enumerate())


def test_error_helpers() -> None:
    assert is_transient(ConnectionError("x")) and not is_transient(Refused("y"))
    long = "API request failed with exception HTTPConnectionPool: ... [Errno 111] Connection refused'))"
    assert short_error(Exception(long)) == "[Errno 111] Connection refused"
    assert "hunter2" not in short_error(Exception("http://bob:hunter2@host failed"))


def test_a_file_named_after_a_live_process_is_left_alone_even_before_it_is_locked(tmp_path: Path) -> None:
    import os
    import socket

    # pid 1 runs on every host; its file may exist for an instant before its owner locks it.
    young = tmp_path / f"outbox-{socket.gethostname()}-1-abcd1234.jsonl"
    young.write_text(json.dumps({**metric("r1", "loss", 0), "seq": 1}) + "\n")
    dead = tmp_path / f"outbox-{socket.gethostname()}-{2**22 + 12345}-abcd1234.jsonl"  # no such pid
    dead.write_text(json.dumps({**metric("r2", "loss", 0), "seq": 1}) + "\n")
    assert os.path.exists(young)
    assert Outbox(tmp_path).adopt_orphans() == 1
    assert young.exists() and not dead.exists()
