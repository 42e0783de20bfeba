"""Writing one checkpoint: its weights into the blob store, its own files into a staging folder.

The manager decides when and where (room on disk, fencing, the commit and the pruning after it);
this module writes. A checkpoint's weights are blobs (checkpointing.blobs): each tensor is stored
unless the store has it already, or unless it is a pretrained tensor read in place from a read-only
model folder (checkpointing.base_weights); so a tensor no epoch changed (a frozen layer, a LoRA
base) costs nothing after its first save, or nothing at all. Its own files are training_state.pt,
metadata.json and .hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsm5_hpo.checkpointing.base_weights import BaseWeights
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.io import FileDigest, write_bytes_hashed
from dsm5_hpo.checkpointing.metadata import (
    HASH_FILE,
    METADATA_FILE,
    STATE_FILE,
    CheckpointOwner,
    build_metadata,
)
from dsm5_hpo.checkpointing.tensor_io import blob_digest, put_tensor, torch_save_hashed
from dsm5_hpo.checkpointing.training_state import TrainingState


@dataclass(frozen=True)
class WeightsPlan:
    digests: dict[str, FileDigest]
    """State dict name -> its blob's digest."""
    in_place: dict[str, dict[str, str]]
    """Blob SHA-256 -> {file, key} of the pretrained tensors read where they are (base_weights.py)."""
    missing_bytes: int
    """What the save adds to the store: the blobs it lacks that are not read in place either."""


def plan_weights(
    store: BlobStore, weights: Mapping[str, torch.Tensor], base: BaseWeights | None
) -> WeightsPlan:
    """Where each tensor of ``weights`` will be: in the store already, read in place, or written."""
    digests = {name: blob_digest(tensor) for name, tensor in weights.items()}
    index = base.index() if base is not None else {}
    in_place: dict[str, dict[str, str]] = {}
    missing: dict[str, int] = {}
    for digest in digests.values():
        if store.size(digest.sha256) == digest.bytes:
            continue
        where = index.get(digest.sha256)
        if where is not None:
            in_place[digest.sha256] = {"file": where.file, "key": where.key}
        else:
            missing[digest.sha256] = digest.bytes
    return WeightsPlan(digests, in_place, sum(missing.values()))


def store_weights(store: BlobStore, weights: Mapping[str, torch.Tensor], plan: WeightsPlan) -> set[str]:
    """Put every tensor neither in the store nor read in place (the caller holds ``store.shared()``);
    returns the blobs written."""
    written: set[str] = set()
    for name, tensor in weights.items():
        digest = plan.digests[name]
        if digest.sha256 not in plan.in_place and put_tensor(store, tensor, digest).written:
            written.add(digest.sha256)
    return written


def write_own_files(
    staging: Path,
    owner: CheckpointOwner,
    state: TrainingState,
    payload: dict[str, Any],
    plan: WeightsPlan,
    created_at: str,
) -> tuple[dict[str, Any], int]:
    """training_state.pt, metadata.json (naming the weights' blobs) and .hash into ``staging``, each
    fsynced; returns the metadata and the bytes of the three files."""
    files = {STATE_FILE: torch_save_hashed(payload, staging / STATE_FILE)}
    metadata = build_metadata(owner, state, files, created_at, plan.digests, plan.in_place)
    text = json.dumps(metadata, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    written = (
        files[STATE_FILE].bytes + write_bytes_hashed(staging / METADATA_FILE, text.encode("utf-8")).bytes
    )
    written += write_bytes_hashed(staging / HASH_FILE, f"{metadata['checkpoint_sha256']}\n".encode()).bytes
    return metadata, written
