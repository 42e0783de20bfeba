"""The content-addressed blob store: ``experiments/blobs/sha256/<2 hex>/<sha256>``, one tensor per blob.

A blob is a safetensors file holding one tensor (under the key ``t``, whatever its name in a
model); its file name is the SHA-256 of its bytes. So a tensor that two checkpoints share (a frozen
layer, the embeddings, the base under LoRA adapters) is one file, and reading a blob verifies it:
the bytes that hash to the name are the bytes that are parsed (``sha256sum`` prints the name).

Writing follows the checkpoints' protocol: a staging file beside the target, fsynced, renamed into
place, the folder fsynced; a name that exists already is a no-op (the content is the name).

Collection (``checkpointing.blob_gc``) must never delete a blob that a committed checkpoint
references, nor one that a save in flight is about to reference. A save holds the store's lock
*shared* from before it looks for its first blob until its checkpoint is committed; the collector
holds it *exclusively* while it marks and sweeps. The lock is a kernel ``flock`` (released when its
holder dies, kill -9 included; filelock's reader-writer lock is an SQLite database instead), taken
on a new descriptor per hold, so a save on the checkpoint thread and a collection on the main
thread of one process exclude each other too. A save killed before its commit leaves blobs nothing
references, which the next collection removes.

No torch here: `make cleanup` reports and collects blobs without importing it (tensor_io.py has
the tensor half).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dsm5_hpo.layout import STAGING_PREFIX
from dsm5_hpo.storage.atomic import fsync_path, sha256_file

logger = logging.getLogger(__name__)

BLOB_KEY = "t"
"""The one tensor's key inside a blob: fixed, so that a blob's bytes depend on the tensor only."""
LOCK_FILE = ".lock"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobError(Exception):
    """A blob is missing or damaged; ``sha256`` names it."""

    def __init__(self, sha256: str, reason: str) -> None:
        super().__init__(f"blob {sha256}: {reason}")
        self.sha256 = sha256
        self.reason = reason


class LockBusy(Exception):
    """The store's exclusive lock could not be had in time (saves in flight): collect later."""


@dataclass(frozen=True)
class SweepResult:
    removed: int
    bytes: int


def _flock(path: Path, mode: int, *, timeout_s: float | None, sleep: Callable[[float], None]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, mode | (fcntl.LOCK_NB if deadline is not None else 0))
                return fd
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockBusy(f"{path} is held (a save is in flight)") from None
                sleep(0.05)
    except BaseException:
        os.close(fd)
        raise


class BlobStore:
    """The blobs below ``root`` (an experiments folder's ``blobs/``)."""

    def __init__(self, root: Path, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.root = root
        self._sleep = sleep

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    def size(self, sha256: str) -> int | None:
        """The blob's bytes on disk, or None when it is not in the store."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def staging_path(self, sha256: str) -> Path:
        """Where a new blob is written before ``commit`` renames it into place."""
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f"{STAGING_PREFIX}{sha256[:16]}-{uuid.uuid4().hex[:8]}")

    def commit(self, staging: Path, sha256: str) -> None:
        """Rename the fsynced ``staging`` file into place as blob ``sha256``, durably."""
        target = self.path(sha256)
        if target.exists():  # written meanwhile by another save: same content
            staging.unlink(missing_ok=True)
            return
        os.replace(staging, target)
        fsync_path(target.parent)

    def read_verified(self, sha256: str) -> bytes:
        """The blob's bytes, after checking they hash to its name (BlobError when missing or damaged)."""
        import hashlib

        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobError(sha256, f"missing from {self.root}") from None
        except OSError as error:
            raise BlobError(sha256, f"unreadable ({error})") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BlobError(sha256, f"SHA-256 mismatch: its bytes hash to {actual} (damaged)")
        return data

    def verify(self, sha256: str) -> None:
        """Check the blob exists and hashes to its name, without keeping its bytes."""
        try:
            actual = sha256_file(self.path(sha256))
        except FileNotFoundError:
            raise BlobError(sha256, f"missing from {self.root}") from None
        except OSError as error:
            raise BlobError(sha256, f"unreadable ({error})") from None
        if actual != sha256:
            raise BlobError(sha256, f"SHA-256 mismatch: its bytes hash to {actual} (damaged)")

    def quarantine(self, sha256: str, stamp: str) -> Path | None:
        """Move a damaged blob to ``quarantine/`` (evidence, and so that a later save writes it anew)."""
        source = self.path(sha256)
        destination = self.root / "quarantine" / f"{sha256}-{stamp}-{uuid.uuid4().hex[:6]}"
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
        except FileNotFoundError:
            return None
        fsync_path(destination.parent)
        fsync_path(source.parent)
        return destination

    def names(self) -> Iterator[tuple[str, int]]:
        """Every committed blob: (SHA-256, bytes)."""
        top = self.root / "sha256"
        if not top.is_dir():
            return
        for shard in sorted(top.iterdir()):
            if not shard.is_dir():
                continue
            for entry in sorted(shard.iterdir()):
                if _SHA256.match(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        yield entry.name, entry.stat().st_size

    def stored_bytes(self) -> int:
        return sum(size for _, size in self.names())

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Held by a save from its first blob to its commit: no collection runs meanwhile."""
        fd = _flock(self.root / LOCK_FILE, fcntl.LOCK_SH, timeout_s=None, sleep=self._sleep)
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor releases its lock

    @contextlib.contextmanager
    def exclusive(self, timeout_s: float) -> Iterator[None]:
        """Held by the collector; LockBusy after ``timeout_s`` while saves hold it shared."""
        fd = _flock(self.root / LOCK_FILE, fcntl.LOCK_EX, timeout_s=timeout_s, sleep=self._sleep)
        try:
            yield
        finally:
            os.close(fd)

    def sweep(self, referenced: set[str]) -> SweepResult:
        """Delete every blob not in ``referenced`` and every staging file; the caller holds ``exclusive``.

        One unlink per blob: a kill mid-sweep leaves some orphans for the next one, and never touches
        a referenced blob."""
        removed = freed = 0
        top = self.root / "sha256"
        for shard in sorted(top.iterdir()) if top.is_dir() else []:
            if not shard.is_dir():
                continue
            for entry in sorted(shard.iterdir()):
                if entry.name in referenced:
                    continue
                if not (_SHA256.match(entry.name) or entry.name.startswith(STAGING_PREFIX)):
                    continue  # not ours: left alone
                try:
                    size = entry.stat().st_size
                    entry.unlink()
                except FileNotFoundError:
                    continue
                except OSError as error:
                    if error.errno not in (errno.EACCES, errno.EPERM, errno.EBUSY):
                        raise
                    logger.warning("cannot remove blob %s: %s", entry, error)
                    continue
                removed, freed = removed + 1, freed + size
            with contextlib.suppress(OSError):
                if not any(shard.iterdir()):
                    shard.rmdir()
        if removed:
            fsync_path(top)
        return SweepResult(removed, freed)
