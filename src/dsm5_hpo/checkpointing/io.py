"""Checkpoint I/O: files hashed while they are written, safetensors streamed, directories committed.

A checkpoint can be many GB, so every file is hashed in the same pass as its write (no second
read), and the model weights are streamed tensor by tensor (no in-memory copy of the whole
state). A checkpoint directory becomes visible in one rename, after everything in it is on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from dsm5_hpo.layout import DELETED_PREFIX, STAGING_PREFIX
from dsm5_hpo.storage.atomic import fsync_path

logger = logging.getLogger(__name__)


# Below this size, handing a buffer to the hashing thread costs more than hashing it inline.
_PARALLEL_MIN_BYTES = 1 << 20
# Writes are split into chunks so that hashing chunk i overlaps writing chunk i on two cores.
_CHUNK_BYTES = 64 << 20


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
