"""A small real training state to checkpoint, shared by the tests that need one without a trainer."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.manager import TrainingState, capture_rng_state
from dsm5_hpo.checkpointing.metadata import blob_root_of


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
        # As the trainer says: parameters training never changes are blobs of their own, shared.
        frozen=frozenset(name for name, p in model.named_parameters() if not p.requires_grad),
    )


def weights_blob(checkpoint: Path) -> Path:
    """The largest blob holding ``checkpoint``'s weights that no other checkpoint of its folder shares:
    what "the weights file" of a format 2.0 checkpoint is, for tests that damage or delete it."""
    metadata = json.loads((checkpoint / "metadata.json").read_text())
    others: set[str] = set()
    for sibling in checkpoint.parent.glob("epoch_*"):
        if sibling != checkpoint and (sibling / "metadata.json").is_file():
            others |= set(blob_names(sibling))
    own = {
        entry["blob"]: entry["bytes"] for entry in metadata["tensors"].values() if entry["blob"] not in others
    }
    assert own, f"every blob of {checkpoint} is shared with another checkpoint"
    sha = max(own, key=lambda name: (own[name], name))
    return BlobStore(blob_root_of(checkpoint)).path(sha)


def blob_names(checkpoint: Path) -> list[str]:
    """The blobs ``checkpoint``'s metadata references."""
    metadata = json.loads((checkpoint / "metadata.json").read_text())
    return sorted({entry["blob"] for entry in metadata["tensors"].values()})


def checkpoint_disk_bytes(checkpoint: Path) -> int:
    """Its own files plus every blob it references, each counted once."""
    store = BlobStore(blob_root_of(checkpoint))
    own = sum(p.stat().st_size for p in checkpoint.iterdir() if p.is_file())
    return own + sum(store.path(name).stat().st_size for name in blob_names(checkpoint))
