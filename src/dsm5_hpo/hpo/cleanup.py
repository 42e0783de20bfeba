"""What `make cleanup` may delete under the experiments directory, and deleting it.

``plan_cleanup`` only reads: for every study (or one), each trial's checkpoints are judged by the
study's own retention policy (from study.json), as the study would have when it ran: an ended
trial keeps its best weights without resume state, a trial left running keeps its resume point,
and the study's total is brought under ``max_total_size`` worst trials first. On top of that it
lists what no trial references any more: checkpoint folders of trials whose study is gone,
staging and half-swapped directories left by crashes, and quarantined checkpoints. Last, the blobs
(experiments/blobs/) that no checkpoint left after these deletions references: applying collects
them with the crash-safe mark and sweep of checkpointing.blob_gc, which never races a save.

Only checkpoint directories (and ``training_state.pt`` of ended trials) are ever candidates:
metrics, logs, reports, trial.json, study.json and the MLflow database are never listed. Nothing
outside the experiments directory is touched: symbolic links are never followed, and a link that
points out of it is reported and left alone. A study that a live process is running is skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dsm5_hpo.checkpointing.blob_gc import collect_garbage, mark
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.io import delete_directory
from dsm5_hpo.checkpointing.metadata import STATE_FILE, CheckpointInfo, InvalidCheckpoint
from dsm5_hpo.checkpointing.pruning import PENDING_SUFFIX, strip_resume_state
from dsm5_hpo.checkpointing.retention import choose_study_checkpoints, choose_trial_checkpoints
from dsm5_hpo.checkpointing.study_retention import read_trial_checkpoints
from dsm5_hpo.config import RetentionConfig, study_config_from_mapping
from dsm5_hpo.errors import ConfigError, PipelineError
from dsm5_hpo.hpo.liveness import study_driver
from dsm5_hpo.layout import (
    QUARANTINE_DIR,
    STAGING_PREFIX,
    STUDY_PREFIX,
    TRIAL_PREFIX,
    ExperimentLayout,
    StudyPaths,
    TrialPaths,
)
from dsm5_hpo.storage.atomic import read_json_object
from dsm5_hpo.storage.exhaustion import tree_size
from dsm5_hpo.storage.monitor import format_bytes
from dsm5_hpo.storage.publish import export_leftovers

logger = logging.getLogger(__name__)

Action = Literal["delete", "strip", "collect"]
ENDED_STATES = frozenset({"COMPLETE", "PRUNED", "FAILED"})
"""trial.json states of a trial that will never run again; any other state can still be resumed."""


@dataclass(frozen=True)
class CleanupItem:
    path: Path
    bytes: int
    action: Action
    """'delete' removes the directory; 'strip' removes only its training_state.pt (weights stay);
    'collect' removes the blobs of the store that no checkpoint references."""
    reason: str
    checkpoint: CheckpointInfo | None = None


@dataclass
class CleanupPlan:
    root: Path
    items: list[CleanupItem] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Things left alone on purpose, with why (a running study, a link pointing out, ...)."""

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.items)


@dataclass
class _Trial:
    folder: Path
    state: str
    value: float | None


