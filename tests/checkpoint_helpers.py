"""A small real training state to checkpoint, shared by the tests that need one without a trainer."""

from __future__ import annotations

import torch
from torch import nn

from dsm5_hpo.checkpointing.manager import TrainingState, capture_rng_state


def small_state(
    model: nn.Module,
    epoch: int,
    value: float,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    metric_name: str = "m",
) -> TrainingState:
    """``model``'s state at ``epoch`` scoring ``value`` (a fresh AdamW's state unless given one)."""
    optimizer = optimizer or torch.optim.AdamW(model.parameters())
    return TrainingState(
        epoch=epoch,
        step=epoch + 1,
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        scheduler_state={},
        rng_state=capture_rng_state(),
        best_value=value,
        best_epoch=epoch,
        history=[],
        metrics={metric_name: value},
        metric_name=metric_name,
        metric_value=value,
    )
