"""Publishing a folder whole: a new version written beside it, then swapped in, so that a reader (or a
crash) sees the previous version or the new one, never a mix. What best_model/ is exported with."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from dsm5_hpo.layout import STAGING_PREFIX
from dsm5_hpo.storage.atomic import exchange_paths, fsync_path

logger = logging.getLogger(__name__)


def staging_for(folder: Path) -> Path:
    """A fresh staging folder name beside ``folder`` (``.tmp-<name>-<hex>``), for ``publish``."""
    return folder.parent / f"{STAGING_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}"


def publish(staging: Path, folder: Path) -> None:
    """Put the complete export in ``staging`` at ``folder``, replacing any previous export whole."""
    parent = folder.parent
    restore_interrupted(folder)
    if not folder.exists():
        os.replace(staging, folder)
        fsync_path(parent)
        return
    if exchange_paths(staging, folder):  # one step: the previous export before, the new one after
        fsync_path(parent)
        shutil.rmtree(staging, ignore_errors=True)  # the name now holds the previous export
        return
    # No atomic exchange here (NFS, not Linux): two renames. A crash between them leaves the previous
    # export as .old-<name>-*, complete: `make cleanup` keeps it and the next export puts it back.
    old = parent / f".old-{folder.name}-{uuid.uuid4().hex[:8]}"
    os.replace(folder, old)
    os.replace(staging, folder)
    fsync_path(parent)
    shutil.rmtree(old, ignore_errors=True)


def restore_interrupted(folder: Path) -> Path | None:
    """Put back the previous export that a crash between the two renames of a replacement left as
    ``.old-<name>-*`` while ``folder`` is missing; returns what was restored."""
    if folder.exists() or folder.is_symlink():
        return None
    kept = [p for p in folder.parent.glob(f".old-{folder.name}-*") if p.is_dir() and not p.is_symlink()]
    if not kept:
        return None
    newest = max(kept, key=lambda p: p.stat().st_mtime_ns)
    os.replace(newest, folder)
    fsync_path(folder.parent)
    logger.warning("restored %s from %s (its replacement was interrupted)", folder, newest.name)
    return newest


def export_leftovers(folder: Path) -> list[Path]:
    """Folders beside ``folder`` that no export uses: staging folders of interrupted exports, and a
    replaced export (``.old-*``) once ``folder`` itself is there (otherwise that is the one copy left)."""
    parent, name = folder.parent, folder.name
    patterns = [f"{STAGING_PREFIX}{name}-*"] + ([f".old-{name}-*"] if folder.is_dir() else [])
    found = {path for pattern in patterns for path in parent.glob(pattern)}
    return sorted(p for p in found if p.is_dir() and not p.is_symlink())