def _inside(root: Path, path: Path) -> bool:
    """``path`` is below ``root`` with no symbolic link on the way (checked on the real disk)."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            return False
    return os.path.realpath(path).startswith(str(root) + os.sep)


class _Planner:
    def __init__(self, root: Path) -> None:
        self.plan = CleanupPlan(root)
        self.root = root

    def entries(self, pattern: str) -> Iterator[Path]:
        for path in sorted(self.root.glob(pattern)):
            if path.is_symlink():
                target = os.path.realpath(path)
                where = "outside" if not target.startswith(str(self.root) + os.sep) else "inside"
                self.plan.skipped.append(
                    (path, f"symbolic link to {target} ({where} the experiments directory): not followed")
                )
                continue
            if path.is_dir():
                yield path

    def add(self, path: Path, action: Action, reason: str, info: CheckpointInfo | None = None) -> None:
        if not _inside(self.root, path):
            self.plan.skipped.append((path, "reached through a symbolic link: not touched"))
            return
        if action == "strip":
            size = (path / STATE_FILE).stat().st_size if (path / STATE_FILE).is_file() else 0
        else:
            size = tree_size(path)
        self.plan.items.append(CleanupItem(path, size, action, reason, info))

    def leftovers(self, trial_dir: Path) -> None:
        """Crash leftovers and quarantined checkpoints of a trial that is not running now."""
        folder = TrialPaths(trial_dir).checkpoints
        if folder.is_symlink():
            self.plan.skipped.append((folder, f"symbolic link to {os.path.realpath(folder)}: not followed"))
            return
        if not folder.is_dir():
            return
        for path in sorted(folder.glob(f"{STAGING_PREFIX}*")):
            if path.is_dir() and not path.is_symlink():
                self.add(path, "delete", "temporary directory left by an interrupted save")
        for path in sorted(folder.glob(f"epoch_*{PENDING_SUFFIX}")):
            if path.is_dir() and not path.is_symlink():
                self.add(path, "delete", "half-built weights-only copy left by an interrupted prune")
        quarantine = folder / QUARANTINE_DIR
        if quarantine.is_dir() and not quarantine.is_symlink():
            for path in sorted(quarantine.iterdir()):
                if path.is_dir() and not path.is_symlink():
                    self.add(path, "delete", "quarantined checkpoint (failed verification; kept as evidence)")


def _study_trials(root: Path, study_id: str) -> dict[str, _Trial]:
    trials: dict[str, _Trial] = {}
    for trial_dir in sorted(root.glob(f"{TRIAL_PREFIX}*")):
        record = read_json_object(TrialPaths(trial_dir).record)
        if record is None or record.get("study_id") != study_id or trial_dir.is_symlink():
            continue
        report = read_json_object(TrialPaths(trial_dir).validation_report) or {}
        value = report.get("value")
        trials[str(trial_dir)] = _Trial(
            trial_dir, str(record.get("state", "")), float(value) if isinstance(value, int | float) else None
        )
    return trials


def _plan_study(planner: _Planner, study_dir: Path, record: dict[str, Any]) -> set[Path]:
    """Add the study's deletions; returns the trial folders it references."""
    study_id = str(record.get("study_id", ""))
    try:
        policy: RetentionConfig = study_config_from_mapping(record["config"]).retention_policy
    except (KeyError, TypeError, PipelineError) as error:
        planner.plan.skipped.append((study_dir, f"its config in study.json cannot be read ({error})"))
        return set()
    trials = _study_trials(planner.root, study_id)
    referenced = {t.folder for t in trials.values()}
    owner = study_driver(study_dir, record)
    if owner is not None:
        planner.plan.skipped.append((study_dir, f"the study is running now ({owner}): left alone"))
        return referenced
    for path in export_leftovers(StudyPaths(study_dir).best_model):  # an interrupted or replaced export
        planner.add(path, "delete", "folder left by an interrupted export of the best model (not in use)")
    if policy.keep_all:
        planner.plan.skipped.append((study_dir, "retention_policy.keep_all: its checkpoints are all kept"))
        for trial in trials.values():
            planner.leftovers(trial.folder)
        return referenced
    kept: dict[str, list[CheckpointInfo]] = {}
    for name, trial in trials.items():
        infos = read_trial_checkpoints(trial.folder)
        ended = trial.state in ENDED_STATES
        decision = choose_trial_checkpoints(infos, policy, trial_running=not ended)
        by_path = {info.path: info for info in infos}
        for deletion in decision.delete:
            planner.add(deletion.path, "delete", deletion.reason, by_path[deletion.path])
        for path in decision.strip_resume_state:
            planner.add(path, "strip", "the trial has ended: its resume state is not needed", by_path[path])
        kept[name] = [info for info in infos if info.path in decision.keep]
        planner.leftovers(trial.folder)
    best_id = record.get("best_trial_id")
    complete = [
        (t.value, name) for name, t in trials.items() if t.state == "COMPLETE" and t.value is not None
    ]
    best = next(
        (n for n, t in trials.items() if best_id and t.folder.name == f"{TRIAL_PREFIX}{best_id}"), None
    )
    best = best or (max(complete)[1] if complete else None)
    running = [name for name, t in trials.items() if t.state not in ENDED_STATES]
    cap = choose_study_checkpoints(kept, best, policy, running_trial=running[0] if running else None)
    by_path = {info.path: info for infos in kept.values() for info in infos}
    for deletion in cap.delete:
        planner.add(deletion.path, "delete", deletion.reason, by_path[deletion.path])
    return referenced


