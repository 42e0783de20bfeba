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
from collections.abc import Collection, Mapping
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
from dsm5_hpo.checkpointing.tensor_io import (
    blob_digest,
    group_digest,
    put_group,
    put_tensor,
    torch_save_hashed,
)
from dsm5_hpo.checkpointing.training_state import TrainingState


@dataclass(frozen=True)
class WeightsPlan:
    digests: dict[str, FileDigest]
    """State dict name -> the digest of the blob holding it."""
    group: tuple[str, ...]
    """The names stored together in this checkpoint's own blob (every tensor training may change)."""
    in_place: dict[str, dict[str, str]]
    """Blob SHA-256 -> {file, key} of the pretrained tensors read where they are (base_weights.py)."""
    missing_bytes: int
    """What the save adds to the store: the blobs it lacks that are not read in place either."""


class FrozenDigests:
    """The blob digests of one trial's frozen tensors (``TrainingState.frozen``), computed at their
    first save and reused while a tensor is the same one, unmodified: its version counter counts every
    in-place write, a resume's ``load_state_dict`` included. Hashing a multi-GB LoRA base at every
    save would cost seconds of CPU for tensors no step changes."""

    def __init__(self) -> None:
        self._cached: dict[str, tuple[tuple[Any, ...], FileDigest]] = {}

    def known(self, state: TrainingState) -> dict[str, FileDigest]:
        known: dict[str, FileDigest] = {}
        for name in sorted(state.frozen & state.model_state.keys()):
            tensor = state.model_state[name]
            identity = (tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype, tensor.device)
            cached = self._cached.get(name)
            if cached is None or cached[0] != identity:
                cached = self._cached[name] = (identity, blob_digest(tensor))
            known[name] = cached[1]
        return known


def plan_weights(
    store: BlobStore,
    weights: Mapping[str, torch.Tensor],
    base: BaseWeights | None,
    known: Mapping[str, FileDigest] | None = None,
    frozen: Collection[str] = (),
) -> WeightsPlan:
    """Where each tensor of ``weights`` will be: in the store already, read in place, or written.

    A ``frozen`` tensor (one training never changes) is a blob of its own, so that every checkpoint of
    every trial shares it, or is read in place from ``base``; the others, which every step changes, go
    into one blob per checkpoint (one file and one fsync, not one per tensor). ``known``: digests of
    frozen tensors that cannot have changed since they were computed."""
    known = known or {}
    digests = {name: known.get(name) or blob_digest(weights[name]) for name in weights if name in frozen}
    group = tuple(sorted(name for name in weights if name not in frozen))
    if group:
        together = group_digest({name: weights[name] for name in group})
        digests.update(dict.fromkeys(group, together))
    index = base.index() if base is not None else {}
    in_place: dict[str, dict[str, str]] = {}
    missing: dict[str, int] = {}
    for name, digest in digests.items():
        if store.size(digest.sha256) == digest.bytes:
            continue
        where = index.get(digest.sha256) if name not in group else None
        if where is not None:
            in_place[digest.sha256] = {"file": where.file, "key": where.key}
        else:
            missing[digest.sha256] = digest.bytes
    return WeightsPlan(digests, group, in_place, sum(missing.values()))


def store_weights(store: BlobStore, weights: Mapping[str, torch.Tensor], plan: WeightsPlan) -> set[str]:
    """Put every blob neither in the store nor read in place (the caller holds ``store.shared()``);
    returns the blobs written."""
    written: set[str] = set()
    for name, tensor in weights.items():
        digest = plan.digests[name]
        if name in plan.group or digest.sha256 in plan.in_place:
            continue
        if put_tensor(store, tensor, digest).written:
            written.add(digest.sha256)
    if plan.group:
        together = plan.digests[plan.group[0]]
        if put_group(store, {name: weights[name] for name in plan.group}, together).written:
            written.add(together.sha256)
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
    metadata = build_metadata(owner, state, files, created_at, plan.digests, plan.in_place, plan.group)
    text = json.dumps(metadata, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    written = (
        files[STATE_FILE].bytes + write_bytes_hashed(staging / METADATA_FILE, text.encode("utf-8")).bytes
    )
    written += write_bytes_hashed(staging / HASH_FILE, f"{metadata['checkpoint_sha256']}\n".encode()).bytes
    return metadata, written
