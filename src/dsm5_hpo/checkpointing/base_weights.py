"""The pretrained encoder's tensors where they already are: referenced in place, never copied.

An encoder that comes from a read-only model folder (the bundled MiniLM package in site-packages,
the Hugging Face cache, a hub download into it) is already on disk; a checkpoint tensor equal to one
of its tensors (a frozen layer, the embeddings, the base under LoRA adapters) is not written to the
blob store but named by its blob SHA-256 plus the file and key it is read from. Loading reads it
there and checks that it still hashes to that name, so a model folder that changed since (another
package version) is refused with the fix, never loaded silently.

Equality is decided by the blob digest (tensor_io.blob_digest: dtype, shape and bytes), so a tensor
the loader converted (another dtype) simply does not match and is stored as usual.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from dsm5_hpo.checkpointing.blobs import BlobError
from dsm5_hpo.checkpointing.tensor_io import blob_digest

logger = logging.getLogger(__name__)

IN_PLACE_ORIGINS = ("package", "hf-cache", "hub")
"""models.loading.ResolvedModel origins whose folder is not ours to change: referenced in place.
A local folder or the tiny model built in the cache may be edited or rebuilt: their tensors are
copied into the blob store instead."""


@dataclass(frozen=True)
class BaseTensor:
    file: str
    """Absolute path of the safetensors file."""
    key: str


_INDEX_CACHE: dict[tuple[str, int, int], dict[str, BaseTensor]] = {}
_INDEX_LOCK = threading.Lock()


def _file_index(path: Path) -> dict[str, BaseTensor]:
    """Blob SHA-256 -> (file, key) of every tensor of one safetensors file, cached per process by the
    file's identity (a changed file is indexed again)."""
    from safetensors import safe_open

    stat = path.stat()
    identity = (str(path), stat.st_size, stat.st_mtime_ns)
    with _INDEX_LOCK:
        cached = _INDEX_CACHE.get(identity)
        if cached is not None:
            return cached
        index: dict[str, BaseTensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as opened:
            for key in opened.keys():  # noqa: SIM118 - safe_open is not a Mapping
                index.setdefault(blob_digest(opened.get_tensor(key)).sha256, BaseTensor(str(path), key))
        _INDEX_CACHE[identity] = index
        return index


class BaseWeights:
    """The tensors of the read-only model folder ``folder`` (its ``*.safetensors`` files)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    def index(self) -> dict[str, BaseTensor]:
        """Blob SHA-256 -> where, as the files are now: a file changed since the last call is indexed
        again, so a save never references a tensor the folder no longer holds."""
        index: dict[str, BaseTensor] = {}
        for file in sorted(self.folder.rglob("*.safetensors")):
            for sha, where in _file_index(file).items():
                index.setdefault(sha, where)
        return index


def load_base_tensor(where: BaseTensor, sha256: str) -> torch.Tensor:
    """The tensor at ``where``, checked to still be blob ``sha256`` (BlobError naming the fix if not)."""
    from safetensors import safe_open

    try:
        with safe_open(where.file, framework="pt", device="cpu") as opened:
            tensor: torch.Tensor = opened.get_tensor(where.key)
    except FileNotFoundError:
        raise BlobError(
            sha256,
            f"not in the blob store, and its pretrained file {where.file} is gone: reinstall the model "
            "package or restore the HF cache it came from",
        ) from None
    except Exception as error:  # noqa: BLE001 - a missing key or an unreadable file: the reference is dead
        raise BlobError(sha256, f"cannot read {where.key!r} from {where.file} ({error})") from None
    actual = blob_digest(tensor).sha256
    if actual != sha256:
        raise BlobError(
            sha256,
            f"SHA-256 mismatch: {where.key!r} in {where.file} hashes to {actual} (the model files changed "
            "since the checkpoint was written: install the version it was trained from)",
        )
    return tensor
