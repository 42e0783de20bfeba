"""The study's Optuna trials as study retention sees them (checkpointing knows nothing of Optuna)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.checkpointing.study_retention import TrialFolder

TRIAL_DIR_ATTR = "trial_dir"
"""The Optuna user attribute holding a trial's folder (set once, when the trial first runs)."""


def trial_dir_of(trial: FrozenTrial | optuna.Trial) -> Path | None:
    """The trial's folder, or None for a trial that never started running on any worker."""
    value = trial.user_attrs.get(TRIAL_DIR_ATTR)
    return Path(str(value)) if value else None


def started_trial_dir(trial: FrozenTrial | optuna.Trial) -> Path:
    """The folder of a trial that has started (its objective sets it first): a bug when it has none."""
    folder = trial_dir_of(trial)
    if folder is None:
        raise RuntimeError(f"trial {trial.number} has no {TRIAL_DIR_ATTR!r} user attribute: it never started")
    return folder


def trial_folders(trials: Sequence[FrozenTrial]) -> list[TrialFolder]:
    """One TrialFolder per trial that has a folder, in trial order (ties for best go to the earliest)."""
    folders = []
    for trial in trials:
        path = trial_dir_of(trial)
        if path is not None:
            value = trial.value if trial.state == TrialState.COMPLETE else None
            folders.append(TrialFolder(path, value, running=not trial.state.is_finished()))
    return folders
