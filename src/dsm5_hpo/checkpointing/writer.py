"""Writing one checkpoint: its weights into the blob store, its own files into a staging folder.

The manager decides when and where (room on disk, fencing, the commit and the pruning after it);
this module writes. A checkpoint's weights are blobs (checkpointing.blobs), each tensor stored unless
the store has it already, so a tensor no epoch changed (a frozen layer, a LoRA base) costs nothing
after its first save; its own files are training_state.pt, metadata.json and .hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

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


def weight_digests(
    store: BlobStore, weights: Mapping[str, torch.Tensor]
) -> tuple[dict[str, FileDigest], int]:
    """Each tensor's blob digest, and the bytes of the blobs the store does not have (what a save adds)."""
    digests = {name: blob_digest(tensor) for name, tensor in weights.items()}
    missing = {d.sha256: d.bytes for d in digests.values() if store.size(d.sha256) != d.bytes}
    return digests, sum(missing.values())


def store_weights(
    store: BlobStore, weights: Mapping[str, torch.Tensor], digests: Mapping[str, FileDigest]
) -> set[str]:
    """Put every tensor the store lacks (the caller holds ``store.shared()``); the blobs written."""
    return {
        digests[name].sha256
        for name, tensor in weights.items()
        if put_tensor(store, tensor, digests[name]).written
    }


def write_own_files(
    staging: Path,
    owner: CheckpointOwner,
    state: TrainingState,
    payload: dict[str, Any],
    digests: Mapping[str, FileDigest],
    created_at: str,
) -> tuple[dict[str, Any], int]:
    """training_state.pt, metadata.json (naming the weights' blobs) and .hash into ``staging``, each
    fsynced; the metadata and the bytes of the three files."""
    files = {STATE_FILE: torch_save_hashed(payload, staging / STATE_FILE)}
    metadata = build_metadata(owner, state, files, created_at, digests)
    text = json.dumps(metadata, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    written = (
        files[STATE_FILE].bytes + write_bytes_hashed(staging / METADATA_FILE, text.encode("utf-8")).bytes
    )
    written += write_bytes_hashed(staging / HASH_FILE, f"{metadata['checkpoint_sha256']}\n".encode()).bytes
    return metadata, written
