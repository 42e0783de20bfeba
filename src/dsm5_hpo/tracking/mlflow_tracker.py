"""The MLflow implementation of ``tracking.tracker``'s Tracker and RunTracker.

Calls go through MLflow's client API with explicit run ids, not its global "active run", so a
trial run can be re-opened later by id; every write goes through the outbox first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dsm5_hpo.errors import TrackingError
from dsm5_hpo.storage.atomic import fsync_path
from dsm5_hpo.tracking.outbox import (
    LOCAL_PREFIX,
    Outbox,
    is_transient,
    local_id_filter,
    new_local_run_id,
    short_error,
)
from dsm5_hpo.tracking.sender import OutboxSender
from dsm5_hpo.tracking.tracker import RunSpec, RunTracker, finite, is_local_uri
from dsm5_hpo.utils.logging import redact
from dsm5_hpo.utils.retry import RetryConfig, call_with_retry

logger = logging.getLogger(__name__)

_MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values


class MlflowRunTracker:
    """Logs to one MLflow run through the outbox: every call returns once its entries are on disk.

    ``logged`` holds (key, step) pairs the run already has, never sent again: a resumed trial
    re-runs the steps after its checkpoint and produces the same values (training is
    deterministic), so skipping them keeps every metric series free of duplicate steps.
    """

    def __init__(
        self,
        outbox: Outbox,
        run_id: str,
        clock: Callable[[], float] = time.time,
        logged: set[tuple[str, int]] | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        self._id = run_id
        self._clock = clock
        self._logged = logged if logged is not None else set()
        self._wake = wake

    @property
    def run_id(self) -> str:
        """The MLflow id once the run exists there; until then the local id its entries are queued under
        (both name the same run in the outbox)."""
        return self._outbox.resolve(self._id)

    def _enqueue(self, entries: list[dict[str, Any]]) -> None:
        try:
            self._outbox.append(entries)
        except OSError as error:
            raise TrackingError(
                f"cannot write the tracking outbox {self._outbox.path} ({error}); metrics of run "
                f"{self.run_id} would be lost: free disk space or fix the permissions of "
                f"{self._outbox.directory}"
            ) from error
        self._wake()

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        now = int(self._clock() * 1000)
        entries = []
        for key, value in metrics.items():
            if value is None or not finite(value) or (key, step) in self._logged:
                continue
            self._logged.add((key, step))
            entries.append(
                {
                    "op": "metric",
                    "run": self._id,
                    "key": key,
                    "value": float(value),
                    "step": step,
                    "ts": now,
                }
            )
        if entries:
            self._enqueue(entries)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._enqueue(
            [
                {"op": "param", "run": self._id, "key": k, "value": redact(str(v))[:_MAX_PARAM_CHARS]}
                for k, v in params.items()
            ]
        )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._enqueue(
            [{"op": "tag", "run": self._id, "key": k, "value": redact(str(v))} for k, v in tags.items()]
        )

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self._enqueue([{"op": "dict", "run": self._id, "data": dict(data), "file": artifact_file}])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Queue a file (by its absolute path: it is copied when sent, so it must stay there)."""
        entry = {"op": "artifact", "run": self._id, "path": str(path.resolve()), "dir": artifact_path}
        self._enqueue([entry])

    def finish(self, status: str = "FINISHED") -> None:
        self._enqueue(
            [{"op": "terminate", "run": self._id, "status": status, "ts": int(self._clock() * 1000)}]
        )

    def flush(self) -> None:
        """Make what was logged so far crash-proof (fsync); the trainer calls it every epoch."""
        try:
            self._outbox.sync()
        except OSError as error:
            raise TrackingError(f"cannot fsync the tracking outbox {self._outbox.path}: {error}") from error


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
    """Creates runs in one MLflow experiment; every write goes through the outbox (tracking/outbox.py).

    Opening needs the backend (with retries): a study does not start against a tracker that was
    never there. After that, MLflow may come and go: runs, metrics, params and tags wait in the
    outbox, and runs created meanwhile get a local id until the backend creates them.
    """

    def __init__(
        self,
        uri: str,
        experiment_name: str,
        artifact_root: Path,
        *,
        outbox_dir: Path | None = None,
        outbox_warn_bytes: int = 100_000_000,
        drain_timeout_s: float = 60.0,
        retry: RetryConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = uri
        self.drain_timeout_s = drain_timeout_s
        if uri.startswith(("http://", "https://")):
            # MLflow's own client retries a failed request for minutes by default, blocking the
            # caller; the outbox retries instead, so each request gives up quickly.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            if uri.startswith("sqlite:///"):
                _create_sqlite_store(Path(uri.removeprefix("sqlite:///")))
            mlflow.set_tracking_uri(uri)
            self._client = MlflowClient(tracking_uri=uri)
            experiment = call_with_retry(
                lambda: self._client.get_experiment_by_name(experiment_name),
                config=retry or RetryConfig(),
                sleep=sleep,
                retry_if=is_transient,
                description=f"opening MLflow at {redact(uri)}",
            )
            if experiment is None:
                self.experiment_id = self._create_experiment(uri, experiment_name, artifact_root)
            else:
                self.experiment_id = experiment.experiment_id
        except Exception as error:
            raise TrackingError(
                f"cannot open MLflow at {redact(uri)}: {redact(str(error))}. Fix tracking.uri, start the "
                "tracking server, or run with tracking.backend=none"
            ) from error
        directory = outbox_dir or artifact_root.parent / "outbox"
        try:
            self.outbox = Outbox(directory, warn_bytes=outbox_warn_bytes)
            self.outbox.adopt_orphans()
        except OSError as error:
            raise TrackingError(f"cannot use the tracking outbox folder {directory}: {error}") from error
        self.sender = OutboxSender(self.outbox, self._client)
        self.sender.start()

    def _create_experiment(self, uri: str, name: str, artifact_root: Path) -> str:
        # A tracking server keeps artifacts where it is configured to (--artifacts-destination): a local
        # path here would put them on this worker's disk, out of the other workers' reach.
        local = is_local_uri(uri)
        if local:
            artifact_root.mkdir(parents=True, exist_ok=True)
        try:
            return str(
                self._client.create_experiment(
                    name, artifact_location=artifact_root.resolve().as_uri() if local else None
                )
            )
        except Exception:
            # Another worker of a shared study created it a moment ago: use theirs.
            existing = self._client.get_experiment_by_name(name)
            if existing is None:
                raise
            return str(existing.experiment_id)

    def _run_tracker(self, run_id: str, logged: set[tuple[str, int]] | None = None) -> MlflowRunTracker:
        return MlflowRunTracker(self.outbox, run_id, logged=logged, wake=self.sender.nudge)

    def new_run_id(self) -> str:
        """An id for a run about to be started: the caller can save it before anything is sent."""
        return new_local_run_id()

    def start_run(
        self,
        name: str,
        *,
        parent: RunTracker | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        now: bool = False,
    ) -> MlflowRunTracker:
        """A new run. Created by the outbox's sender (the caller never waits for MLflow) under a local id,
        ``run_id`` or a new one, that names it until MLflow has it. ``now``: created here, at once, when
        MLflow answers (the study run, once per process, whose id other machines' workers look up)."""
        all_tags = {k: redact(str(v)) for k, v in (tags or {}).items()}
        parent_id = self.outbox.resolve(parent.run_id) if parent is not None else None
        if now and run_id is None and (parent_id is None or not parent_id.startswith(LOCAL_PREFIX)):
            created = {**all_tags, "mlflow.parentRunId": parent_id} if parent_id else all_tags
            try:
                run = self._client.create_run(self.experiment_id, run_name=name, tags=created)
            except Exception as error:
                if not is_transient(error):
                    raise TrackingError(f"MLflow cannot create run {name!r}: {redact(str(error))}") from error
                logger.warning(
                    "MLflow unreachable while creating run %s (%s): it is created later",
                    name,
                    short_error(error),
                )
            else:
                return self._run_tracker(run.info.run_id)
        local = run_id or new_local_run_id()
        self._queue_creation(local, RunSpec(name, parent, tags or {}))
        return self._run_tracker(local)

    def _queue_creation(self, local: str, spec: RunSpec) -> None:
        """The create_run entry of ``local``: the sender finds the run by its local-id tag (created by
        another process or machine before) or creates it with that tag, before anything else queued for it."""
        parent_id = self.outbox.resolve(spec.parent.run_id) if spec.parent is not None else None
        tags = {k: redact(str(v)) for k, v in spec.tags.items()}
        entry = {"op": "create_run", "run": local, "experiment_id": self.experiment_id, "name": spec.name}
        self.outbox.append([{**entry, "tags": tags, "parent": parent_id}])
        self.sender.wake()

    def attach_run(self, run_id: str) -> MlflowRunTracker:
        """Add to an existing run (artifacts, tags) without re-opening it: its status stays as it is."""
        return self._run_tracker(self.outbox.resolve(run_id))

    def resume_run(self, run_id: str, spec: RunSpec | None = None) -> MlflowRunTracker:
        """Re-open a run of an interrupted process: status back to RUNNING, logged steps remembered.

        Nothing here waits for MLflow: the status goes through the outbox, and the steps MLflow already
        has are filtered out by the sender (it reads the run's history before sending its metrics). A
        run whose creation never reached MLflow here (a crash, another machine's outbox) is created from
        ``spec``, or found by its local-id tag when another process created it."""
        # The process that ran it may have died with entries in its outbox since this tracker opened
        # (a worker of a shared study, killed while another goes on): take them over first, so that the
        # steps it logged count as logged and are sent, not run again and left behind.
        try:
            self.outbox.adopt_orphans()
        except OSError as error:
            logger.warning("cannot take over the outbox of a dead process: %s", error)
        real = self.outbox.resolve(run_id)
        pending = self.outbox.pending_keys(real)
        if real.startswith(LOCAL_PREFIX) and not self.outbox.creation_queued(real):
            if spec is None:
                raise TrackingError(f"MLflow run {real} was never created and nothing says how to create it")
            self._queue_creation(real, spec)
        self.outbox.flag_check(real)
        self.outbox.append([{"op": "status", "run": real, "status": "RUNNING"}])
        self.sender.wake()
        return self._run_tracker(real, logged=pending)

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """The run carrying all these tags (a run created just before a crash, before its id was saved)."""
        query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        try:
            runs = self._client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        except Exception as error:
            if not is_transient(error):
                raise TrackingError(f"MLflow cannot search runs ({redact(str(error))})") from error
            logger.warning(
                "MLflow unreachable while looking for a run with tags %s (%s)", dict(tags), short_error(error)
            )
            return None
        return str(runs[0].info.run_id) if runs else None

    def describe(self) -> str:
        return f"MLflow at {redact(self.uri)} (experiment {self.experiment_id})"

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until MLflow has every entry (True) or the timeout passes (False)."""
        return self.sender.drain(self.drain_timeout_s if timeout_s is None else timeout_s)

    def close(self, timeout_s: float | None = None) -> int:
        """Send what can be sent within the timeout, stop the sender; returns the entries left.

        Entries left stay in the outbox file, replayed by the next train, resume or sync.
        """
        self.drain(timeout_s)
        self.sender.stop()
        left = self.outbox.close()
        if left:
            logger.warning(
                "%d tracking entries could not reach MLflow at %s yet; they are kept in %s and sent by the "
                "next `make train`, `make resume` or `python -m dsm5_hpo.cli.sync`",
                left,
                redact(self.uri),
                self.outbox.path,
            )
        return left


def mlflow_run_id(client: Any, run_id: str) -> str | None:
    """MLflow's id of ``run_id``: itself when it is one; for a local id (a run the outbox had not created
    yet when it was recorded, e.g. in a trial's Optuna attrs), the run carrying it as its
    ``dsm5.local_run_id`` tag, or None while no process has created it."""
    if not run_id.startswith(LOCAL_PREFIX):
        return run_id
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    found = client.search_runs(experiments, filter_string=local_id_filter(run_id), max_results=1)
    return str(found[0].info.run_id) if found else None
