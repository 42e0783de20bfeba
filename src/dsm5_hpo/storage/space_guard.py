"""Room for the next checkpoint: check free space before training and each save, escalate, or stop.

Before a trial trains and before each checkpoint is written, the checkpoint manager asks
``ensure_room(needed)``. When the disk holding the experiments directory is under the retention
policy's ``disk_space_threshold_percent`` or the checkpoint will not fit, pruning escalates one
step at a time, reading the disk again after each step, and stops escalating as soon as the
checkpoint fits above the threshold:

1. prune the running trial's unprotected checkpoints (the manager's own tight retention pass);
2. keep only the best for ended and subsequent trials (keep_last_n=0, keep_best_k=1), sticky for
   the rest of this process: the disk did not have room for more;
3. keep only the study's single best checkpoint (the running trial's resume point excepted).

If the checkpoint still does not fit, ``StorageExhaustedError`` stops the job (exit code 4) with
the report of ``storage.exhaustion``; it is raised *before* anything is written, so no partial
checkpoint is left, and the study stays resumable. Below the threshold but fitting, the save goes
ahead with a WARNING. The steps' actions are callbacks: this module decides when, not what.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dsm5_hpo.storage.exhaustion import StorageExhaustedError, largest_artifacts
from dsm5_hpo.storage.monitor import DiskMonitor, DiskStatus, StorageMonitor, format_bytes

logger = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20
"""Kept free beyond the estimate: directory entries, block rounding, the log lines of the save."""

STEP_TRIAL = 1
STEP_BEST_ONLY = 2
STEP_STUDY_BEST = 3
STEP_NAMES = {
    STEP_TRIAL: "prune the running trial's unprotected checkpoints",
    STEP_BEST_ONLY: "keep only each trial's best checkpoint from now on",
    STEP_STUDY_BEST: "keep only the study's single best checkpoint",
}

PruneCallback = Callable[[], int]
"""An escalation step's action; returns the bytes it freed (for the log)."""
StudyPruneCallback = Callable[[int], int]
"""Study-wide action for a step (STEP_BEST_ONLY or STEP_STUDY_BEST); returns the bytes freed."""


@dataclass(frozen=True)
class SpaceVerdict:
    """Pure judgement of one disk reading against the next checkpoint's size."""

    fits: bool
    """The checkpoint (plus ``RESERVE_BYTES``) fits in the free space."""
    low: bool
    """Free space is under the policy's threshold."""

    @property
    def ok(self) -> bool:
        return self.fits and not self.low


def assess(status: DiskStatus, needed: int, threshold_percent: float) -> SpaceVerdict:
    return SpaceVerdict(
        fits=needed + RESERVE_BYTES <= status.free, low=status.free_percent < threshold_percent
    )


def exhaustion_error(
    status: DiskStatus, needed: int, experiments_dir: Path, study_id: str | None
) -> StorageExhaustedError:
    """The error (with its report) for ``needed`` bytes that cannot be written; the report is
    logged at ERROR here, with its data attached for the JSON log."""
    error = StorageExhaustedError.from_status(
        status, needed, largest_artifacts(experiments_dir), experiments_dir=experiments_dir, study_id=study_id
    )
    logger.error("%s", error, extra={"report": error.report})
    return error


class SpaceGuard:
    """Decides when to escalate pruning and when to stop; one per study process."""

    def __init__(
        self,
        monitor: DiskMonitor,
        experiments_dir: Path,
        *,
        threshold_percent: float,
        study_id: str | None = None,
        prune_study: StudyPruneCallback | None = None,
        escalate: bool = True,
        concurrent: int = 1,
    ) -> None:
        if concurrent < 1:
            raise ValueError(f"concurrent must be >= 1, got {concurrent}")
        self.concurrent = concurrent
        """Trials writing checkpoints on this disk at once (hpo.devices): room is kept for the next
        checkpoint of each, so that N trials checking the same free space cannot all take it."""
        self.monitor = monitor
        self.experiments_dir = experiments_dir
        self.threshold_percent = threshold_percent
        self.study_id = study_id
        self._prune_study = prune_study
        self.escalate = escalate
        """False for retention_policy.keep_all: the user keeps everything, so a full disk stops the job."""
        self.level = 0
        """Highest escalation step reached; from STEP_BEST_ONLY on, ``best_only`` holds."""

    @property
    def best_only(self) -> bool:
        """Escalation reached STEP_BEST_ONLY: the retention policy is to be tightened from now on
        (checkpointing.retention.tightened) for the rest of this process."""
        return self.level >= STEP_BEST_ONLY

    def ensure_room(self, needed: int, prune_trial: PruneCallback, *, what: str = "next checkpoint") -> None:
        """Return when ``needed`` bytes can be written; escalate first if the disk is low or full.

        Raises StorageExhaustedError (nothing written) when the last step still leaves too little.
        """
        reserved = needed * self.concurrent
        status = self.monitor.check_now()
        verdict = assess(status, reserved, self.threshold_percent)
        if verdict.ok:
            return
        logger.warning(
            "%s needs %s%s; disk %s: %s",
            what,
            format_bytes(needed),
            f" ({format_bytes(reserved)} kept for the {self.concurrent} trials writing at once)"
            if self.concurrent > 1
            else "",
            status.describe(),
            f"below the retention_policy.disk_space_threshold_percent={self.threshold_percent:g}% threshold"
            if verdict.fits
            else "it does not fit",
        )
        if self.escalate:
            for step in (STEP_TRIAL, STEP_BEST_ONLY, STEP_STUDY_BEST):
                freed = self._run_step(step, prune_trial)
                status = self.monitor.check_now()
                verdict = assess(status, reserved, self.threshold_percent)
                logger.warning(
                    "storage escalation step %d (%s) freed %s; now %s",
                    step,
                    STEP_NAMES[step],
                    format_bytes(freed),
                    status.describe(),
                )
                if verdict.ok:
                    return
        if not assess(status, needed, self.threshold_percent).fits:  # not even this trial's own checkpoint
            raise self.exhausted(needed, status)
        logger.warning(
            "free space stays below %g%% after every escalation step; writing the %s (%s) anyway",
            self.threshold_percent,
            what,
            format_bytes(needed),
        )

    def exhausted(self, needed: int, status: DiskStatus | None = None) -> StorageExhaustedError:
        """The error (with its report) for a checkpoint of ``needed`` bytes that cannot be written."""
        status = status if status is not None else self.monitor.check_now()
        return exhaustion_error(status, needed, self.experiments_dir, self.study_id)

    def _run_step(self, step: int, prune_trial: PruneCallback) -> int:
        self.level = max(self.level, step)
        if step == STEP_TRIAL:
            return prune_trial()
        return self._prune_study(step) if self._prune_study is not None else 0


class NullSpaceGuard:
    """No checks and no escalation (tests, single checkpoint managers outside a study).

    A write that still hits a full disk gets the same exhaustion report, read from the real disk.
    """

    def __init__(self, experiments_dir: Path) -> None:
        self.experiments_dir = experiments_dir

    best_only = False

    def ensure_room(self, needed: int, prune_trial: PruneCallback, *, what: str = "next checkpoint") -> None:
        return None

    def exhausted(self, needed: int, status: DiskStatus | None = None) -> StorageExhaustedError:
        # A monitor that is never started: one reading of the real disk, by the monitor's own code.
        status = status if status is not None else StorageMonitor(self.experiments_dir).check_now()
        return exhaustion_error(status, needed, self.experiments_dir, None)
