"""Verifying a checkpoint before anything in it is deserialized, then reading it back.

The chain of trust is metadata.py's; here the checkpoint is also held against its owner (trial,
architecture, heads) and its files are re-hashed, so a damaged or foreign checkpoint is refused with
the file at fault and the reason, never half-loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dsm5_hpo.checkpointing.base_weights import BaseTensor, load_base_tensor
from dsm5_hpo.checkpointing.blob_gc import checkpoints_using
from dsm5_hpo.checkpointing.blobs import BLOB_KEY, BlobError, BlobStore
from dsm5_hpo.checkpointing.io import quarantine_directory
from dsm5_hpo.checkpointing.metadata import (
    METADATA_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointInfo,
    CheckpointOwner,
    InvalidCheckpoint,
    blob_root_of,
    info_from_metadata,
    read_checkpoint_metadata,
)
from dsm5_hpo.checkpointing.training_state import TrainingState, state_from_payload
from dsm5_hpo.layout import ExperimentLayout
from dsm5_hpo.storage.atomic import sha256_file

logger = logging.getLogger(__name__)


def inspect_checkpoint(owner: CheckpointOwner, path: Path, *, hashed: Sequence[str]) -> CheckpointInfo:
    """Verify ``path`` without deserializing any of it; raises InvalidCheckpoint naming the file and the reason.

    Cheap checks always run (hash chain, file sizes, compatibility); the files named in ``hashed``
    that the checkpoint lists (a weights-only one has no training_state.pt) are also read and
    compared with their SHA-256.
    """
    metadata, total = read_checkpoint_metadata(path)
    if metadata["trial_id"] != owner.trial_id:
        raise InvalidCheckpoint(
            METADATA_FILE, f"belongs to trial {metadata['trial_id']}, not {owner.trial_id}"
        )
    if metadata["architecture_signature"] != owner.architecture_signature:
        raise InvalidCheckpoint(
            METADATA_FILE,
            f"its architecture signature {metadata['architecture_signature']} differs from this model's "
            f"{owner.architecture_signature} (another encoder, or layers/shapes/dtypes changed)",
            incompatible=True,
        )
    if metadata["head_config"] != owner.head_config:
        raise InvalidCheckpoint(
            METADATA_FILE,
            f"its head config {metadata['head_config']} differs from this model's {owner.head_config}",
            incompatible=True,
        )
    if WEIGHTS_FILE in hashed and metadata.get("tensors"):
        store = BlobStore(blob_root_of(path))
        for sha256, base in sorted(_blob_sources(metadata).items()):
            try:
                if base is None or store.size(sha256) is not None:
                    store.verify(sha256)
                else:
                    load_base_tensor(base, sha256)
            except BlobError as error:
                raise InvalidCheckpoint(
                    f"blob {sha256}", error.reason, blob=sha256 if base is None else None
                ) from None
    for name in (name for name in hashed if name in metadata["files"]):
        try:
            actual = sha256_file(path / name)
        except OSError as error:  # an I/O error reading it back is corruption too
            raise InvalidCheckpoint(name, f"unreadable ({error})") from None
        if actual != metadata["files"][name]["sha256"]:
            raise InvalidCheckpoint(
                name, f"SHA-256 mismatch: expected {metadata['files'][name]['sha256']}, found {actual}"
            )
    return info_from_metadata(path, metadata, total)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of checkpoint ``path`` as CPU tensors, from its blobs (each verified by its
    name as it is read) or, in format 1.0, from its model.safetensors; raises InvalidCheckpoint."""
    from safetensors.torch import load_file

    from dsm5_hpo.checkpointing.tensor_io import load_blob

    metadata, _ = read_checkpoint_metadata(path)
    if not metadata.get("tensors"):
        try:
            return load_file(str(path / WEIGHTS_FILE), device="cpu")
        except Exception as error:  # noqa: BLE001 - any parse failure makes the checkpoint unusable
            raise InvalidCheckpoint(WEIGHTS_FILE, f"cannot be read as safetensors ({error})") from None
    store = BlobStore(blob_root_of(path))
    sources = _blob_sources(metadata)
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    weights: dict[str, torch.Tensor] = {}
    for name, entry in metadata["tensors"].items():
        sha256 = str(entry["blob"])
        if sha256 not in loaded:
            base = sources[sha256]
            try:
                if base is None or store.size(sha256) is not None:
                    loaded[sha256] = load_blob(store, sha256)
                else:
                    loaded[sha256] = {BLOB_KEY: load_base_tensor(base, sha256)}
            except BlobError as error:
                raise InvalidCheckpoint(
                    f"blob {sha256}", error.reason, blob=sha256 if base is None else None
                ) from None
        key = str(entry.get("key", BLOB_KEY))
        if key not in loaded[sha256]:
            raise InvalidCheckpoint(f"blob {sha256}", f"holds no tensor {key!r}", blob=sha256)
        weights[name] = loaded[sha256][key]  # equal tensors: one copy in memory, as in the model
    return weights


