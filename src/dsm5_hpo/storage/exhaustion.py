"""Storage exhaustion: how big the next checkpoint will be, what fills the disk, and what to type.

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

import torch

from dsm5_hpo.errors import ResumableStop, StorageError
from dsm5_hpo.storage.checkpoint_io import STAGING_PREFIX
from dsm5_hpo.storage.monitor import DiskStatus, format_bytes

# A directory holding either marker is one checkpoint (committed or quarantined); the names are
# checkpoint_verify's, repeated here because storage/ must not import training/.
CHECKPOINT_MARKERS = (".hash", "metadata.json")
# Per-parameter scalar state ("step" is a 0-d float32 or int64 tensor in torch's optimizers).
_STEP_BYTES = 8


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _slots_before_first_step(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> int:
    """How many param-sized state tensors the optimizer will create at its first step."""
    name = type(optimizer).__name__
    if name == "SGD":
        return 1 if group.get("momentum", 0) else 0  # momentum_buffer, or nothing at all
    if name == "RMSprop":
        return 1 + bool(group.get("momentum", 0)) + bool(group.get("centered", False))
    # Adam, AdamW, NAdam, RAdam, Adamax: two moments (+1 with amsgrad). Unknown optimizers get
    # the same guess: overestimating stops a job early, underestimating fills the disk mid-save.
    return 2 + bool(group.get("amsgrad", False))


def _optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    if optimizer.state:
        # After a step the state is real: sum it (params that never had a grad have no state).
        return sum(
            _tensor_bytes(value)
            for state in optimizer.state.values()
            for value in state.values()
            if isinstance(value, torch.Tensor)
        )
    total = 0
    for group in optimizer.param_groups:
        slots = _slots_before_first_step(optimizer, group)
        for param in group["params"]:
            if param.requires_grad and slots:
                total += slots * _tensor_bytes(param) + _STEP_BYTES
    return total


def nested_tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in a nested structure (a state dict, an optimizer's state, a payload)."""
    if isinstance(value, torch.Tensor):
        return _tensor_bytes(value)
    if isinstance(value, dict):
        return sum(nested_tensor_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(nested_tensor_bytes(item) for item in value)
    return 0


def estimate_checkpoint_bytes(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, *, metadata_bytes: int = 64_000
) -> int:
    """Bytes the next checkpoint will take: weights + optimizer state + metadata/RNG/scheduler slack.

    Weights are every ``state_dict`` entry (persistent buffers included), tied tensors counted
    once per name because the safetensors writer stores each name in full.
    """
    weights = sum(_tensor_bytes(tensor) for tensor in model.state_dict().values())
    state = _optimizer_bytes(optimizer) if optimizer is not None else 0
    return weights + state + metadata_bytes


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

    A checkpoint directory counts as one artifact (the sum of its files); anything else is
    counted file by file. Symlinks below ``root`` are never followed nor counted: what they
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
                    if _is_checkpoint_dir(path):
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
