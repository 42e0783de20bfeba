"""What runs after every trial of a study (hpo/trial_runner.py calls them, Optuna's signature):
progress and ETA in the log and the study's MLflow run, retention of the ended trials' checkpoints,
the study summary.

They read the study's trials without copying them (``get_trials(deepcopy=False)``: Optuna's cache
replaces a trial's object when it changes and never changes one in place), each copy of a thousand
trials costing 0.15 s; and the summary, which measures every trial's folder (0.6 s with a thousand
trials), is written on a thread of its own while the next trial starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from dsm5_hpo.checkpointing.study_retention import prune_ended_trials
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.hpo.records import StudyRecord
from dsm5_hpo.hpo.summary_plots import refresh_summary_quietly
from dsm5_hpo.hpo.trial_folders import trial_folders
from dsm5_hpo.hpo.workers import finished_trials
from dsm5_hpo.tracking.tracker import RunTracker

logger = logging.getLogger(__name__)


def best_or_none(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


class ProgressReport:
    """Trials done of hpo.n_trials, the best so far, trials per hour and the ETA: one log line and
    the study run's tags (and its best-value metric) after every trial."""

    def __init__(
        self,
        study: optuna.Study,
        study_run: RunTracker,
        *,
        n_trials: int,
        metric: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study_run = study_run
        self.n_trials = n_trials
        self.metric = metric
        self.clock = clock
        self.started = clock()
        # A resumed study's rate counts this run only.
        self.done_before = finished_trials(study.get_trials(deepcopy=False))

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        done = finished_trials(study.get_trials(deepcopy=False))
        rate = (done - self.done_before) / max(1e-9, self.clock() - self.started)
        eta = max(0, self.n_trials - done) / rate if rate > 0 else 0.0
        best = best_or_none(study)
        logger.info(
            "trial %d of %d %s%s; best so far: %s; %.1f trials/hour; ETA %.0f s",
            done,
            self.n_trials,
            trial.state.name,
            f" ({self.metric}={trial.value:.4f})" if trial.value is not None else "",
            f"trial {best.number} {best.value:.4f}" if best else "none",
            rate * 3600,
            eta,
        )
        tags: dict[str, Any] = {
            "progress": f"trial {done}/{self.n_trials}",
            "completed_fraction": f"{done / self.n_trials:.3f}",
            "trials_per_hour": f"{rate * 3600:.2f}",
            "eta_seconds": f"{eta:.0f}",
        }
        if best is not None:
            tags.update(best_trial=str(best.number), best_value=f"{best.value:.6f}")
            self.study_run.log_metrics({f"best_{self.metric}": best.value}, step=done)
        self.study_run.set_tags(tags)


def retention_after_trial(policy: RetentionConfig) -> Callable[[optuna.Study, FrozenTrial], None]:
    """The trial has ended: prune the ended trials' checkpoints to the policy (max_total_size too)."""

    def prune(study: optuna.Study, trial: FrozenTrial) -> None:
        prune_ended_trials(trial_folders(study.get_trials(deepcopy=False)), policy)

    return prune


SummaryWriter = Callable[[Path, Mapping[str, Any], Sequence[FrozenTrial]], None]


class SummaryAfterTrial:
    """summary_report.json rewritten with the trial that just ended, off the trials' path: on a thread of
    its own, one refresh at a time (trials that end while one runs are in the next, which has them all),
    so that the next trial starts at once. :meth:`close` waits for the last one (at the study's end,
    before the study writes its own); a kill leaves the summary of a trial or two before, which the
    resumed study rewrites."""

    def __init__(
        self, study_dir: Path, record: StudyRecord, write: SummaryWriter = refresh_summary_quietly
    ) -> None:
        self.study_dir = study_dir
        self.record = record
        self.write = write
        self._lock = threading.Lock()
        self._pending: tuple[dict[str, Any], list[FrozenTrial]] | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # As they are now: the record changes on this thread, and the trials list is Optuna's own.
        request = (self.record.to_dict(), list(study.get_trials(deepcopy=False)))
        with self._lock:
            self._pending = request
            if self._thread is None:
                self._thread = threading.Thread(target=self._refresh, name="dsm5-summary", daemon=True)
                self._thread.start()

    def _refresh(self) -> None:
        while True:
            with self._lock:
                request, self._pending = self._pending, None
                if request is None:
                    self._thread = None
                    return
            self.write(self.study_dir, *request)  # quiet: a failure is a WARNING, never the study's end

    def close(self) -> None:
        """Wait until every trial that ended is in summary_report.json."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
