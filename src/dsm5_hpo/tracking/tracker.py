"""Experiment tracking: one MLflow parent run per study, one child run per trial.

The trainer only sees :class:`RunTracker` (log metrics, params, tags); the study runner
creates runs through :class:`Tracker`. ``NullTracker`` is the version for tests and for
``tracking.backend=none``; ``tracking.mlflow_tracker`` is the MLflow one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dsm5_hpo.tracking.outbox import new_local_run_id


class RunTracker(Protocol):
    @property
    def run_id(self) -> str: ...

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...
    def flush(self) -> None: ...


@dataclass(frozen=True)
class RunSpec:
    """What a run is created with: given again when a run is re-opened, so that a run whose creation
    never reached MLflow (a crash, another machine's outbox) is created then."""

    name: str
    parent: RunTracker | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)


class Tracker(Protocol):
    def new_run_id(self) -> str: ...
    def start_run(
        self,
        name: str,
        *,
        parent: RunTracker | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        now: bool = False,
    ) -> RunTracker: ...
    def resume_run(self, run_id: str, spec: RunSpec | None = None) -> RunTracker: ...
    def attach_run(self, run_id: str) -> RunTracker: ...
    def find_run(self, tags: Mapping[str, str]) -> str | None: ...
    def describe(self) -> str: ...
    def drain(self, timeout_s: float | None = None) -> bool: ...
    def close(self, timeout_s: float | None = None) -> int: ...


class NullRunTracker:
    """Accepts everything and keeps the metrics in memory (tests read them back)."""

    def __init__(self, run_id: str = "null") -> None:
        self.run_id = run_id
        self.metrics: list[tuple[str, float, int]] = []
        self.params: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.artifacts: list[tuple[Path, str | None]] = []
        self.status = "RUNNING"

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        self.metrics.extend((k, float(v), step) for k, v in metrics.items() if v is not None and finite(v))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update(tags)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((path, artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        self.status = status

    def flush(self) -> None:
        return None


class NullTracker:
    def __init__(self) -> None:
        self.runs: list[NullRunTracker] = []

    def new_run_id(self) -> str:
        return f"null-{new_local_run_id()}"

    def start_run(
        self,
        name: str,
        *,
        parent: RunTracker | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        now: bool = False,
    ) -> NullRunTracker:
        run = NullRunTracker(run_id=run_id or f"null-{len(self.runs)}")
        run.set_tags({"name": name, **(tags or {})})
        self.runs.append(run)
        return run

    def resume_run(self, run_id: str, spec: RunSpec | None = None) -> NullRunTracker:
        for run in self.runs:
            if run.run_id == run_id:
                run.status = "RUNNING"
                return run
        run = NullRunTracker(run_id=run_id)
        self.runs.append(run)
        return run

    def attach_run(self, run_id: str) -> NullRunTracker:
        for run in self.runs:
            if run.run_id == run_id:
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

    def drain(self, timeout_s: float | None = None) -> bool:
        return True

    def close(self, timeout_s: float | None = None) -> int:
        return 0


def is_local_uri(uri: str) -> bool:
    """A tracking URI MLflow reads and writes directly (a database or folder here), not a server."""
    return uri.startswith(("sqlite:", "file:"))


def finite(value: float | None) -> bool:
    """A value a metric series can hold (MLflow refuses NaN and infinities)."""
    return value is not None and math.isfinite(float(value))
