"""MLflow tracker against a real SQLite backend in a temporary folder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from dsm5_hpo.errors import TrackingError
from dsm5_hpo.tracking.mlflow_tracker import MlflowTracker
from dsm5_hpo.tracking.tracker import NullTracker, RunSpec


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[MlflowTracker]:
    uri = f"sqlite:///{tmp_path / 'mlflow_db' / 'mlflow.db'}"
    opened = MlflowTracker(uri, "tests", artifact_root=tmp_path / "mlflow_db" / "artifacts")
    yield opened
    opened.close(0)


def test_parent_and_child_runs_with_metrics_params_tags(tracker: MlflowTracker, tmp_path: Path) -> None:
    study = tracker.start_run("study", tags={"role": "study"})
    trial = tracker.start_run("trial-0", parent=study, tags={"trial_number": 0})
    trial.log_params({"train.seed": 42, "hp.lr": 1e-4, "long": "x" * 10_000})
    trial.log_metrics({"train_loss": 0.5, "skipped_none": None, "skipped_nan": float("nan")}, step=1)
    trial.log_metrics({"train_loss": 0.4}, step=2)
    trial.set_tags({"uri": "https://bob:secretpw@example.org/x"})
    trial.log_dict({"a": 1}, "resolved_config.json")
    trial.finish("FINISHED")
    assert tracker.drain(30)  # the outbox's sender has handed everything to MLflow
    assert not list(tracker.outbox.directory.glob("outbox-*"))  # and the outbox file is gone

    client = MlflowClient(tracking_uri=tracker.uri)
    run = client.get_run(trial.run_id)
    assert run.data.tags["mlflow.parentRunId"] == study.run_id
    assert run.data.params["train.seed"] == "42"
    assert len(run.data.params["long"]) == 6000
    assert "secretpw" not in run.data.tags["uri"]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(trial.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.4)]
    assert "skipped_none" not in run.data.metrics and "skipped_nan" not in run.data.metrics
    artifacts = list((tmp_path / "mlflow_db" / "artifacts").rglob("resolved_config.json"))
    assert len(artifacts) == 1  # artifacts stay under experiments/, not in ./mlruns


def test_many_metrics_are_sent_in_batches(tracker: MlflowTracker) -> None:
    run = tracker.start_run("big")
    run.log_metrics({f"m{i}": float(i) for i in range(2500)}, step=0)
    assert tracker.drain(30)
    client = MlflowClient(tracking_uri=tracker.uri)
    assert len(client.get_run(run.run_id).data.metrics) == 2500


def test_reopening_uses_the_same_experiment(tmp_path: Path, tracker: MlflowTracker) -> None:
    again = MlflowTracker(tracker.uri, "tests", artifact_root=tmp_path / "other")
    assert again.experiment_id == tracker.experiment_id
    assert again.describe().startswith("MLflow at sqlite:///")
    assert again.close() == 0


def test_unreachable_backend_is_a_tracking_error(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match=r"tracking\.uri"):
        MlflowTracker("nosuchscheme://x", "tests", artifact_root=tmp_path)


def test_null_tracker_keeps_metrics_in_memory() -> None:
    tracker = NullTracker()
    run = tracker.start_run("r", tags={"k": "v"})
    run.log_metrics({"a": 1.0, "b": None}, step=3)
    run.finish("KILLED")
    assert run.metrics == [("a", 1.0, 3)]
    assert run.tags == {"name": "r", "k": "v"}
    assert run.status == "KILLED"


def test_a_new_sqlite_database_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    db = tmp_path / "mlflow_db" / "mlflow.db"
    MlflowTracker(f"sqlite:///{db}", "tests", artifact_root=tmp_path / "artifacts").close()
    assert db.is_file()
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]  # no staging file left behind
    before = db.stat().st_mtime_ns
    MlflowTracker(f"sqlite:///{db}", "tests", artifact_root=tmp_path / "artifacts").close()  # db is kept
    assert db.stat().st_mtime_ns == before


class ThreadRecordingClient:
    """MlflowClient stand-in in front of the real one: which thread made each call."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((threading.current_thread().name, name))
            return method(*args, **kwargs)

        return recorded


def test_trial_runs_are_created_and_reopened_without_a_call_to_mlflow_on_the_callers_thread(
    tracker: MlflowTracker,
) -> None:
    # A server that accepts and never answers would hold every such call for its timeout: none may be
    # made on the thread that trains.
    recording = ThreadRecordingClient(tracker._client)
    tracker._client = recording  # type: ignore[assignment]
    tracker.sender._client = recording
    caller = threading.current_thread().name
    study = tracker.start_run("study", tags={"role": "study"})
    run_id = tracker.new_run_id()
    trial = tracker.start_run("trial-0", parent=study, tags={"trial_number": 0}, run_id=run_id)
    trial.log_metrics({"loss": 1.0}, step=0)
    trial.finish("KILLED")
    again = tracker.resume_run(run_id, RunSpec("trial-0", parent=study))  # the same process resumes it
    again.log_metrics({"loss": 1.0}, step=0)  # the step re-run after the checkpoint: not sent twice
    again.log_metrics({"loss": 0.5}, step=1)
    again.finish("FINISHED")
    assert [name for thread, name in recording.calls if thread == caller] == []
    assert tracker.drain(30)
    assert {thread for thread, _ in recording.calls} and caller not in {t for t, _ in recording.calls}
    client = MlflowClient(tracking_uri=tracker.uri)
    real = tracker.outbox.resolve(run_id)
    assert trial.run_id == real != run_id  # the local id resolves to MLflow's once it exists
    run = client.get_run(real)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == study.run_id
    assert [(m.step, m.value) for m in client.get_metric_history(real, "loss")] == [(0, 1.0), (1, 0.5)]


def test_a_run_never_created_is_created_when_it_is_reopened(tmp_path: Path, tracker: MlflowTracker) -> None:
    # A crash after the trial saved its run id and before the creation was queued (or on another machine).
    run_id = tracker.new_run_id()
    run = tracker.resume_run(run_id, RunSpec("trial-7", tags={"trial_number": 7}))
    run.log_metrics({"loss": 0.25}, step=3)
    run.finish("FINISHED")
    assert tracker.drain(30)
    created = MlflowClient(tracking_uri=tracker.uri).get_run(tracker.outbox.resolve(run_id))
    assert created.info.run_name == "trial-7" and created.data.metrics == {"loss": 0.25}
    with pytest.raises(TrackingError, match="never created"):
        tracker.resume_run(tracker.new_run_id())
