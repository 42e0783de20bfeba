"""A study at a glance: ``summary_report.json`` (rewritten after every trial) and the rows that
``python -m dsm5_hpo.cli.status`` prints.

Trial counts by state, the best trial, the top trials with their params and scores, what the
study keeps on disk (total and in retained checkpoints) and how long it has run, and how much of that
was neither training nor evaluation (``time.overhead_fraction``, from the trials' timings:
hpo/trial_timing.py). Built from
Optuna's storage and the trial folders only (never MLflow), so it works while MLflow is down and
while the study runs. Validated against ``contracts/summary_report.schema.json`` before writing.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import optuna
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.checkpointing.blob_gc import blob_sizes
from dsm5_hpo.checkpointing.pruning import checkpoint_directories
from dsm5_hpo.errors import ConfigError, StorageError
from dsm5_hpo.hpo.database import opened_storage
from dsm5_hpo.hpo.trial_folders import trial_dir_of
from dsm5_hpo.hpo.trial_timing import TIMING_ATTR, TrialTiming
from dsm5_hpo.layout import StudyPaths, TrialPaths
from dsm5_hpo.storage.atomic import atomic_write_json
from dsm5_hpo.storage.exhaustion import tree_size

SUMMARY_SCHEMA = Path(__file__).resolve().parents[3] / "contracts" / "summary_report.schema.json"
SCHEMA_VERSION = "1.0"
TOP_K = 5
STATES: tuple[str, ...] = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
TIME_FIGURES: tuple[str, ...] = (
    "training_s",
    "evaluation_s",
    "overhead_s",
    "overhead_fraction",
    "trial_setup_s",
    "trial_startup_s",
    "trial_teardown_s",
)
"""What :func:`time_figures` adds to the summary's ``time`` (the study run's metrics: the first four, and
the medians of the others)."""


@dataclass(frozen=True)
class TrialStorage:
    """A trial's disk use; its checkpoints' blobs (experiments/blobs/) are counted once each."""

    retained_checkpoint_bytes: int
    checkpoints: int
    total_bytes: int
    blobs: Mapping[str, int] = field(default_factory=dict, compare=False)
    """SHA-256 -> bytes of the blobs its checkpoints reference: the study totals count each once."""

    @property
    def own_bytes(self) -> int:
        """Its folder alone (total_bytes without the blobs)."""
        return self.total_bytes - sum(self.blobs.values())


def trial_storage(trial_dir: Path) -> TrialStorage:
    checkpoints = [p for p in checkpoint_directories(TrialPaths(trial_dir).checkpoints) if not p.is_symlink()]
    blobs: dict[str, int] = {}
    for checkpoint in checkpoints:
        blobs.update(blob_sizes(checkpoint))
    shared = sum(blobs.values())
    return TrialStorage(
        retained_checkpoint_bytes=sum(tree_size(p) for p in checkpoints) + shared,
        checkpoints=len(checkpoints),
        total_bytes=tree_size(trial_dir) + shared,
        blobs=blobs,
    )


def _duration(trial: FrozenTrial, now: datetime) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or now
    start = trial.datetime_start
    if start.tzinfo is None:  # Optuna stores naive local times
        start, end = start.astimezone(UTC), (end if end.tzinfo else end.astimezone(UTC))
    return max(0.0, (end - start).total_seconds())


def trial_timing(trial: FrozenTrial) -> TrialTiming | None:
    """What the trial stored about its time (None: it stored nothing, e.g. still running, or older)."""
    stored = trial.user_attrs.get(TIMING_ATTR)
    return TrialTiming.from_dict(stored) if stored is not None else None


def trial_row(trial: FrozenTrial, storage: TrialStorage | None, now: datetime) -> dict[str, Any]:
    """One trial as the summary and the status table show it."""
    timing = trial_timing(trial)
    return {
        "number": trial.number,
        "trial_id": str(trial.user_attrs.get("trial_uuid", "")) or None,
        "state": trial.state.name,
        "value": trial.value,
        # One report per epoch, or (hpo.report_every_n_steps) the objective counts the epochs itself.
        "epochs": trial.user_attrs.get("epochs", len(trial.intermediate_values)),
        "best_epoch": trial.user_attrs.get("best_epoch"),
        "params": dict(trial.params),
        "duration_s": _duration(trial, now),
        "setup_s": timing.setup_s if timing else None,
        "startup_s": timing.startup_s if timing else None,
        "teardown_s": timing.teardown_s if timing else None,
        "device": trial.user_attrs.get("device"),
        "retained_checkpoint_bytes": storage.retained_checkpoint_bytes if storage else 0,
        "checkpoints": storage.checkpoints if storage else 0,
    }


def _spread(values: Sequence[float]) -> dict[str, float | int] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "trials": len(values),
    }


def time_figures(
    trials: Sequence[FrozenTrial], wall_time_s: float, test_evaluation_s: float | None
) -> dict[str, Any]:
    """Training and evaluation seconds of the study (every trial's epochs and validations, and the test
    evaluation), the rest of its wall time as overhead, and its trials' start-up and teardown.

    A trial retried in the same folder (a dead worker's, a killed process's) carries its earlier attempts'
    time along: only the newest trial of a folder counts. With several trials at a time (hpo.devices,
    workers) they add up past the wall time: the overhead then reads 0."""
    newest: dict[str, FrozenTrial] = {}
    for trial in trials:
        folder = trial_dir_of(trial)
        key = str(folder) if folder is not None else f"#{trial.number}"
        if key not in newest or newest[key].number < trial.number:
            newest[key] = trial
    timings = [t for t in (trial_timing(trial) for trial in newest.values()) if t is not None]
    if not timings:  # no trial has ended yet (or they predate timings): nothing to tell, not all overhead
        return {key: None for key in TIME_FIGURES}
    training = sum(t.training_s for t in timings)
    evaluation = sum(t.evaluation_s for t in timings) + (test_evaluation_s or 0.0)
    overhead = max(0.0, wall_time_s - training - evaluation)
    return {
        "training_s": round(training, 3),
        "evaluation_s": round(evaluation, 3),
        "overhead_s": round(overhead, 3),
        "overhead_fraction": round(overhead / wall_time_s, 4) if wall_time_s > 0 else None,
        "trial_setup_s": _spread([t.setup_s for t in timings if t.setup_s is not None]),
        "trial_startup_s": _spread([t.startup_s for t in timings if t.startup_s is not None]),
        "trial_teardown_s": _spread([t.teardown_s for t in timings if t.teardown_s is not None]),
    }


def build_summary(
    record: Mapping[str, Any],
    trials: Sequence[FrozenTrial],
    storage: Mapping[int, TrialStorage],
    *,
    study_dir_bytes: int,
    now: datetime,
    top_k: int = TOP_K,
) -> dict[str, Any]:
    """The summary of a study (``record`` = its study.json) from its trials and their disk use."""
    config = record.get("config") or {}
    hpo = config.get("hpo") or {}
    counts = {state: 0 for state in STATES}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    rows = {t.number: trial_row(t, storage.get(t.number), now) for t in trials}
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-float(t.value or 0.0), t.number),
    )
    created = datetime.fromisoformat(str(record["created_at"]))
    wall_time_s = _wall_time(record, now)
    # Unique bytes: a blob that several trials' checkpoints share (a frozen layer, a LoRA base) once.
    blobs: dict[str, int] = {}
    for measured in storage.values():
        blobs.update(measured.blobs)
    shared = sum(blobs.values())
    retained = sum(s.retained_checkpoint_bytes - sum(s.blobs.values()) for s in storage.values()) + shared
    trials_bytes = sum(s.own_bytes for s in storage.values()) + shared
    return {
        "schema_version": SCHEMA_VERSION,
        "study_id": str(record["study_id"]),
        "state": str(record.get("state", "UNKNOWN")),
        "metric": str(hpo.get("metric", "")),
        "direction": "maximize",
        "n_trials_target": int(hpo.get("n_trials", len(trials))),
        "trial_counts": counts,
        "best_trial": rows[complete[0].number] if complete else None,
        "top_trials": [rows[t.number] for t in complete[:top_k]],
        "test_value": _test_value(record),
        "storage": {
            "total_bytes": study_dir_bytes + trials_bytes,
            "study_dir_bytes": study_dir_bytes,
            "trials_bytes": trials_bytes,
            "retained_checkpoint_bytes": retained,
            "retained_checkpoints": sum(s.checkpoints for s in storage.values()),
            "max_total_size": (config.get("retention_policy") or {}).get("max_total_size"),
        },
        "time": {
            "created_at": created.isoformat(),
            "updated_at": now.isoformat(),
            "wall_time_s": wall_time_s,
            "trials_time_s": sum(r["duration_s"] or 0.0 for r in rows.values()),
            **time_figures(trials, wall_time_s, _float_or_none(record.get("test_evaluation_s"))),
        },
        "synthetic_data": bool(record.get("synthetic_data", False)),
    }


def _wall_time(record: Mapping[str, Any], now: datetime) -> float:
    """From the study's creation to its end, or to ``now`` while it runs."""
    created = datetime.fromisoformat(str(record["created_at"]))
    finished = record.get("finished_at")
    end = datetime.fromisoformat(str(finished)) if finished and record.get("state") != "RUNNING" else now
    return max(0.0, (end - created).total_seconds())


