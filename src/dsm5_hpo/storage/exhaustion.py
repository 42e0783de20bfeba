"""Storage exhaustion: what fills the disk, and what to type.

When retention has escalated as far as it can and the next checkpoint still does not fit, the
job stops with ``StorageExhaustedError`` (exit code 4). Its message is the whole report, meant
to be acted on without opening any other file: disk usage, the space needed, the largest
artifacts, and the exact commands. ``report`` holds the same facts as data for the JSON log.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsm5_hpo.errors import ResumableStop, StorageError
from dsm5_hpo.layout import BLOBS_DIR, CHECKPOINT_MARKERS, STAGING_PREFIX
from dsm5_hpo.storage.monitor import DiskStatus, format_bytes


def tree_size(path: Path) -> int:
    """Bytes of the regular files below ``path``; symbolic links are neither followed nor counted."""
    total = 0
    for folder, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:  # deleted while we walk (retention running): it no longer counts
                continue
            if stat.S_ISREG(info.st_mode):  # symlinks are not followed nor counted
                total += info.st_size
    return total


def _is_checkpoint_dir(path: Path) -> bool:
    # A stale staging dir (crash mid-save) is also one artifact: it goes or stays as a whole.
    return path.name.startswith(STAGING_PREFIX) or any(os.path.lexists(path / m) for m in CHECKPOINT_MARKERS)


def largest_artifacts(root: Path, n: int = 10) -> list[tuple[int, Path]]:
    """The ``n`` largest artifacts under ``root``, biggest first, as (bytes, path).

    A checkpoint directory counts as one artifact (the sum of its files), and so does the blob
    store (its weights, shared by the checkpoints; `make cleanup` collects the unreferenced ones);
    anything else is counted file by file. Symlinks below ``root`` are never followed nor counted: what they
    point at is not ours to report, and may be on another disk.
    """
    if not root.is_dir():
        return []
    if _is_checkpoint_dir(root):
        return [(tree_size(root), root)][:n]
    found: list[tuple[int, Path]] = []
    pending = [root]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:  # vanished or unreadable: report what can be seen
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    continue
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    if _is_checkpoint_dir(path) or path.name == BLOBS_DIR:
                        found.append((tree_size(path), path))
                    else:
                        pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    found.append((entry.stat(follow_symlinks=False).st_size, path))
            except OSError:
                continue
    found.sort(key=lambda item: (-item[0], str(item[1])))
    return found[:n]


def _commands(needed: int, study_id: str | None) -> list[dict[str, str]]:
    # A study's retention policy is fixed when it starts (resume must reproduce it), so changing
    # the policy means a new study; this study can only continue after space is freed.
    cap_gb = max(1, math.ceil(2 * needed / 1e9))  # room for the study's best and one more checkpoint
    resume = f'make resume ARGS="--study-id {study_id}"' if study_id else "make resume"
    commands = [
        {"command": "make cleanup", "purpose": "dry run: list what the retention policy would delete"},
        {"command": "make cleanup APPLY=1", "purpose": "delete what the dry run listed"},
    ]
    if study_id:
        commands.append(
            {
                "command": f"python -m dsm5_hpo.cli.cleanup --study-id {study_id} --apply",
                "purpose": "clean up this study only",
            }
        )
    commands += [
        {"command": resume, "purpose": "then continue this study where it stopped"},
        {
            "command": f'make train ARGS="retention_policy.max_total_size={cap_gb}GB '
            'paths.experiments_dir=/bigger/disk/experiments"',
            "purpose": "or start a new study with a smaller cap, on a bigger disk (replace the path)",
        },
    ]
    return commands


def exhaustion_report_dict(
    status: DiskStatus,
    needed: int,
    artifacts: Sequence[tuple[int, Path]],
    *,
    experiments_dir: Path,
    study_id: str | None,
) -> dict[str, Any]:
    """The report's facts as JSON-serializable data (for the JSON log and tests)."""
    return {
        "error": "storage_exhausted",
        "study_id": study_id,
        "experiments_dir": str(experiments_dir),
        "disk": {
            "path": str(status.path),
            "total_bytes": status.total,
            "used_bytes": status.used,
            "free_bytes": status.free,
            "free_percent": round(status.free_percent, 2),
            "level": status.level,
        },
        "next_checkpoint_bytes": needed,
        "shortfall_bytes": max(0, needed - status.free),
        "largest_artifacts": [{"bytes": size, "path": str(path)} for size, path in artifacts],
        "commands": _commands(needed, study_id),
    }


def _sized(count: int) -> str:
    return f"{format_bytes(count)} ({count:,} bytes)"


def format_exhaustion_report(
    status: DiskStatus,
    needed: int,
    artifacts: Sequence[tuple[int, Path]],
    *,
    experiments_dir: Path,
    study_id: str | None,
) -> str:
    """The human report: every fact and command on its own line."""
    report = exhaustion_report_dict(
        status, needed, artifacts, experiments_dir=experiments_dir, study_id=study_id
    )
    where = f" (study {study_id})" if study_id else ""
    measured = f" (measured at {status.path})" if status.path != experiments_dir else ""
    lines = [
        f"not enough disk space for the next checkpoint{where}, even after pruning every checkpoint "
        "the retention policy allows",
        f"  disk holding {experiments_dir}{measured}:",
        f"    total {_sized(status.total)}",
        f"    used  {_sized(status.used)}",
        f"    free  {_sized(status.free)}, {status.free_percent:.1f}% free",
        f"  next checkpoint needs {_sized(needed)}; short by {_sized(report['shortfall_bytes'])}",
        f"  largest artifacts under {experiments_dir}:",
    ]
    lines += [f"    {format_bytes(size):>10}  {path}" for size, path in artifacts] or ["    (none found)"]
    lines.append("  to free space or change the policy:")
    for command in report["commands"]:  # the purpose above each command keeps it copyable as is
        lines += [f"    # {command['purpose']}", f"    {command['command']}"]
    return "\n".join(lines)


class StorageExhaustedError(ResumableStop):
    """The next checkpoint cannot fit; ``report`` is the structured form of the message.

    A ``ResumableStop`` (not a ``StorageError``): no trial is failed for a full disk, and no
    ``except Exception`` on the way can swallow it. The study stays resumable: free space, then
    ``make resume``. Exit code 4, as every storage failure.
    """

    exit_code = StorageError.exit_code
    state = "STORAGE_EXHAUSTED"
    summary = "stopped: disk full"
    hint = (
        "(report above, also in the study's logs/study.jsonl); free space, then continue with `make resume`"
    )

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        # Default pickling would call __init__(message) alone and lose the report.
        return (type(self), (str(self), self.report))

    @classmethod
    def from_status(
        cls,
        status: DiskStatus,
        needed: int,
        artifacts: Sequence[tuple[int, Path]],
        *,
        experiments_dir: Path,
        study_id: str | None = None,
    ) -> StorageExhaustedError:
        return cls(
            format_exhaustion_report(
                status, needed, artifacts, experiments_dir=experiments_dir, study_id=study_id
            ),
            exhaustion_report_dict(
                status, needed, artifacts, experiments_dir=experiments_dir, study_id=study_id
            ),
        )
