"""study.json: reading it, and finding the study a command means (the newest unfinished, the newest
finished). Light on purpose: `make status`, `make cleanup` and the other read-only commands import this,
not the study runner (which brings torch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsm5_hpo.errors import ConfigError, StorageError
from dsm5_hpo.layout import ExperimentLayout, StudyPaths
from dsm5_hpo.storage.atomic import atomic_write_json


def write_study_record(study_dir: Path, record: dict[str, Any]) -> None:
    """The one writer of study.json (atomic: a kill leaves the previous record or this one)."""
    atomic_write_json(StudyPaths(study_dir).record, record)


def read_study_record(study_dir: Path) -> dict[str, Any]:
    path = StudyPaths(study_dir).record
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path} not found: {study_dir} is not a study folder") from error
    except (OSError, ValueError) as error:
        raise StorageError(f"{path} cannot be read ({error}); the study record is damaged") from error
    return record


def _newest_study(experiments: Path, wanted: Callable[[dict[str, Any]], bool], missing: str) -> Path:
    """The most recently created study whose record satisfies ``wanted``; ConfigError(missing) if none."""
    candidates = []
    for paths in ExperimentLayout(experiments).studies():
        record = read_study_record(paths.dir)
        if wanted(record):
            candidates.append((str(record.get("created_at", "")), paths.dir))
    if not candidates:
        raise ConfigError(missing)
    return max(candidates)[1]


def newest_unfinished_study(experiments: Path) -> Path:
    """The most recently created study that did not complete (what --resume continues)."""
    return _newest_study(
        experiments,
        lambda record: record.get("state") != "COMPLETE",
        f"no unfinished study under {experiments} to resume; start one with `make train`",
    )


def newest_finished_study(experiments: Path) -> Path:
    """The most recently created study that has a best trial (what evaluate looks at by default)."""
    return _newest_study(
        experiments,
        lambda record: bool(record.get("best_trial_id")),
        f"no finished study under {experiments}; run `make train` first, or pass --experiments-dir",
    )
