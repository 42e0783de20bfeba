"""Where a trial's time goes, for the study's overhead figures (summary_report.json ``time``, the study's
MLflow run): seconds spent training and validating, its set-up (from its start to its first training batch:
nothing trains before), its start-up (from its start to its first optimizer step done: the set-up plus that
step's own work, a whole forward, backward and update) and its teardown (from the end of its last epoch to
its end).

The objective keeps one :class:`TrialTiming` per trial attempt. The trainer's own timings reach it
through :class:`TimedRun`: the trial's run tracker, wrapped, notes ``epoch_seconds`` and ``val_seconds``
as the trainer logs them, so the study never has to read MLflow back for them. The timing is stored at
the end of each attempt, in the trial's Optuna user attr ``timing`` and in its trial.json; the attempts
of a resumed or retried trial add up. An attempt killed outright (SIGKILL, the OOM killer) stores
nothing: its time then counts as overhead, which it was.

Instants are ``time.perf_counter()`` values, the trainer's clock (``Trainer.training_started_at``,
``Trainer.first_step_at``); the
arithmetic is here, the objective supplies the instants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm5_hpo.tracking.tracker import RunTracker

TIMING_ATTR = "timing"
"""The trial's Optuna user attr (and trial.json key) holding :meth:`TrialTiming.as_dict`."""
TRAINING_METRIC = "epoch_seconds"
"""What the trainer logs after each epoch: seconds of its training part ..."""
VALIDATION_METRIC = "val_seconds"
"""... and of its validation."""


def _seconds(value: object) -> float | None:
    """A stored duration as a float (None for anything else: an older or hand-edited record)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


@dataclass
class TrialTiming:
    training_s: float = 0.0
    """Training part of every epoch this trial ran (all attempts)."""
    evaluation_s: float = 0.0
    """Validation after every epoch (all attempts)."""
    setup_s: float | None = None
    """Last attempt: from its start to its first training batch (None: it never trained)."""
    startup_s: float | None = None
    """Last attempt: from its start to its first optimizer step done (None: it never stepped)."""
    teardown_s: float | None = None
    """Last attempt: from the end of its last epoch (validated, checkpoint started, reported) to its
    end; None when it ended otherwise (failed or stopped mid-epoch)."""

    @classmethod
    def from_dict(cls, stored: object) -> TrialTiming:
        """What an earlier attempt stored (anything unreadable counts as nothing)."""
        if not isinstance(stored, Mapping):
            return cls()
        return cls(
            training_s=_seconds(stored.get("training_s")) or 0.0,
            evaluation_s=_seconds(stored.get("evaluation_s")) or 0.0,
            setup_s=_seconds(stored.get("setup_s")),
            startup_s=_seconds(stored.get("startup_s")),
            teardown_s=_seconds(stored.get("teardown_s")),
        )

    def as_dict(self) -> dict[str, float | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "training_s": rounded(self.training_s),
            "evaluation_s": rounded(self.evaluation_s),
            "setup_s": rounded(self.setup_s),
            "startup_s": rounded(self.startup_s),
            "teardown_s": rounded(self.teardown_s),
        }

    def add_logged(self, metrics: Mapping[str, float | None]) -> None:
        """Count an epoch's timings from the metrics the trainer logs at its end."""
        self.training_s += _seconds(metrics.get(TRAINING_METRIC)) or 0.0
        self.evaluation_s += _seconds(metrics.get(VALIDATION_METRIC)) or 0.0


class AttemptClock:
    """One attempt of a trial: its start, its first training batch, its first optimizer step and the end of
    its last epoch (all ``time.perf_counter()``), turned into the set-up, start-up and teardown of its
    :class:`TrialTiming`."""

    def __init__(self, started: float, timing: TrialTiming) -> None:
        self.started = started
        self.timing = timing
        """The trial's timing so far: earlier attempts' sums, this attempt's added as it goes."""
        self.epoch_ended: float | None = None
        self.timing.setup_s = self.timing.startup_s = self.timing.teardown_s = None  # this attempt's only

    def training_start(self, at: float | None) -> None:
        """The trainer's first batch (``Trainer.training_started_at``; None: it never trained)."""
        if at is not None:
            self.timing.setup_s = max(0.0, at - self.started)

    def first_step(self, at: float | None) -> None:
        """The trainer's first optimizer step (``Trainer.first_step_at``; None: it never stepped)."""
        if at is not None:
            self.timing.startup_s = max(0.0, at - self.started)

    def epoch_end(self, at: float) -> None:
        self.epoch_ended = at

    def end(self, at: float, *, after_epoch: bool) -> TrialTiming:
        """The attempt ended at ``at``; ``after_epoch``: at an epoch's end (completed, pruned), not in the
        middle of one (failed, stopped), so that its teardown is what followed its last epoch."""
        if after_epoch and self.epoch_ended is not None:
            self.timing.teardown_s = max(0.0, at - self.epoch_ended)
        return self.timing


class TimedRun:
    """The trial's run tracker as the trainer sees it: everything passes through to ``run``, and the
    epoch timings the trainer logs are also added to ``timing`` (no extra call, nothing waits)."""

    def __init__(self, run: RunTracker, timing: TrialTiming) -> None:
        self.run = run
        self.timing = timing

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        self.timing.add_logged(metrics)
        self.run.log_metrics(metrics, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.log_params(params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.run.set_tags(tags)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.run.log_dict(data, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.run.log_artifact(path, artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.run.finish(status)

    def flush(self) -> None:
        self.run.flush()
