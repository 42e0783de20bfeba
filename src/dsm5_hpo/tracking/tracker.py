"""Experiment tracking: one MLflow parent run per study, one child run per trial.

The trainer only sees :class:`RunTracker` (log metrics, params, tags); the study runner
creates runs through :class:`Tracker`. ``NullTracker`` is the version for tests and for
``tracking.backend=none``. Calls go through MLflow's client API with explicit run ids, not
its global "active run", so a trial run can be re-opened later by id.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from dsm5_hpo.errors import TrackingError
from dsm5_hpo.storage.atomic import fsync_path
from dsm5_hpo.utils.logging import redact

logger = logging.getLogger(__name__)

_MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch


class RunTracker(Protocol):
    run_id: str

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class Tracker(Protocol):
    def start_run(
        self, name: str, *, parent: RunTracker | None = None, tags: Mapping[str, Any] | None = None
    ) -> RunTracker: ...
    def resume_run(self, run_id: str) -> RunTracker: ...
    def find_run(self, tags: Mapping[str, str]) -> str | None: ...
    def describe(self) -> str: ...


class NullRunTracker:
    """Accepts everything and keeps the metrics in memory (tests read them back)."""

    def __init__(self, run_id: str = "null") -> None:
        self.run_id = run_id
        self.metrics: list[tuple[str, float, int]] = []
        self.params: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.status = "RUNNING"

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        self.metrics.extend((k, float(v), step) for k, v in metrics.items() if v is not None and _finite(v))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update(tags)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        return None

    def finish(self, status: str = "FINISHED") -> None:
        self.status = status


class NullTracker:
    def __init__(self) -> None:
        self.runs: list[NullRunTracker] = []

    def start_run(
        self, name: str, *, parent: RunTracker | None = None, tags: Mapping[str, Any] | None = None
    ) -> NullRunTracker:
        run = NullRunTracker(run_id=f"null-{len(self.runs)}")
        run.set_tags({"name": name, **(tags or {})})
        self.runs.append(run)
        return run

    def resume_run(self, run_id: str) -> NullRunTracker:
        for run in self.runs:
            if run.run_id == run_id:
                run.status = "RUNNING"
                return run
        run = NullRunTracker(run_id=run_id)
        self.runs.append(run)
        return run

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        for run in self.runs:
            if all(str(run.tags.get(k)) == v for k, v in tags.items()):
                return run.run_id
        return None

    def describe(self) -> str:
        return "tracking disabled"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(float(value))


class MlflowRunTracker:
    """Logs to one MLflow run; ``logged`` holds (key, step) pairs the run already has, never sent again.

    A resumed trial re-runs the steps after its checkpoint and produces the same values (training
    is deterministic), so skipping them keeps every metric series free of duplicate steps.
    """

    def __init__(
        self,
        client: Any,
        run_id: str,
        clock: Callable[[], float] = time.time,
        logged: set[tuple[str, int]] | None = None,
    ) -> None:
        self._client = client
        self.run_id = run_id
        self._clock = clock
        self._logged = logged if logged is not None else set()

    def _call(self, what: str, func: Callable[[], Any]) -> None:
        try:
            func()
        except Exception as error:
            raise TrackingError(
                f"MLflow refused to {what} for run {self.run_id}: {redact(str(error))}. Check tracking.uri "
                "and that the tracking server is up"
            ) from error

    def _send(self, what: str, **batch: Any) -> None:
        self._call(what, lambda: self._client.log_batch(self.run_id, **batch))

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        now = int(self._clock() * 1000)
        batch = [
            Metric(k, float(v), now, step)  # type: ignore[arg-type]
            for k, v in metrics.items()
            if _finite(v) and (k, step) not in self._logged
        ]
        if not batch:
            return
        for i in range(0, len(batch), _BATCH):
            self._send("log metrics", metrics=batch[i : i + _BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))[:_MAX_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), 90):  # MLflow caps params per batch at 100
            self._send("log params", params=items[i : i + 90])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._send("set tags", tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self._call("log an artifact", lambda: self._client.log_dict(self.run_id, dict(data), artifact_file))

    def finish(self, status: str = "FINISHED") -> None:
        self._call("end the run", lambda: self._client.set_terminated(self.run_id, status=status))


def _create_sqlite_store(db: Path) -> None:
    """Create a missing MLflow SQLite database atomically.

    MLflow builds its schema in many steps; a process killed in the middle leaves a database
    that every later start refuses ("table ... already exists"). So the schema is built in a
    temporary file beside the target and renamed into place once complete.
    """
    if db.exists():
        return
    from mlflow import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    staging = db.with_name(f".{db.name}.{os.getpid()}.init")
    staging.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{staging}").search_experiments(max_results=1)
    with open(staging, "rb") as handle:
        os.fsync(handle.fileno())
    if db.exists():  # another process finished first: keep its database
        staging.unlink(missing_ok=True)
        return
    os.replace(staging, db)
    fsync_path(db.parent)


class MlflowTracker:
    """Creates runs in one MLflow experiment; artifacts stay beside the database by default."""

    def __init__(self, uri: str, experiment_name: str, artifact_root: Path) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = uri
        try:
            if uri.startswith("sqlite:///"):
                _create_sqlite_store(Path(uri.removeprefix("sqlite:///")))
            mlflow.set_tracking_uri(uri)
            self._client = MlflowClient(tracking_uri=uri)
            experiment = self._client.get_experiment_by_name(experiment_name)
            if experiment is None:
                artifact_root.mkdir(parents=True, exist_ok=True)
                self.experiment_id = self._client.create_experiment(
                    experiment_name, artifact_location=artifact_root.resolve().as_uri()
                )
            else:
                self.experiment_id = experiment.experiment_id
        except Exception as error:
            raise TrackingError(
                f"cannot open MLflow at {redact(uri)}: {redact(str(error))}. Fix tracking.uri, start the "
                "tracking server, or run with tracking.backend=none"
            ) from error

    def start_run(
        self, name: str, *, parent: RunTracker | None = None, tags: Mapping[str, Any] | None = None
    ) -> MlflowRunTracker:
        all_tags = {k: redact(str(v)) for k, v in (tags or {}).items()}
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent.run_id
        try:
            run = self._client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        except Exception as error:
            raise TrackingError(f"MLflow cannot create run {name!r}: {redact(str(error))}") from error
        return MlflowRunTracker(self._client, run.info.run_id)

    def resume_run(self, run_id: str) -> MlflowRunTracker:
        """Re-open a run of an interrupted process: status back to RUNNING, logged steps remembered."""
        try:
            run = self._client.get_run(run_id)
            logged = {
                (key, metric.step)
                for key in run.data.metrics
                for metric in self._client.get_metric_history(run_id, key)
            }
            self._client.update_run(run_id, status="RUNNING")
        except Exception as error:
            raise TrackingError(f"MLflow cannot re-open run {run_id}: {redact(str(error))}") from error
        return MlflowRunTracker(self._client, run_id, logged=logged)

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """The run carrying all these tags (a run created just before a crash, before its id was saved)."""
        query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        try:
            runs = self._client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        except Exception as error:
            raise TrackingError(f"MLflow cannot search runs ({redact(str(error))})") from error
        return str(runs[0].info.run_id) if runs else None

    def describe(self) -> str:
        return f"MLflow at {redact(self.uri)} (experiment {self.experiment_id})"
