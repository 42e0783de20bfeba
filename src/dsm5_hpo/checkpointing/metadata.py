"""Checkpoint metadata: how it is built, and how it is read back and checked without reading the weights.

The chain of trust: ``.hash`` holds the checkpoint's SHA-256; ``metadata.json`` holds the same
value, the SHA-256 and size of every file, and everything else about the checkpoint. The
checkpoint SHA-256 covers every file's SHA-256 *and* the metadata's own content, so an edit to
any file, to the metadata (an epoch, a metric) or to ``.hash`` breaks the chain.

Format 2.0 keeps the weights in the blob store (checkpointing.blobs): ``tensors`` maps every state
dict entry to its blob's SHA-256 (its name, so a blob verifies itself) and size; the checkpoint's
own files are training_state.pt (while resumable) and these two. Format 1.0 checkpoints (weights
in model.safetensors) are still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.io import FileDigest, checkpoint_digest
from dsm5_hpo.layout import CHECKPOINTS_DIR, experiments_of_checkpoints
from dsm5_hpo.provenance import code_version

if TYPE_CHECKING:  # only for annotations: status and cleanup read metadata without importing torch
    from dsm5_hpo.checkpointing.training_state import TrainingState

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
METADATA_FILE = "metadata.json"
HASH_FILE = ".hash"
METADATA_DIGEST_KEY = "metadata.json#canonical"
"""Name under which the metadata's own content enters the checkpoint digest."""
SCHEMA_FILE = Path(__file__).resolve().parents[3] / "contracts" / "checkpoint_metadata.schema.json"
SCHEMA_VERSION = "2.0"
LEGACY_SCHEMA_VERSION = "1.0"
"""Weights in the checkpoint's own model.safetensors: read, never written any more."""
_DIRECTORY_EPOCH = re.compile(r"^epoch_(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint as its metadata describes it; ``bytes`` counts every file in it."""

    path: Path
    epoch: int
    step: int
    metric_name: str
    metric_value: float
    sha256: str
    bytes: int
    created_at: str
    resume_capable: bool = True
    """False once training_state.pt was dropped (an ended trial): weights can load, a trial can't resume."""
    metrics: Mapping[str, float | None] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    """The epoch's validation metrics (with the tuned thresholds when train.tune_thresholds)."""
    blobs: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    """SHA-256 -> bytes of every blob the weights are in (empty for a format 1.0 checkpoint);
    ``bytes`` counts them once each, as if no other checkpoint shared them."""

    @property
    def own_bytes(self) -> int:
        """Bytes of the checkpoint's own files: what deleting it frees before any blob goes."""
        return self.bytes - sum(self.blobs.values())


def tensor_blobs(metadata: Mapping[str, Any]) -> dict[str, int]:
    """SHA-256 -> bytes of the blobs of the store a checkpoint's metadata references (none in format
    1.0; pretrained tensors read in place from their model folder are not in the store: not counted)."""
    entries = (metadata.get("tensors") or {}).values()
    return {str(entry["blob"]): int(entry["bytes"]) for entry in entries if "base" not in entry}


def info_from_metadata(path: Path, metadata: Mapping[str, Any], total_bytes: int) -> CheckpointInfo:
    return CheckpointInfo(
        path=path,
        epoch=int(metadata["epoch"]),
        step=int(metadata["step"]),
        metric_name=str(metadata["metric_name"]),
        metric_value=float(metadata["metric_value"]),
        sha256=str(metadata["checkpoint_sha256"]),
        bytes=total_bytes,
        created_at=str(metadata["created_at"]),
        resume_capable=bool(metadata["resume_capable"]),
        metrics=dict(metadata.get("metrics") or {}),
        blobs=tensor_blobs(metadata),
    )


class InvalidCheckpoint(Exception):
    """Why a checkpoint cannot be used: the file at fault (relative to it) and the reason."""

    def __init__(
        self, file: str, reason: str, *, incompatible: bool = False, blob: str | None = None
    ) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason
        self.incompatible = incompatible
        self.blob = blob
        """The blob at fault (missing or damaged), which other checkpoints may reference too."""


class CheckpointOwner(Protocol):
    """What a checkpoint must have been written by to be loaded (a CheckpointManager)."""

    trial_id: str
    architecture_signature: str
    head_config: dict[str, Any]


def normalized_head_config(head_config: Mapping[str, Any]) -> dict[str, Any]:
    """The head config as it reads back from JSON (tuples become lists), so comparisons are exact."""
    normalized: dict[str, Any] = json.loads(json.dumps(dict(head_config), sort_keys=True, allow_nan=False))
    return normalized


def _metadata_sha256(metadata: Mapping[str, Any]) -> str:
    body = {key: value for key, value in metadata.items() if key != "checkpoint_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_sha256(metadata: Mapping[str, Any]) -> str:
    """The checkpoint's SHA-256: its files' digests plus the metadata's own content."""
    files = {name: str(entry["sha256"]) for name, entry in metadata["files"].items()}
    return checkpoint_digest({**files, METADATA_DIGEST_KEY: _metadata_sha256(metadata)})


@cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate_metadata(metadata: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``metadata`` breaks contracts/checkpoint_metadata."""
    _validator().validate(metadata)


def build_metadata(
    owner: CheckpointOwner,
    state: TrainingState,
    files: Mapping[str, FileDigest],
    created_at: str,
    tensors: Mapping[str, FileDigest],
    in_place: Mapping[str, Mapping[str, str]] | None = None,
    grouped: Collection[str] = (),
) -> dict[str, Any]:
    """The complete, schema-valid metadata.json content of a checkpoint of ``state`` whose weights
    are the blobs ``tensors`` (state dict name -> the blob's digest); ``in_place``: blob SHA-256 ->
    {file, key} of those read from the pretrained model folder rather than the store; ``grouped``: the
    names held together in one blob, each under its own name (the others are a blob of their own)."""
    in_place = in_place or {}
    metadata: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "trial_id": owner.trial_id,
        "epoch": int(state.epoch),
        "step": int(state.step),
        # JSON has no NaN or infinity; the exact values stay in training_state.pt.
        "metrics": {
            str(k): float(v) if v is not None and math.isfinite(v) else None for k, v in state.metrics.items()
        },
        "metric_name": state.metric_name,
        "metric_value": float(state.metric_value),
        "created_at": created_at,
        "code_version": code_version(),
        "architecture_signature": owner.architecture_signature,
        "head_config": owner.head_config,
        "files": {name: {"sha256": digest.sha256, "bytes": digest.bytes} for name, digest in files.items()},
        "tensors": {
            name: {"blob": digest.sha256, "bytes": digest.bytes}
            | ({"key": name} if name in grouped else {})
            | ({"base": dict(in_place[digest.sha256])} if digest.sha256 in in_place else {})
            for name, digest in sorted(tensors.items())
        },
        "resume_capable": STATE_FILE in files,
    }
    metadata["checkpoint_sha256"] = checkpoint_sha256(metadata)
    validate_metadata(metadata)
    return metadata


def weights_only_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` of the same checkpoint once training_state.pt is gone (re-hashed, schema-valid)."""
    stripped = {key: value for key, value in metadata.items() if key != "checkpoint_sha256"}
    stripped["files"] = {name: entry for name, entry in metadata["files"].items() if name != STATE_FILE}
    stripped["resume_capable"] = False
    stripped["checkpoint_sha256"] = checkpoint_sha256(stripped)
    validate_metadata(stripped)
    return stripped


_VALIDATED: dict[str, None] = {}
"""SHA-256 of metadata.json contents that met the contract (insertion-ordered: the oldest go first)."""
_VALIDATED_MAX = 4096


def _validate_once(raw: bytes, metadata: Mapping[str, Any]) -> None:
    """The contract check of ``metadata``, skipped for bytes already checked: retention reads every
    checkpoint's metadata after each save, and the schema check of a ``tensors`` map of hundreds of
    entries costs milliseconds each time. The same bytes give the same verdict."""
    digest = hashlib.sha256(raw).hexdigest()
    if digest in _VALIDATED:
        return
    validate_metadata(metadata)
    _VALIDATED[digest] = None
    while len(_VALIDATED) > _VALIDATED_MAX:
        del _VALIDATED[next(iter(_VALIDATED))]


def _read_metadata(path: Path) -> dict[str, Any]:
    import jsonschema

    try:
        recorded = (path / HASH_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise InvalidCheckpoint(HASH_FILE, "missing: not a committed checkpoint") from None
    except (OSError, ValueError) as error:
        raise InvalidCheckpoint(HASH_FILE, f"unreadable ({error})") from None
    try:
        raw = (path / METADATA_FILE).read_bytes()
        metadata = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise InvalidCheckpoint(METADATA_FILE, "missing: not a committed checkpoint") from None
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise InvalidCheckpoint(METADATA_FILE, f"unreadable ({error})") from None
    try:
        _validate_once(raw, metadata)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise InvalidCheckpoint(
            METADATA_FILE, f"breaks the metadata contract at {where}: {error.message}"
        ) from None
    if recorded != metadata["checkpoint_sha256"]:
        raise InvalidCheckpoint(
            HASH_FILE, f"holds {recorded[:70]!r}, metadata says {metadata['checkpoint_sha256']}"
        )
    try:
        actual = checkpoint_sha256(metadata)
    except ValueError as error:  # NaN or infinity: never written by us
        raise InvalidCheckpoint(METADATA_FILE, f"holds a value JSON cannot represent ({error})") from None
    if actual != recorded:
        raise InvalidCheckpoint(
            METADATA_FILE, f"content does not match the checkpoint SHA-256 {recorded} (found {actual})"
        )
    return dict(metadata)


def read_checkpoint_metadata(path: Path) -> tuple[dict[str, Any], int]:
    """The verified metadata of ``path`` and the bytes of all its files, reading no file but the
    metadata and ``.hash`` (hash chain, directory name, file sizes); raises InvalidCheckpoint."""
    metadata = _read_metadata(path)
    match = _DIRECTORY_EPOCH.match(path.name)
    if match is None or int(match.group(1)) != metadata["epoch"]:
        raise InvalidCheckpoint(
            METADATA_FILE, f"epoch {metadata['epoch']} does not match the directory name {path.name}"
        )
    total = (path / METADATA_FILE).stat().st_size + (path / HASH_FILE).stat().st_size
    for name, entry in sorted(metadata["files"].items()):
        file = path / name
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise InvalidCheckpoint(name, "missing (listed in metadata.json)") from None
        except OSError as error:
            raise InvalidCheckpoint(name, f"unreadable ({error})") from None
        if size != entry["bytes"]:
            raise InvalidCheckpoint(
                name, f"{size} bytes, metadata.json says {entry['bytes']} (truncated or overwritten)"
            )
        total += size
    blobs = tensor_blobs(metadata)
    if blobs:
        store = BlobStore(blob_root_of(path))
        for sha256, expected in sorted(blobs.items()):
            size = store.size(sha256)
            if size is None:
                raise InvalidCheckpoint(f"blob {sha256}", f"missing from {store.root}", blob=sha256)
            if size != expected:
                raise InvalidCheckpoint(
                    f"blob {sha256}", f"{size} bytes, metadata.json says {expected} (damaged)", blob=sha256
                )
            total += size
    for file in sorted({e["base"]["file"] for e in (metadata.get("tensors") or {}).values() if "base" in e}):
        if not Path(file).is_file():
            raise InvalidCheckpoint(
                file,
                "missing: the pretrained weights this checkpoint reads in place are gone (reinstall the "
                "model package or restore the HF cache it was trained from)",
            )
    return metadata, total


def blob_root_of(checkpoint: Path) -> Path:
    """The blob store of a checkpoint directory: ``<root>/blobs`` for ``<root>/<run>/checkpoints/...``
    (a quarantined checkpoint is one level deeper)."""
    for folder in checkpoint.parents:
        if folder.name == CHECKPOINTS_DIR:
            return experiments_of_checkpoints(folder).blobs
    return experiments_of_checkpoints(checkpoint.parent).blobs


def peek_checkpoint(path: Path) -> CheckpointInfo:
    """A checkpoint's info from its metadata alone (no weights hashed, no owner to compare with)."""
    metadata, total = read_checkpoint_metadata(path)
    return info_from_metadata(path, metadata, total)
