"""Retention on real checkpoints: dropping resume state, ending a trial, crash recovery, the study cap."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from checkpoint_helpers import checkpoint_disk_bytes, small_state
from dsm5_hpo.checkpointing.manager import (
    HASH_FILE,
    METADATA_FILE,
    STATE_FILE,
    CheckpointManager,
    TrainingState,
    architecture_signature,
)
from dsm5_hpo.checkpointing.metadata import validate_metadata
from dsm5_hpo.checkpointing.pruning import PENDING_SUFFIX
from dsm5_hpo.checkpointing.study_retention import TrialFolder, prune_study_checkpoints
from dsm5_hpo.config import RetentionConfig

MODEL = nn.Linear(4, 3)


def state(epoch: int, value: float) -> TrainingState:
    return small_state(MODEL, epoch, value)


def manager(folder: Path, **policy: object) -> CheckpointManager:
    return CheckpointManager(
        folder,
        trial_id="trial-1",
        architecture_signature=architecture_signature(MODEL),
        head_config={"hidden_size": 3},
        retention=RetentionConfig(**policy),  # type: ignore[arg-type]
    )


def saved(folder: Path, values: list[float], **policy: object) -> CheckpointManager:
    checkpoints = manager(folder, **policy)
    for epoch, value in enumerate(values):
        checkpoints.save(state(epoch, value))
    return checkpoints


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A trial's checkpoints folder: its blobs go to tmp_path/blobs."""
    return tmp_path / "trial" / "checkpoints"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_stripped_checkpoint_is_valid_for_best_and_weights_but_not_for_resume(folder: Path) -> None:
    checkpoints = saved(folder, [0.5, 0.1], keep_last_n=2)
    first, second = checkpoints.valid_checkpoints()
    assert checkpoints.strip_resume_state(second)
    assert sorted(os.listdir(second.path)) == sorted([HASH_FILE, METADATA_FILE])  # the weights are blobs
    metadata = json.loads((second.path / METADATA_FILE).read_text())
    validate_metadata(metadata)
    assert metadata["resume_capable"] is False
    again = manager(folder)
    assert [(i.epoch, i.resume_capable) for i in again.valid_checkpoints()] == [(0, True), (1, False)]
    loaded = again.load_latest()  # skips the weights-only epoch 1
    assert loaded is not None and loaded.info.epoch == 0
    assert checkpoints.strip_resume_state(first)
    assert manager(folder).load_latest() is None
    best = manager(folder).best()
    assert best is not None and best.epoch == 0
    weights = manager(folder).load_weights(best)
    assert all(torch.equal(weights[k], v) for k, v in MODEL.state_dict().items())
    assert checkpoints.strip_resume_state(best)  # twice: nothing more happens
    assert not (folder / "quarantine").exists()


def test_finish_trial_keeps_only_the_best_weights(folder: Path) -> None:
    checkpoints = saved(folder, [0.2, 0.9, 0.4])
    assert names(folder) == ["epoch_0001", "epoch_0002"]
    decision = checkpoints.finish_trial()
    assert [d.path.name for d in decision.delete] == ["epoch_0002"]
    assert names(folder) == ["epoch_0001"]
    assert not (folder / "epoch_0001" / STATE_FILE).exists()
    again = checkpoints.finish_trial()
    assert again.delete == [] and again.strip_resume_state == []


def test_the_checkpoint_resumed_from_is_kept_until_a_newer_one_is_committed(folder: Path) -> None:
    saved(folder, [0.9, 0.1], keep_last_n=2)
    resumed = manager(folder, keep_last_n=1)
    loaded = resumed.load_latest()
    assert loaded is not None and loaded.info.epoch == 1
    resumed.save(state(2, 0.2))  # epoch 1 is neither newest nor best, but we resumed from it
    assert names(folder) == ["epoch_0000", "epoch_0001", "epoch_0002"]
    resumed.save(state(3, 0.3))  # a newer resume point exists: the policy alone decides
    assert names(folder) == ["epoch_0000", "epoch_0003"]


@pytest.mark.parametrize("swap_started", [False, True])
def test_an_interrupted_strip_is_recovered(tmp_path: Path, swap_started: bool) -> None:
    folder, scratch = tmp_path / "done" / "checkpoints", tmp_path / "scratch" / "checkpoints"
    checkpoints = saved(folder, [0.5])
    (info,) = checkpoints.valid_checkpoints()
    shutil.copytree(folder, scratch)  # the state before the strip
    checkpoints.strip_resume_state(info)
    shutil.copytree(folder / "epoch_0000", scratch / f"epoch_0000{PENDING_SUFFIX}")  # complete new copy
    if swap_started:  # crashed after renaming the old checkpoint away, before the new one came in
        shutil.rmtree(scratch / "epoch_0000")
    (found,) = manager(scratch).valid_checkpoints()
    assert found.resume_capable is not swap_started
    assert names(scratch) == ["epoch_0000"]


def test_study_cap_prunes_worst_trials_on_real_checkpoints(tmp_path: Path) -> None:
    trials = []
    for number, value in enumerate([0.3, 0.9, 0.1]):
        trial_dir = tmp_path / f"trial_{number}"
        saved(trial_dir / "checkpoints", [value]).finish_trial()
        (trial_dir / "validation_report.json").write_text("{}")
        trials.append(TrialFolder(trial_dir, value))
    one = checkpoint_disk_bytes(tmp_path / "trial_0" / "checkpoints" / "epoch_0000")
    policy = RetentionConfig(max_total_size=str(one + one // 2))  # room for one checkpoint
    decision = prune_study_checkpoints(trials, policy)
    assert [d.path.parent.parent.name for d in decision.delete] == ["trial_2", "trial_0"]
    assert list((tmp_path / "trial_1" / "checkpoints").glob("epoch_*"))
    for number in (0, 2):
        assert not list((tmp_path / f"trial_{number}" / "checkpoints").glob("epoch_*"))
        assert (tmp_path / f"trial_{number}" / "validation_report.json").is_file()  # reports stay
    assert prune_study_checkpoints(trials, policy).delete == []