def plan_cleanup(experiments_dir: Path, *, study_id: str | None = None) -> CleanupPlan:
    """What cleanup would delete (read only); see the module docstring."""
    if not experiments_dir.is_dir():
        raise ConfigError(
            f"experiments directory {experiments_dir} not found; pass --experiments-dir DIR "
            "(the paths.experiments_dir of your studies)"
        )
    root = Path(os.path.realpath(experiments_dir))
    planner = _Planner(root)
    if study_id is not None:
        study_dir = ExperimentLayout(root).study(study_id).dir
        record = read_json_object(StudyPaths(study_dir).record)
        if record is None:
            raise ConfigError(
                f"study {study_id} not found under {root} (no readable study_{study_id}/study.json)"
            )
        _plan_study(planner, study_dir, record)
        _plan_blobs(planner)
        return planner.plan
    referenced: set[Path] = set()
    for study_dir in planner.entries(f"{STUDY_PREFIX}*"):
        record = read_json_object(StudyPaths(study_dir).record)
        if record is None:
            planner.plan.skipped.append((study_dir, "no readable study.json: its trials count as referenced"))
            continue
        referenced |= _plan_study(planner, study_dir, record)
    known_studies = {StudyPaths(p).study_id for p in root.glob(f"{STUDY_PREFIX}*")}
    for trial_dir in planner.entries(f"{TRIAL_PREFIX}*"):
        if trial_dir in referenced:
            continue
        record = read_json_object(TrialPaths(trial_dir).record) or {}
        if record.get("study_id") in known_studies:
            continue  # its study is there but was skipped (unreadable config): not an orphan
        folder = TrialPaths(trial_dir).checkpoints
        if folder.is_dir() and not folder.is_symlink():
            why = (
                f"study {record['study_id']} no longer exists" if record.get("study_id") else "no trial.json"
            )
            planner.add(folder, "delete", f"orphaned checkpoint folder: {why}")
    _plan_blobs(planner)
    return planner.plan


def _plan_blobs(planner: _Planner) -> None:
    """The blobs no checkpoint references once the planned deletions are done."""
    layout = ExperimentLayout(planner.root)
    store = BlobStore(layout.blobs)
    if not store.root.is_dir() or store.root.is_symlink():
        return
    deleted = [item.path for item in planner.plan.items if item.action == "delete"]
    marks = mark(layout)
    if marks.unreadable:
        planner.plan.skipped.append(
            (store.root, f"blobs not collected: unreadable checkpoint metadata ({marks.unreadable[0]})")
        )
        return
    kept = {
        sha
        for sha, users in marks.referenced.items()
        if any(not any(user == d or d in user.parents for d in deleted) for user in users)
    }
    orphans = [(sha, size) for sha, size in store.names() if sha not in kept]
    if orphans:
        planner.plan.items.append(
            CleanupItem(
                store.root,
                sum(size for _, size in orphans),
                "collect",
                f"{len(orphans)} blob(s) that no kept checkpoint references",
            )
        )


def apply_cleanup(plan: CleanupPlan) -> int:
    """Delete what ``plan`` lists (each checked again to be inside the root); returns bytes freed."""
    freed = 0
    for item in plan.items:
        if not _inside(plan.root, item.path) or not item.path.exists():
            logger.warning("cleanup leaves %s: it moved or is reached through a link now", item.path)
            continue
        try:
            if item.action == "strip":
                assert item.checkpoint is not None
                freed += strip_resume_state(item.checkpoint)
            elif item.action == "collect":  # last in the plan: after the deletions it counts on
                collection = collect_garbage(ExperimentLayout(plan.root))
                if collection.skipped:
                    logger.warning("cleanup leaves the blobs of %s: %s", item.path, collection.skipped)
                    continue
                freed += collection.freed
            else:
                delete_directory(item.path)
                freed += item.bytes
        except (OSError, InvalidCheckpoint) as error:
            logger.warning("cleanup cannot %s %s: %s", item.action, item.path, error)
            continue
        logger.info("cleanup: %s %s (%s): %s", item.action, item.path, format_bytes(item.bytes), item.reason)
    return freed