def study_time_metrics(
    record: Mapping[str, Any], trials: Sequence[FrozenTrial], now: datetime
) -> dict[str, float]:
    """The summary's wall time and overhead figures as MLflow metrics of the study's run (those known)."""
    wall_time_s = _wall_time(record, now)
    figures = time_figures(trials, wall_time_s, _float_or_none(record.get("test_evaluation_s")))
    metrics = {"wall_time_s": wall_time_s, **{key: figures[key] for key in TIME_FIGURES[:4]}}
    # ... and the trials' median set-up, start-up and teardown (trial_setup_median_s, ...).
    for key in TIME_FIGURES[4:]:
        metrics[key.removesuffix("_s") + "_median_s"] = (figures[key] or {}).get("median")
    return {key: float(value) for key, value in metrics.items() if value is not None}


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _test_value(record: Mapping[str, Any]) -> float | None:
    report = record.get("report")
    if not report:
        return None
    try:
        data = json.loads(Path(str(report)).read_text(encoding="utf-8"))
        return float(data["optimization_metric"]["test_value"])
    except (OSError, ValueError, KeyError, TypeError):  # the summary must not fail on a moved report
        return None


def not_created_yet(storage: str) -> bool:
    """A study's own SQLite file that its first trial has not created yet."""
    return storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file()


