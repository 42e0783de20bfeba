"""Applying retention decisions on disk: logged deletions, and dropping an ended trial's resume state.

Dropping the resume state turns ``epoch_0003/`` into a weights-only checkpoint that is still valid
(new file list and SHA-256 chain). The metadata and ``.hash`` cannot be replaced together in one
step, so the new checkpoint is built beside the old one as ``epoch_0003.weights-only/`` (weights
hard-linked, not copied: no extra disk), then swapped in with two renames. A crash before the
swap leaves the old checkpoint intact and a pending directory that ``recover_interrupted_strips``
removes; a crash between the renames leaves only the complete pending directory, which it renames
into place. Either way a valid checkpoint is found under ``epoch_0003``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from dsm5_hpo.checkpointing.blob_gc import collect_garbage
from dsm5_hpo.checkpointing.io import delete_directory, write_bytes_hashed
from dsm5_hpo.checkpointing.metadata import (
    HASH_FILE,
    METADATA_FILE,
    STATE_FILE,
    CheckpointInfo,
    blob_root_of,
    read_checkpoint_metadata,
    weights_only_metadata,
)
from dsm5_hpo.checkpointing.retention import Deletion
from dsm5_hpo.layout import STAGING_PREFIX, ExperimentLayout
from dsm5_hpo.storage.atomic import fsync_path
from dsm5_hpo.storage.monitor import format_bytes

logger = logging.getLogger(__name__)

PENDING_SUFFIX = ".weights-only"
"""Suffix of a weights-only checkpoint being built beside the checkpoint it replaces."""
_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)$")


def checkpoint_directories(folder: Path) -> list[Path]:
    """Directories named like a checkpoint, oldest epoch first (staging, pending, quarantine skipped)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found) if path.is_dir()]


def recover_interrupted_strips(folder: Path) -> None:
    """Finish or undo a ``strip_resume_state`` that a crash interrupted (see the module docstring)."""
    if not folder.is_dir():
        return
    for pending in sorted(folder.glob(f"epoch_*{PENDING_SUFFIX}")):
        target = pending.with_name(pending.name.removesuffix(PENDING_SUFFIX))
        try:
            if target.exists():  # the swap never started: the full checkpoint is intact
                shutil.rmtree(pending)
                logger.info("removed %s, left by an interrupted resume-state drop", pending)
            else:  # crashed between the two renames: the pending copy is complete
                os.replace(pending, target)
                fsync_path(folder)
                logger.info("completed the interrupted resume-state drop of %s", target)
        except OSError as error:
            logger.warning("cannot recover %s: %s", pending, error)


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)  # same inode: the weights are not duplicated on disk
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, destination)
        fsync_path(destination)


def strip_resume_state(info: CheckpointInfo) -> int:
    """Delete the checkpoint's training_state.pt, keeping it valid as a weights-only checkpoint.

    Returns the bytes freed. Raises InvalidCheckpoint when the checkpoint's metadata does not verify,
    OSError when the disk refuses.
    """
    path = info.path
    metadata, _ = read_checkpoint_metadata(path)
    if not metadata["resume_capable"]:
        return 0  # done already: applying a decision twice changes nothing
    freed = (path / STATE_FILE).stat().st_size
    stripped = weights_only_metadata(metadata)
    pending = path.with_name(path.name + PENDING_SUFFIX)
    if pending.exists():
        shutil.rmtree(pending)
    pending.mkdir()
    try:
        for name in stripped["files"]:  # format 1.0: model.safetensors; 2.0: none (weights are blobs)
            _link_or_copy(path / name, pending / name)
        text = json.dumps(stripped, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        write_bytes_hashed(pending / METADATA_FILE, text.encode("utf-8"))
        write_bytes_hashed(pending / HASH_FILE, f"{stripped['checkpoint_sha256']}\n".encode())
        fsync_path(pending)
        fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(pending, ignore_errors=True)
        raise
    trash = path.parent / f"{STAGING_PREFIX}stripped-{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    os.replace(pending, path)
    fsync_path(path.parent)
    shutil.rmtree(trash)  # a crash here leaves a stale .tmp-* that the next save removes
    return freed


def apply_deletions(
    deletions: Iterable[Deletion], infos: Iterable[CheckpointInfo], log: logging.Logger
) -> int:
    """Delete each checkpoint (crash-safe), logging what and why, then collect the blobs that no
    checkpoint references any more; returns the bytes freed (its own files, and the blobs collected)."""
    by_path = {info.path: info for info in infos}
    freed = 0
    stores: set[Path] = set()
    for deletion in deletions:
        info = by_path[deletion.path]
        try:
            delete_directory(info.path)
        except OSError as error:  # the next decision tries again
            log.warning("cannot prune checkpoint %s: %s", info.path, error)
            continue
        freed += info.own_bytes
        if info.blobs:
            stores.add(blob_root_of(info.path))
        log.info(
            "pruned checkpoint %s (epoch %d, %s=%.6g, %s of its own files, %d blob(s) referenced): %s",
            info.path,
            info.epoch,
            info.metric_name,
            info.metric_value,
            format_bytes(info.own_bytes),
            len(info.blobs),
            deletion.reason,
        )
    for root in sorted(stores):
        freed += collect_garbage(ExperimentLayout(root.parent)).freed
    return freed
