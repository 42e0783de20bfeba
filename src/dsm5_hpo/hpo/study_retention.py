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
from dsm5_hpo.hpo.objective import CHECKPOINTS_DIR
from dsm5_hpo.training.checkpoint_pruning import apply_deletions, checkpoint_directories, size_text
from dsm5_hpo.training.checkpoint_verify import CheckpointInfo, Invalid, peek_checkpoint
from dsm5_hpo.training.retention import RetentionDecision, choose_study_checkpoints

logger = logging.getLogger(__name__)


def read_trial_checkpoints(trial_dir: Path) -> list[CheckpointInfo]:
    """The trial's checkpoints whose metadata verifies; others are skipped (its manager quarantines them)."""
    infos: list[CheckpointInfo] = []
    for path in checkpoint_directories(trial_dir / CHECKPOINTS_DIR):
        try:
            infos.append(peek_checkpoint(path))
        except (Invalid, OSError) as problem:
            logger.warning("study retention skips checkpoint %s: %s", path, problem)
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
    complete = [t for t in folders.values() if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: (t.value, -t.number), default=None)
    best_trial = str(best.user_attrs["trial_dir"]) if best is not None else None
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


def prune_study(study: optuna.Study, policy: RetentionConfig) -> None:
    """``prune_study_checkpoints`` over every trial of ``study`` (none is running between trials)."""
    try:
        prune_study_checkpoints(study.trials, policy)
    except Exception as error:  # noqa: BLE001 - housekeeping must not stop a study that is working
        logger.warning("cannot apply the study retention policy: %s", error)
