"""Checkpoint I/O: files hashed while they are written, safetensors streamed, directories committed.

A checkpoint can be many GB, so every file is hashed in the same pass as its write (no second
read), and the model weights are streamed tensor by tensor (no in-memory copy of the whole
state). A checkpoint directory becomes visible in one rename, after everything in it is on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, cast

import torch

from dsm5_hpo.layout import DELETED_PREFIX, STAGING_PREFIX
from dsm5_hpo.storage.atomic import fsync_path

logger = logging.getLogger(__name__)


# Below this size, handing a buffer to the hashing thread costs more than hashing it inline.
_PARALLEL_MIN_BYTES = 1 << 20
# Writes are split into chunks so that hashing chunk i overlaps writing chunk i on two cores.
_CHUNK_BYTES = 64 << 20

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


@dataclass(frozen=True)
class FileDigest:
    """SHA-256 (hex) and size of a file's bytes."""

    sha256: str
    bytes: int


class HashingWriter:
    """A binary file wrapper that feeds every written byte to a SHA-256 on its way to the file.

    Usable as the file argument of ``torch.save``. Large buffers are hashed on a worker thread
    while this thread writes them (hashlib and file writes both release the GIL); ``write``
    returns only once a buffer is both written and hashed, so callers may reuse it at once.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self._sha = hashlib.sha256()
        self._bytes = 0
        self._pool: ThreadPoolExecutor | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        size = view.nbytes
        for start in range(0, size, _CHUNK_BYTES):
            chunk = view[start : start + _CHUNK_BYTES]
            if chunk.nbytes < _PARALLEL_MIN_BYTES:
                self._sha.update(chunk)
                self._write_all(chunk)
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
            hashed = self._pool.submit(self._sha.update, chunk)
            try:
                self._write_all(chunk)
            finally:
                hashed.result()  # the chunk must outlive its hashing, even when the write failed
        self._bytes += size
        return size

    def _write_all(self, view: memoryview) -> None:
        # An unbuffered file may write less than asked: write the rest instead of losing it.
        while view.nbytes:
            view = view[self.raw.write(view) :]

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._bytes

    def digest(self) -> FileDigest:
        """SHA-256 and size of everything written so far."""
        return FileDigest(self._sha.hexdigest(), self._bytes)

    def sync(self) -> None:
        """Flush Python's buffer and fsync the file: its bytes are on disk when this returns."""
        self.raw.flush()
        os.fsync(self.raw.fileno())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.raw.close()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def open_hashed(path: Path) -> HashingWriter:
    """A new file at ``path`` (it must not exist yet) behind a HashingWriter."""
    return HashingWriter(path.open("xb"))


def write_bytes_hashed(path: Path, data: bytes) -> FileDigest:
    """Write a small new file, fsync it, and return its digest."""
    with open_hashed(path) as writer:
        writer.write(data)
        writer.sync()
        return writer.digest()


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


def write_safetensors_streaming(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> FileDigest:
    """Write ``tensors`` as a safetensors file, tensor by tensor, hashed while written; fsynced.

    The layout is safetensors' own (same header, order and padding as ``safetensors.torch.save``),
    so ``safetensors.torch.load_file`` reads it back bit-identically. Tensors sharing memory
    (tied weights) are each written in full under their own name: no clone, no name dropped.
    """
    if sys.byteorder != "little":  # safetensors is little-endian; we write memory as is
        raise RuntimeError("write_safetensors_streaming needs a little-endian machine")
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
    with HashingWriter(path.open("wb")) as writer:
        writer.write(struct.pack("<Q", len(encoded)))
        writer.write(encoded)
        for name in order:
            writer.write(_tensor_bytes(tensors[name]))
        writer.sync()
        return writer.digest()


def make_staging_dir(target: Path) -> Path:
    """A fresh, recognizably temporary directory beside ``target`` (same filesystem, so rename works)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))


def commit_directory(staging: Path, target: Path) -> None:
    """Make the fully written ``staging`` directory appear as ``target`` in one atomic step.

    Order matters for a crash at any instant: the files and the staging directory reach the disk
    before the rename, and the parent is fsynced after it so the rename itself is durable.
    """
    if staging.parent != target.parent:
        raise ValueError(f"staging {staging} must be beside its target {target} (one filesystem)")
    if target.exists():
        raise FileExistsError(f"cannot commit {staging.name}: {target} already exists")
    for entry in sorted(staging.iterdir()):
        if entry.is_file():
            fsync_path(entry)
    fsync_path(staging)
    os.replace(staging, target)
    fsync_path(target.parent)


def remove_stale_staging(parent: Path, prefix: str = STAGING_PREFIX) -> list[Path]:
    """Delete the ``.tmp-*`` directories (or those starting with ``prefix``) a crash left in ``parent``;
    returns what was removed."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.glob(f"{prefix}*")):
        if not entry.is_dir() or entry.is_symlink():
            continue
        try:
            shutil.rmtree(entry)
        except OSError as error:  # a later save retries; a leftover never looks like a checkpoint
            logger.warning("cannot remove stale staging directory %s: %s", entry, error)
            continue
        logger.info("removed stale staging directory %s (left by an interrupted save or deletion)", entry)
        removed.append(entry)
    return removed


def quarantine_directory(path: Path, root: Path, stamp: str) -> Path:
    """Move ``path`` to ``root/<name>-<stamp>`` (a free name), durably; returns where it went."""
    destination = root / f"{path.name}-{stamp}"
    suffix = 1
    while destination.exists():
        destination, suffix = root / f"{path.name}-{stamp}-{suffix}", suffix + 1
    root.mkdir(parents=True, exist_ok=True)
    os.replace(path, destination)
    fsync_path(root)
    fsync_path(path.parent)
    return destination


def delete_directory(path: Path) -> None:
    """Delete ``path`` so that no crash can leave a part of it under its own name.

    It is first renamed to a staging name: a crash mid-delete leaves a stale ``.tmp-*``
    directory (removed by the next save), never a half checkpoint that could look like one.
    """
    trash = path.parent / f"{DELETED_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    fsync_path(path.parent)
    shutil.rmtree(trash)


def checkpoint_digest(files: Mapping[str, str]) -> str:
    """A checkpoint's own SHA-256: over the sorted ``name:sha256`` lines of its files."""
    lines = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()