def load_trials(record: Mapping[str, Any]) -> list[FrozenTrial]:
    """Every trial of the study, read from its Optuna storage (works while the study runs)."""
    storage = str(record["optuna_storage"])
    if not_created_yet(storage):
        return []  # created, no trial stored yet
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # One read, one short-lived pool: status and the dashboard call this in a loop.
    with opened_storage(storage) as opened:
        try:
            study = optuna.load_study(study_name=str(record["study_name"]), storage=opened)
        except KeyError as error:  # Optuna: no study of that name in the storage
            raise StorageError(f"{storage} holds no study {record['study_name']!r}: {error}") from error
        return list(study.trials)


def measure_storage(trials: Sequence[FrozenTrial]) -> dict[int, TrialStorage]:
    """Disk use of each trial's folder now, by trial number. A folder shared by a failed trial and its
    retry (a dead worker's trial queued again) is counted once, for the retry."""
    newest = {str(folder): t.number for t in trials if (folder := trial_dir_of(t)) is not None}
    return {number: trial_storage(Path(folder)) for folder, number in newest.items()}


def collect_summary(
    study_dir: Path,
    record: Mapping[str, Any],
    trials: Sequence[FrozenTrial],
    *,
    now: datetime | None = None,
    storage: Mapping[int, TrialStorage] | None = None,
) -> dict[str, Any]:
    """:func:`build_summary` with disk use measured now (unless ``storage`` is given)."""
    return build_summary(
        record,
        trials,
        storage if storage is not None else measure_storage(trials),
        study_dir_bytes=tree_size(study_dir),
        now=now or datetime.now(UTC),
    )


@functools.cache
def _validator(schema_path: Path) -> jsonschema.protocols.Validator:
    """The schema read and checked once per process (the summary is validated after every trial)."""
    try:
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the summary schema {schema_path}: {error}") from error
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def validate_summary(summary: Mapping[str, Any], schema_path: Path = SUMMARY_SCHEMA) -> None:
    """jsonschema.ValidationError (its best match, as jsonschema.validate raises) when it breaks the contract."""
    error = jsonschema.exceptions.best_match(_validator(schema_path).iter_errors(dict(summary)))
    if error is not None:
        raise error


def write_summary(study_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Validate, then write ``summary_report.json`` atomically into ``study_dir``."""
    validate_summary(summary)
    path = StudyPaths(study_dir).summary
    atomic_write_json(path, dict(summary))
    return path
