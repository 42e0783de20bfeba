"""Finding the study a command means (the newest unfinished, the newest
finished). Light on purpose: `make status`, `make cleanup` and the other read-only commands import this,
not the study runner (which brings torch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.records import StudyRecord, read_study_record
from dsm5_hpo.layout import ExperimentLayout


def _newest_study(experiments: Path, wanted: Callable[[StudyRecord], bool], missing: str) -> Path:
    """The most recently created study whose record satisfies ``wanted``; ConfigError(missing) if none."""
    candidates = []
    for paths in ExperimentLayout(experiments).studies():
        record = read_study_record(paths.dir)
        if wanted(record):
            candidates.append((record.created_at, paths.dir))
    if not candidates:
        raise ConfigError(missing)
    return max(candidates)[1]


def newest_unfinished_study(experiments: Path) -> Path:
    """The most recently created study that did not complete (what --resume continues)."""
    return _newest_study(
        experiments,
        lambda record: record.state != "COMPLETE",
        f"no unfinished study under {experiments} to resume; start one with `make train`",
    )


def newest_finished_study(experiments: Path) -> Path:
    """The most recently created study that has a best trial (what evaluate looks at by default)."""
    return _newest_study(
        experiments,
        lambda record: bool(record.best_trial_id),
        f"no finished study under {experiments}; run `make train` first, or pass --experiments-dir",
    )
