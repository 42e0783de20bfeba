"""Keep a study's checkpoints under ``retention_policy.max_total_size``, worst trials first.

Runs after each trial. Checkpoints are read from their metadata only (hash chain and file sizes,
no weights hashed), so this stays cheap however large the study grows. Only checkpoint
directories are ever deleted: metrics, reports, logs and the MLflow database are not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.layout import CHECKPOINTS_DIR
from dsm5_hpo.storage.checkpoint_io import DELETED_PREFIX, remove_stale_staging
from dsm5_hpo.storage.space_guard import STEP_BEST_ONLY, STEP_STUDY_BEST
from dsm5_hpo.training.checkpoint_pruning import (
    apply_deletions,
    checkpoint_directories,
    size_text,
    strip_resume_state,
)
from dsm5_hpo.training.checkpoint_verify import CheckpointInfo, Invalid, peek_checkpoint
from dsm5_hpo.training.retention import (
    RetentionDecision,
    choose_study_best_only,
    choose_study_checkpoints,
    choose_trial_checkpoints,
)

logger = logging.getLogger(__name__)


def read_trial_checkpoints(trial_dir: Path) -> list[CheckpointInfo]:
    """The trial's checkpoints whose metadata verifies; others are skipped (its manager quarantines them)."""
    infos: list[CheckpointInfo] = []
    for path in checkpoint_directories(trial_dir / CHECKPOINTS_DIR):
        if path.is_symlink():  # never followed: what it points at is not ours to delete
            continue
        try:
            infos.append(peek_checkpoint(path))
        except (Invalid, OSError) as problem:
            logger.warning("retention skips checkpoint %s: %s", path, problem)
    return infos


def prune_study_checkpoints(
    trials: Sequence[FrozenTrial], policy: RetentionConfig, *, running_trial: str | None = None
) -> RetentionDecision:
    """Delete what ``choose_study_checkpoints`` says for these trials; each deletion is logged.

    Trials are keyed by their folder (``user_attrs['trial_dir']``); the study's best is the
    completed trial with the highest value.
    """
    folders = {str(t.user_attrs["trial_dir"]): t for t in trials if "trial_dir" in t.user_attrs}
    checkpoints = {name: read_trial_checkpoints(Path(name)) for name in folders}
    best_trial = _best_trial_dir(folders)
    decision = choose_study_checkpoints(checkpoints, best_trial, policy, running_trial=running_trial)
    if decision.delete:
        total = sum(i.bytes for infos in checkpoints.values() for i in infos)
        logger.warning(
            "the study's checkpoints take %s, over retention_policy.max_total_size=%s: pruning %d",
            size_text(total),
            policy.max_total_size,
            len(decision.delete),
        )
        everything = [info for infos in checkpoints.values() for info in infos]
        apply_deletions(decision.delete, everything, logger)
    return decision


def _best_trial_dir(folders: dict[str, FrozenTrial]) -> str | None:
    complete = [t for t in folders.values() if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: (t.value, -t.number), default=None)
    return str(best.user_attrs["trial_dir"]) if best is not None else None


def prune_study_for_space(trials: Sequence[FrozenTrial], policy: RetentionConfig, step: int) -> int:
    """A storage escalation step over the study's ended trials; returns the bytes freed.

    STEP_BEST_ONLY: each ended trial keeps only its best group, as weights (``policy.tightened()``).
    STEP_STUDY_BEST: only the study's single best checkpoint stays. Running trials are left to
    their own checkpoint manager. Only checkpoint directories are deleted, each deletion logged.
    """
    folders = {str(t.user_attrs["trial_dir"]): t for t in trials if "trial_dir" in t.user_attrs}
    running = {name for name, t in folders.items() if not t.state.is_finished()}
    checkpoints = {name: read_trial_checkpoints(Path(name)) for name in folders if name not in running}
    freed = 0
    if step == STEP_BEST_ONLY:
        for infos in checkpoints.values():
            decision = choose_trial_checkpoints(infos, policy.tightened(), trial_running=False)
            freed += apply_deletions(decision.delete, infos, logger)
            by_path = {info.path: info for info in infos}
            for path in decision.strip_resume_state:
                try:
                    freed += strip_resume_state(by_path[path])
                except (Invalid, OSError) as problem:
                    logger.warning("cannot drop the resume state of checkpoint %s: %s", path, problem)
    elif step == STEP_STUDY_BEST:
        decision = choose_study_best_only(checkpoints, _best_trial_dir(folders), running_trial=None)
        everything = [info for infos in checkpoints.values() for info in infos]
        freed += apply_deletions(decision.delete, everything, logger)
    return freed


def prune_study(study: optuna.Study, policy: RetentionConfig) -> None:
    """``prune_study_checkpoints`` over the ended trials of ``study``.

    A trial still running or queued (on another worker of a shared study, or a dead worker's trial
    queued again, which reuses its folder) is left to its own checkpoint manager.
    """
    trials = study.trials
    active = {str(t.user_attrs.get("trial_dir")) for t in trials if not t.state.is_finished()}
    ended = [t for t in trials if t.state.is_finished() and str(t.user_attrs.get("trial_dir")) not in active]
    try:
        prune_study_checkpoints(ended, policy)
    except Exception as error:  # noqa: BLE001 - housekeeping must not stop a study that is working
        logger.warning("cannot apply the study retention policy: %s", error)


def sweep_deletion_leftovers(trials: Sequence[FrozenTrial]) -> list[Path]:
    """Remove what a kill in the middle of a checkpoint deletion left in the trials' folders (the next
    save would, but an ended trial has no next save). Only once no trial runs: another worker's
    deletion in flight would otherwise be raced. Returns what was removed."""
    folders = {Path(str(t.user_attrs["trial_dir"])) for t in trials if "trial_dir" in t.user_attrs}
    return [
        path
        for folder in sorted(folders)
        for path in remove_stale_staging(folder / CHECKPOINTS_DIR, DELETED_PREFIX)
    ]
