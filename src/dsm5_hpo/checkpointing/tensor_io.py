"""Tensors to files, hashed in the same pass: ``torch.save`` of the training state and a streamed
safetensors writer for the weights (no in-memory copy of the whole state). The torch half of io.py,
apart so that the read-only commands (status, cleanup) never import torch."""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import torch

from dsm5_hpo.checkpointing.blobs import BLOB_KEY, BlobError, BlobStore
from dsm5_hpo.checkpointing.io import FileDigest, HashingWriter, open_hashed

# safetensors dtype names; the order is safetensors' own (its Rust ``Dtype`` enum), which it sorts
# tensors by, descending, so that every tensor starts at an offset aligned to its item size.
_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.int16: "I16",
    torch.uint16: "U16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.uint32: "U32",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.uint64: "U64",
}
_DTYPE_RANK = {dtype: rank for rank, dtype in enumerate(_DTYPE_NAMES)}


def torch_save_hashed(obj: object, path: Path) -> FileDigest:
    """``torch.save`` into a new file, hashed in the same pass, fsynced before returning."""
    with open_hashed(path) as writer:
        torch.save(obj, cast(IO[bytes], writer))  # duck-typed: torch.save only calls write/flush
        writer.sync()
        return writer.digest()


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of one tensor, as a view of its CPU memory where possible."""
    # One tensor at a time: at most one tensor's size is copied (device -> CPU, or to make it contiguous).
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.numel() == 0:
        return memoryview(b"")
    return tensor.reshape(-1).view(torch.uint8).numpy().data  # shares the tensor's memory


def _safetensors_header(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None
) -> tuple[bytes, list[str]]:
    """The 8-byte length + JSON header of a safetensors file of ``tensors``, and their order in it."""
    if sys.byteorder != "little":  # safetensors is little-endian; we write memory as is
        raise RuntimeError("the safetensors writer needs a little-endian machine")
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor {name!r}: expected a torch.Tensor, got {type(tensor).__name__}")
        if tensor.layout != torch.strided:
            raise ValueError(f"tensor {name!r}: safetensors stores dense tensors only, not {tensor.layout}")
        if tensor.dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} has no safetensors equivalent")
    order = sorted(tensors, key=lambda name: (-_DTYPE_RANK[tensors[name].dtype], name))
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(v, str) for v in metadata.values()):
            raise TypeError("safetensors metadata values must be strings")
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for name in order:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # pad with spaces so the data starts 8-byte aligned
    return struct.pack("<Q", len(encoded)) + encoded, order


def write_safetensors_streaming(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> FileDigest:
    """Write ``tensors`` as a safetensors file, tensor by tensor, hashed while written; fsynced.

    The layout is safetensors' own (same header, order and padding as ``safetensors.torch.save``),
    so ``safetensors.torch.load_file`` reads it back bit-identically. Tensors sharing memory
    (tied weights) are each written in full under their own name: no clone, no name dropped.
    """
    header, order = _safetensors_header(tensors, metadata)
    with HashingWriter(path.open("wb")) as writer:
        writer.write(header)
        for name in order:
            writer.write(_tensor_bytes(tensors[name]))
        writer.sync()
        return writer.digest()


def blob_digest(tensor: torch.Tensor) -> FileDigest:
    """SHA-256 and size of the blob ``tensor`` would be (its name in the store), without writing it."""
    return group_digest({BLOB_KEY: tensor})


def group_digest(tensors: Mapping[str, torch.Tensor]) -> FileDigest:
    """SHA-256 and size of the safetensors file of ``tensors``: the name of their blob in the store."""
    header, order = _safetensors_header(tensors, None)
    sha, size = hashlib.sha256(header), len(header)
    for name in order:
        data = _tensor_bytes(tensors[name])
        sha.update(data)
        size += data.nbytes
    return FileDigest(sha.hexdigest(), size)


@dataclass(frozen=True)
class StoredTensor:
    digest: FileDigest
    written: bool
    """False when the store had the blob already (nothing was written)."""


def put_tensor(store: BlobStore, tensor: torch.Tensor, digest: FileDigest | None = None) -> StoredTensor:
    """Store ``tensor`` as a blob of its own unless the store has it; the caller holds ``store.shared()``."""
    return put_group(store, {BLOB_KEY: tensor}, digest)


def put_group(
    store: BlobStore, tensors: Mapping[str, torch.Tensor], digest: FileDigest | None = None
) -> StoredTensor:
    """Store ``tensors`` as one blob unless the store has it (``digest``: its ``group_digest``, when the
    caller computed it already); the caller holds ``store.shared()``."""
    digest = digest if digest is not None else group_digest(tensors)
    if store.size(digest.sha256) == digest.bytes:
        return StoredTensor(digest, written=False)
    staging = store.staging_path(digest.sha256)
    try:
        written = write_safetensors_streaming(tensors, staging)
        if written != digest:  # a tensor changed while it was written: never name bytes wrongly
            raise RuntimeError(f"tensors changed while stored as blob {digest.sha256}")
        store.commit(staging, digest.sha256)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return StoredTensor(digest, written=True)


def load_blob(store: BlobStore, sha256: str) -> dict[str, torch.Tensor]:
    """The tensors of blob ``sha256``, its bytes verified against the name (BlobError otherwise)."""
    from safetensors.torch import load

    data = store.read_verified(sha256)
    try:
        return load(data)
    except Exception as error:  # noqa: BLE001 - a blob that hashes right but does not parse is damaged too
        raise BlobError(sha256, f"not a tensor blob ({type(error).__name__}: {error})") from None


def load_tensor(store: BlobStore, sha256: str) -> torch.Tensor:
    """The tensor of the single-tensor blob ``sha256``, verified (BlobError otherwise)."""
    tensors = load_blob(store, sha256)
    if BLOB_KEY not in tensors:
        raise BlobError(sha256, f"holds {sorted(tensors)[:3]}, not one tensor under {BLOB_KEY!r}")
    return tensors[BLOB_KEY]
