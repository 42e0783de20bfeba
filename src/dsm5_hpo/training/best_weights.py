"""Keep the best epoch's weights of a trial on disk, hash-verified, for the final test evaluation.

One folder per trial (``checkpoints/best``), replaced atomically when a later epoch scores
higher: write weights and metadata into a temporary sibling, fsync, swap. Loading verifies
the SHA-256 before the weights are deserialized.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from dsm5_hpo.errors import StorageError
from dsm5_hpo.storage.atomic import atomic_write_json, fsync_dir, sha256_file

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"


class BestWeightsSink(Protocol):
    def save(
        self,
        model: nn.Module,
        *,
        epoch: int,
        step: int,
        metric: str,
        value: float,
        metrics: dict[str, float | None],
    ) -> None: ...


class NullBestWeights:
    """Keeps nothing: trials that must not write weights (dry runs, tests of the loop)."""

    def __init__(self) -> None:
        self.saved_epochs: list[int] = []

    def save(
        self,
        model: nn.Module,
        *,
        epoch: int,
        step: int,
        metric: str,
        value: float,
        metrics: dict[str, float | None],
    ) -> None:
        self.saved_epochs.append(epoch)


class BestWeightsWriter:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(
        self,
        model: nn.Module,
        *,
        epoch: int,
        step: int,
        metric: str,
        value: float,
        metrics: dict[str, float | None],
    ) -> None:
        from safetensors.torch import save_model

        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        old = _old_copy(self.folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=parent))
        try:
            weights = staging / WEIGHTS_FILE
            save_model(model, str(weights))
            with weights.open("rb") as handle:
                os.fsync(handle.fileno())
            atomic_write_json(
                staging / METADATA_FILE,
                {
                    "epoch": epoch,
                    "step": step,
                    "metric": metric,
                    "value": value,
                    "metrics": metrics,
                    "created_at": datetime.now(UTC).isoformat(),
                    "files": {
                        WEIGHTS_FILE: {"sha256": sha256_file(weights), "bytes": weights.stat().st_size}
                    },
                },
            )
            _restore_old_copy(self.folder)  # an earlier save died between its two renames
            shutil.rmtree(old, ignore_errors=True)
            if self.folder.exists():
                os.replace(self.folder, old)
            os.replace(staging, self.folder)
            fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException as error:
            # Leave no staging folder behind, and put the previous best back if it was moved aside.
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                _restore_old_copy(self.folder)
            if isinstance(error, OSError):
                raise StorageError(f"cannot write best weights to {self.folder}: {error}") from error
            raise
        logger.info("saved best weights of epoch %d (%s=%.4f) to %s", epoch, metric, value, self.folder)


def _old_copy(folder: Path) -> Path:
    """Where a save parks the previous best for the instant between its two renames."""
    return folder.parent / f".{folder.name}.old"


def _restore_old_copy(folder: Path) -> None:
    """After a crash between a save's two renames only the parked copy exists: move it back."""
    old = _old_copy(folder)
    if not folder.exists() and old.is_dir():
        logger.warning("restoring the previous best weights from %s (an earlier save was interrupted)", old)
        os.replace(old, folder)
        fsync_dir(folder.parent)


def read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bytes that are not UTF-8
        raise StorageError(f"{path}: cannot read checkpoint metadata ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise StorageError(f"{path}: not checkpoint metadata (no 'files' table); the file is corrupt")
    return data


def load_best_weights(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Verify the weights' SHA-256, then load them into ``model``; returns the metadata."""
    from safetensors.torch import load_model

    try:
        _restore_old_copy(folder)
    except OSError as error:
        raise StorageError(f"{folder}: cannot restore the previous best weights ({error})") from error
    metadata = read_metadata(folder)
    weights = folder / WEIGHTS_FILE
    entry = metadata["files"].get(WEIGHTS_FILE)
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not weights.is_file():
        raise StorageError(f"{weights}: missing; the trial's best weights were deleted or never written")
    actual = sha256_file(weights)
    if actual != expected:
        raise StorageError(
            f"{weights}: SHA-256 mismatch (expected {expected}, found {actual}); the file is corrupt"
        )
    try:
        load_model(model, str(weights))
    except RuntimeError as error:  # missing/unexpected keys or shape mismatch
        raise StorageError(
            f"{weights}: does not fit this model ({str(error).splitlines()[0]}); the checkpoint was written by "
            "another encoder or head configuration"
        ) from error
    return metadata
