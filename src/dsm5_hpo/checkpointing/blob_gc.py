"""Collecting the blobs no checkpoint references any more: mark and sweep, crash-safe, never racing a save.

Mark: every checkpoint folder of the experiments folder (``<run>/checkpoints/``: its committed
checkpoints, its quarantined ones, and the copy a resume-state drop builds) names the blobs it
references in its metadata's ``tensors``. Sweep: every blob not named goes. Both run under the store's exclusive lock,
which every save holds shared until its checkpoint is committed, so a blob written for a save in
flight is never collected (checkpointing.blobs). A committed checkpoint whose metadata cannot be read
stops the sweep: what it references cannot be known, so nothing is deleted.

No torch here: `make cleanup` uses it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dsm5_hpo.checkpointing.blobs import BlobStore, LockBusy
from dsm5_hpo.layout import QUARANTINE_DIR, STAGING_PREFIX, ExperimentLayout

logger = logging.getLogger(__name__)

METADATA = "metadata.json"
DEFAULT_TIMEOUT_S = 10.0
"""How long a collection waits for saves in flight before it gives up (it runs again later)."""


@dataclass
class Marks:
    referenced: dict[str, list[Path]] = field(default_factory=dict)
    """SHA-256 -> the checkpoint folders that reference it."""
    unreadable: list[Path] = field(default_factory=list)
    """Committed checkpoints whose references could not be read: no sweep while there are any."""


@dataclass(frozen=True)
class Collection:
    referenced: int
    orphans: int
    orphan_bytes: int
    removed: int = 0
    freed: int = 0
    skipped: str | None = None
    """Why nothing was swept (saves in flight, unreadable metadata), or None."""


def _checkpoint_dirs(folder: Path) -> Iterator[tuple[Path, bool]]:
    """Every directory of ``folder`` that holds or may become a checkpoint, with whether it is committed.

    ``.tmp-*`` folders are skipped: under the exclusive lock no save is in flight, so a save's staging
    folder is a dead one's, and a deletion's is on its way out. A resume-state drop is not under the
    lock, but at every instant of it the checkpoint or its complete ``.weights-only`` copy (listed
    here) references the same blobs (checkpointing.pruning)."""
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name == QUARANTINE_DIR and entry.is_dir():
            for quarantined in sorted(entry.iterdir()):
                if quarantined.is_dir():
                    yield quarantined, False  # already known to be bad: read what can be read
        elif entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(STAGING_PREFIX):
            yield entry, entry.name.startswith("epoch_") and "." not in entry.name


def _references(checkpoint: Path) -> list[str] | None:
    try:
        metadata = json.loads((checkpoint / METADATA).read_text(encoding="utf-8"))
        return [str(entry["blob"]) for entry in (metadata.get("tensors") or {}).values()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def blob_sizes(checkpoint: Path) -> dict[str, int]:
    """SHA-256 -> bytes of the blobs ``checkpoint`` references, from its metadata (empty when it has
    none or it cannot be read: for the sizes `make status` and the summary show, not for deleting)."""
    try:
        metadata = json.loads((checkpoint / METADATA).read_text(encoding="utf-8"))
        return {str(e["blob"]): int(e["bytes"]) for e in (metadata.get("tensors") or {}).values()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def mark(layout: ExperimentLayout) -> Marks:
    """What every checkpoint of ``layout`` references (see the module docstring)."""
    marks = Marks()
    for folder in layout.checkpoint_folders():
        for checkpoint, committed in _checkpoint_dirs(folder):
            if not (checkpoint / METADATA).exists():
                continue
            names = _references(checkpoint)
            if names is None:
                if committed:
                    marks.unreadable.append(checkpoint)
                continue
            for name in names:
                marks.referenced.setdefault(name, []).append(checkpoint)
    return marks


def checkpoints_using(layout: ExperimentLayout, sha256: str) -> list[Path]:
    """Every checkpoint of ``layout`` that references blob ``sha256`` (to name them when it is damaged)."""
    return mark(layout).referenced.get(sha256, [])


def collect_garbage(
    layout: ExperimentLayout, *, dry_run: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Collection:
    """Delete the blobs of ``layout`` that no checkpoint references (``dry_run``: only count them)."""
    store = BlobStore(layout.blobs)
    if not store.root.is_dir():
        return Collection(0, 0, 0)
    try:
        with store.exclusive(timeout_s):
            marks = mark(layout)
            orphans = [(name, size) for name, size in store.names() if name not in marks.referenced]
            counted = Collection(len(marks.referenced), len(orphans), sum(size for _, size in orphans))
            if marks.unreadable:
                shown = ", ".join(str(p) for p in marks.unreadable[:3])
                logger.warning(
                    "blob collection skipped: the metadata of %d checkpoint(s) cannot be read (%s); "
                    "quarantine or delete them (make cleanup) so their blobs can be accounted for",
                    len(marks.unreadable),
                    shown,
                )
                return Collection(**{**counted.__dict__, "skipped": f"unreadable metadata: {shown}"})
            if dry_run or not orphans:
                return counted
            swept = store.sweep(set(marks.referenced))
    except LockBusy:
        logger.info("blob collection postponed: a save in flight holds %s", store.root)
        return Collection(0, 0, 0, skipped="saves in flight")
    if swept.removed:
        logger.info(
            "collected %d unreferenced blob(s), %d bytes, from %s", swept.removed, swept.bytes, store.root
        )
    return Collection(counted.referenced, counted.orphans, counted.orphan_bytes, swept.removed, swept.bytes)