def _blob_sources(metadata: dict[str, Any]) -> dict[str, BaseTensor | None]:
    """Each blob a checkpoint names -> where it is read in place (pretrained folder), or None (the store)."""
    sources: dict[str, BaseTensor | None] = {}
    for entry in metadata["tensors"].values():
        base = entry.get("base")
        where = BaseTensor(str(base["file"]), str(base["key"])) if base else None
        if sources.get(str(entry["blob"])) is None:
            sources[str(entry["blob"])] = where
    return sources


def read_training_state(path: Path, epoch: int, step: int) -> TrainingState:
    """Deserialize a verified checkpoint (weights from safetensors blobs, the rest weights-only)."""
    import torch

    model_state = read_weights(path)
    try:
        payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        state = state_from_payload(payload, model_state)
    except Exception as error:  # noqa: BLE001 - unpickling errors come in many types
        raise InvalidCheckpoint(STATE_FILE, f"cannot be loaded ({type(error).__name__}: {error})") from None
    if (state.epoch, state.step) != (epoch, step):
        raise InvalidCheckpoint(
            STATE_FILE, f"holds epoch {state.epoch}/step {state.step}, metadata says {epoch}/{step}"
        )
    return state


def quarantine_invalid(
    path: Path, problem: InvalidCheckpoint, quarantine: Path, stamp: str, *, quiet: bool = False
) -> None:
    """Log why ``path`` is unusable and move it under ``quarantine`` (never delete: it is evidence).

    ``quiet``: a superseded checkpoint, not a damaged one (WARNING, not ERROR). A damaged blob is
    named with every checkpoint that uses it, and moved to the store's quarantine too, so that the
    next save of the same tensor writes it anew instead of finding it present (the other checkpoints
    that use it are quarantined when next read: their blob is missing)."""
    where = path / problem.file if problem.file else path
    if quiet:
        logger.warning("checkpoint %s: %s; moving it to quarantine", path, problem.reason)
    elif problem.incompatible:
        logger.error(
            "checkpoint %s was written by a different model architecture/head config: %s; "
            "moving it to quarantine",
            path,
            problem.reason,
        )
    elif problem.blob is not None:
        store = BlobStore(blob_root_of(path))
        users = checkpoints_using(ExperimentLayout(store.root.parent), problem.blob) or [path]
        logger.error(
            "checkpoint %s is invalid: blob %s: %s; checkpoints that use this blob: %s; moving the "
            "checkpoint and the blob to quarantine",
            path,
            store.path(problem.blob),
            problem.reason,
            ", ".join(str(user) for user in users),
        )
        try:
            moved = store.quarantine(problem.blob, stamp)
        except OSError as error:
            logger.error("cannot move blob %s to quarantine: %s", problem.blob, error)
        else:
            if moved is not None:
                logger.info("blob %s moved to %s", problem.blob, moved)
    else:
        logger.error("checkpoint %s is invalid: %s: %s; moving it to quarantine", path, where, problem.reason)
    try:
        destination = quarantine_directory(path, quarantine, stamp)
    except OSError as error:  # it stays where it is, and is skipped again next time
        logger.error("cannot move checkpoint %s to quarantine: %s", path, error)
        return
    logger.info("checkpoint %s moved to %s", path, destination)
