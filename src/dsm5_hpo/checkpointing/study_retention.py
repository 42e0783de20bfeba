"""Keep a study's checkpoints under ``retention_policy.max_total_size``, worst trials first.

Runs after each trial. It knows trials only as ``TrialFolder`` values (a folder, the trial's value,
whether it still runs): hpo turns its Optuna trials into them. Checkpoints are read from their metadata only (hash chain and file sizes,
no weights hashed), so this stays cheap however large the study grows. Only checkpoint
directories are ever deleted: metrics, reports, logs and the MLflow database are not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsm5_hpo.checkpointing.io import remove_stale_staging
from dsm5_hpo.checkpointing.metadata import CheckpointInfo, InvalidCheckpoint, peek_checkpoint
from dsm5_hpo.checkpointing.pruning import (
    apply_deletions,
    checkpoint_directories,
    strip_resume_state,
)
from dsm5_hpo.checkpointing.retention import (
    RetentionDecision,
    choose_study_best_only,
    choose_study_checkpoints,
    choose_trial_checkpoints,
    tightened,
    unique_bytes,
)
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.layout import DELETED_PREFIX, TrialPaths
from dsm5_hpo.storage.monitor import format_bytes
from dsm5_hpo.storage.space_guard import STEP_BEST_ONLY, STEP_STUDY_BEST

logger = logging.getLogger(__name__)


def read_trial_checkpoints(trial_dir: Path) -> list[CheckpointInfo]:
    """The trial's checkpoints whose metadata verifies; others are skipped (its manager quarantines them)."""
    infos: list[CheckpointInfo] = []
    for path in checkpoint_directories(TrialPaths(trial_dir).checkpoints):
        if path.is_symlink():  # never followed: what it points at is not ours to delete
            continue
        try:
            infos.append(peek_checkpoint(path))
        except (InvalidCheckpoint, OSError) as problem:
            logger.warning("retention skips checkpoint %s: %s", path, problem)
    return infos


@dataclass(frozen=True)
class TrialFolder:
    """One trial as study retention sees it: its folder, its value once it completed, whether it runs."""

    path: Path
    value: float | None = None
    """The trial's objective value; None unless it completed (a failed or pruned trial is never best)."""
    running: bool = False
    """Still running or queued (on this or another worker): its own checkpoint manager owns it."""


def _best_trial_dir(trials: Sequence[TrialFolder]) -> str | None:
    """The folder of the trial with the highest value; the earliest of tied ones."""
    scored = [(t.value, -i, t) for i, t in enumerate(trials) if t.value is not None]
    return str(max(scored, key=lambda x: (x[0], x[1]))[2].path) if scored else None


def prune_study_checkpoints(
    trials: Sequence[TrialFolder], policy: RetentionConfig, *, running_trial: str | None = None
) -> RetentionDecision:
    """Delete what ``choose_study_checkpoints`` says for these trials; each deletion is logged."""
    checkpoints = {str(t.path): read_trial_checkpoints(t.path) for t in trials}
    decision = choose_study_checkpoints(
        checkpoints, _best_trial_dir(trials), policy, running_trial=running_trial
    )
    if decision.delete:
        total = unique_bytes(i for infos in checkpoints.values() for i in infos)
        logger.warning(
            "the study's checkpoints take %s, over retention_policy.max_total_size=%s: pruning %d",
            format_bytes(total),
            policy.max_total_size,
            len(decision.delete),
        )
        everything = [info for infos in checkpoints.values() for info in infos]
        apply_deletions(decision.delete, everything, logger)
    return decision


def prune_study_for_space(trials: Sequence[TrialFolder], policy: RetentionConfig, step: int) -> int:
    """A storage escalation step over the study's ended trials; returns the bytes freed.

    STEP_BEST_ONLY: each ended trial keeps only its best group, as weights (``tightened(policy)``).
    STEP_STUDY_BEST: only the study's single best checkpoint stays. Running trials are left to
    their own checkpoint manager. Only checkpoint directories are deleted, each deletion logged.
    """
    running = {t.path for t in trials if t.running}  # a retry reuses its failed original's folder
    checkpoints = {str(t.path): read_trial_checkpoints(t.path) for t in trials if t.path not in running}
    freed = 0
    if step == STEP_BEST_ONLY:
        for infos in checkpoints.values():
            decision = choose_trial_checkpoints(infos, tightened(policy), trial_running=False)
            freed += apply_deletions(decision.delete, infos, logger)
            by_path = {info.path: info for info in infos}
            for path in decision.strip_resume_state:
                try:
                    freed += strip_resume_state(by_path[path])
                except (InvalidCheckpoint, OSError) as problem:
                    logger.warning("cannot drop the resume state of checkpoint %s: %s", path, problem)
    elif step == STEP_STUDY_BEST:
        decision = choose_study_best_only(checkpoints, _best_trial_dir(trials), running_trial=None)
        everything = [info for infos in checkpoints.values() for info in infos]
        freed += apply_deletions(decision.delete, everything, logger)
    return freed


def prune_ended_trials(trials: Sequence[TrialFolder], policy: RetentionConfig) -> None:
    """``prune_study_checkpoints`` over the ended trials.

    A trial still running or queued (on another worker of a shared study, or a dead worker's trial
    queued again, which reuses its folder) is left to its own checkpoint manager.
    """
    active = {t.path for t in trials if t.running}
    try:
        prune_study_checkpoints([t for t in trials if t.path not in active], policy)
    except Exception as error:  # noqa: BLE001 - housekeeping must not stop a study that is working
        logger.warning("cannot apply the study retention policy: %s", error)


def sweep_deletion_leftovers(trials: Sequence[TrialFolder]) -> list[Path]:
    """Remove what a kill in the middle of a checkpoint deletion left in the trials' folders (the next
    save would, but an ended trial has no next save). Only once no trial runs: another worker's
    deletion in flight would otherwise be raced. Returns what was removed."""
    folders = sorted({t.path for t in trials})
    return [
        path
        for folder in folders
        for path in remove_stale_staging(TrialPaths(folder).checkpoints, DELETED_PREFIX)
    ]
