"""The checkpoint manager that keeps nothing: checkpointing off (``--no-checkpoint``) or a test."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import torch

from dsm5_hpo.checkpointing.manager import LoadedCheckpoint
from dsm5_hpo.checkpointing.metadata import CheckpointInfo
from dsm5_hpo.checkpointing.retention import RetentionDecision
from dsm5_hpo.checkpointing.training_state import TrainingState
from dsm5_hpo.errors import StorageError


class NullCheckpointManager:
    """Keeps nothing: checkpointing is off (``--no-checkpoint``) or a test drives the loop."""

    def __init__(self) -> None:
        self.saved_epochs: list[int] = []

    def should_save(self, epoch: int) -> bool:
        return False

    def on_disk(self, tensor: torch.Tensor) -> bool:
        return False

    def preflight(self, needed: int) -> None:
        return None

    def wait(self) -> CheckpointInfo | None:
        return None

    def save(self, state: TrainingState) -> CheckpointInfo:
        self.saved_epochs.append(state.epoch)
        return CheckpointInfo(
            path=Path(os.devnull),
            epoch=state.epoch,
            step=state.step,
            metric_name=state.metric_name,
            metric_value=float(state.metric_value),
            sha256="",
            bytes=0,
            created_at=datetime.now(UTC).isoformat(),
        )

    def load_latest(self) -> LoadedCheckpoint | None:
        return None

    def valid_checkpoints(self) -> list[CheckpointInfo]:
        return []

    def best(self) -> CheckpointInfo | None:
        return None

    def co_best(self) -> list[CheckpointInfo]:
        return []

    def finish_trial(self) -> RetentionDecision:
        return RetentionDecision()

    def load_weights(self, info: CheckpointInfo) -> dict[str, torch.Tensor]:
        raise StorageError("checkpointing is off (--no-checkpoint): there are no checkpoint weights to load")
