"""A trial's checkpoints: crash-safe commits, SHA-256 verified before loading, quarantine, pruning.

Layout: ``<folder>/epoch_0003/`` holds ``model.safetensors``, ``training_state.pt``,
``metadata.json`` and ``.hash``. A save writes a ``.tmp-*`` staging directory and renames it
into place (``checkpointing.io``), so a crash leaves the old set of checkpoints or the old
set plus the new one. A load verifies every hash it depends on before deserializing anything;
a checkpoint that fails is logged at ERROR, moved to ``<folder>/quarantine/`` (never deleted)
and the previous one is tried. What stays on disk is decided by ``checkpointing.retention`` after each
commit and when the trial ends (``finish_trial``: best weights only, no resume state).
"""

from __future__ import annotations

import contextvars
import errno
import logging
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from dsm5_hpo.checkpointing.base_weights import BaseWeights
from dsm5_hpo.checkpointing.blob_gc import collect_garbage
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.io import (
    commit_directory,
    make_staging_dir,
    remove_stale_staging,
)
from dsm5_hpo.checkpointing.metadata import (
    HASH_FILE,
    METADATA_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointInfo,
    InvalidCheckpoint,
    info_from_metadata,
    normalized_head_config,
)
from dsm5_hpo.checkpointing.pruning import (
    apply_deletions,
    checkpoint_directories,
    recover_interrupted_strips,
    strip_resume_state,
)
from dsm5_hpo.checkpointing.retention import RetentionDecision, choose_trial_checkpoints, tightened
from dsm5_hpo.checkpointing.size import nested_tensor_bytes
from dsm5_hpo.checkpointing.training_state import (
    TrainingState,
    architecture_signature,
    capture_rng_state,
    restore_rng_state,
    snapshot,
    state_payload,
)
from dsm5_hpo.checkpointing.verify import (
    inspect_checkpoint,
    quarantine_invalid,
    read_training_state,
    read_weights,
)
from dsm5_hpo.checkpointing.writer import FrozenDigests, plan_weights, store_weights, write_own_files
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.errors import StorageError
from dsm5_hpo.layout import CHECKPOINTS_DIR, QUARANTINE_DIR, experiments_of_checkpoints
from dsm5_hpo.storage.monitor import format_bytes
from dsm5_hpo.storage.space_guard import NullSpaceGuard, SpaceGuard

# The public interface; the helpers it is built from live in metadata, verify and training_state.
__all__ = [
    "HASH_FILE", "METADATA_FILE", "QUARANTINE_DIR", "STATE_FILE", "WEIGHTS_FILE", "CheckpointInfo",
    "CheckpointManager", "LoadedCheckpoint", "TrainingState",
    "architecture_signature", "capture_rng_state", "restore_rng_state",
]  # fmt: skip

logger = logging.getLogger(__name__)

METADATA_SLACK = 256 * 1024  # bytes for metadata.json, .hash and torch.save framing beyond the tensors
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _no_fence() -> None:
    """The folder is always this process's (every trial but a shared study's)."""


@dataclass
class LoadedCheckpoint:
    info: CheckpointInfo
    state: TrainingState
    """Model weights included, as CPU tensors."""


class CheckpointManager:
    """Saves, verifies, loads and prunes the checkpoints of one trial in ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        trial_id: str,
        architecture_signature: str,
        head_config: Mapping[str, Any],
        interval_epochs: int = 1,
        retention: RetentionConfig | None = None,
        space: SpaceGuard | NullSpaceGuard | None = None,
        asynchronous: bool = False,
        snapshot_buffers: dict[tuple[Any, ...], torch.Tensor] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fence: Callable[[], None] | None = None,
        base: BaseWeights | None = None,
    ) -> None:
        if interval_epochs < 1:
            raise ValueError(f"interval_epochs ({interval_epochs}) must be >= 1")
        if folder.name != CHECKPOINTS_DIR:  # its blobs are <root>/blobs, marked from <root>/*/checkpoints
            raise ValueError(f"a checkpoint folder is <root>/<run>/{CHECKPOINTS_DIR}, not {folder}")
        if not _SHA256.match(architecture_signature):
            raise ValueError(
                f"architecture_signature must be a SHA-256 hex digest, got {architecture_signature!r}"
            )
        self.folder = folder
        self.trial_id = trial_id
        self.architecture_signature = architecture_signature
        self.head_config = normalized_head_config(head_config)
        self.interval_epochs = interval_epochs
        self.retention = retention or RetentionConfig()
        self.space = space if space is not None else NullSpaceGuard(folder)
        """Checks free space before each write and escalates pruning (``storage.space_guard``)."""
        self._clock = clock
        self.asynchronous = asynchronous
        """Saves run on a background thread (at most one in flight); see ``save``."""
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: Future[CheckpointInfo] | None = None
        self._buffers = snapshot_buffers if snapshot_buffers is not None else {}
        """Host memory reused by every snapshot (one save in flight at a time makes this safe); a
        study passes one dict to all its trials' managers, so only its first save allocates."""
        self._resumed_from: CheckpointInfo | None = None
        """The checkpoint load_latest returned: not pruned until a newer one is committed."""
        self.base = base
        self.blobs = BlobStore(experiments_of_checkpoints(folder).blobs)
        self._frozen = FrozenDigests()
        """The pretrained encoder's read-only folder: tensors equal to its own are read there, not copied."""
        self.fence = fence or _no_fence
        """Called before each save and before the end-of-trial pruning; raises when the folder is no longer
        this process's to write (a shared study's worker taken for dead: hpo/workers.py TrialLease)."""

    def should_save(self, epoch: int) -> bool:
        return (epoch + 1) % self.interval_epochs == 0

    def on_disk(self, tensor: torch.Tensor) -> bool:
        """Whether a save would not write ``tensor``: its blob is in the store or read in place."""
        return plan_weights(self.blobs, {"t": tensor}, self.base, frozen={"t"}).missing_bytes == 0

    def preflight(self, needed: int) -> None:
        """Before training: make sure a checkpoint of ``needed`` bytes will fit (escalating if not)."""
        self.wait()
        self.space.ensure_room(needed, self._prune_for_space, what=f"a checkpoint of trial {self.trial_id}")

    def save(self, state: TrainingState) -> CheckpointInfo | None:
        """Write, commit, then prune ``state``.

        Synchronous: the new checkpoint is on disk and visible when this returns (its info is
        returned). Asynchronous: the state is copied to host memory and the rest happens on a
        background thread while training goes on; returns None. Either way, the previous save
        must have finished first (at most one in flight) and its failure is raised here.

        Raises StorageExhaustedError, with nothing written, when the disk cannot take it even
        after the space guard's escalation, or when the disk fills up during the write.
        """
        self.wait()
        self.fence()
        if not self.asynchronous:
            return self._write(state)
        copied = snapshot(state, self._buffers)  # the only part training waits for
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsm5-checkpoint")
        # In the caller's context, so that the save's log lines carry its study, trial and epoch.
        self._in_flight = self._pool.submit(contextvars.copy_context().run, self._write, copied)
        return None

    def wait(self) -> CheckpointInfo | None:
        """Block until the save in flight (if any) is committed; raise its failure here if it failed."""
        in_flight, self._in_flight = self._in_flight, None
        return in_flight.result() if in_flight is not None else None

    def _write(self, state: TrainingState) -> CheckpointInfo:
        started = time.perf_counter()
        payload = state_payload(state)  # refuses unloadable state before anything is written
        target = self.folder / f"epoch_{state.epoch:04d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fence()  # an asynchronous save runs later than save() checked: the folder may be another's now
        remove_stale_staging(self.folder)
        plan = plan_weights(self.blobs, state.model_state, self.base, self._frozen.known(state), state.frozen)
        # Only what is not on disk yet needs room: a frozen layer or a LoRA base is there already.
        needed = plan.missing_bytes + nested_tensor_bytes(payload) + METADATA_SLACK
        self.space.ensure_room(needed, self._prune_for_space, what=f"checkpoint {target}")
        staging = make_staging_dir(target)
        try:
            with self.blobs.shared():  # no blob collection until this checkpoint is committed (blobs.py)
                written = store_weights(self.blobs, state.model_state, plan)
                created = self._clock().astimezone(UTC).isoformat()
                metadata, own_bytes = write_own_files(staging, self, state, payload, plan, created)
                try:  # last check before the commit, which could otherwise supersede another worker's epoch
                    self.fence()
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                if target.exists():  # only when a trial re-runs an epoch it had already saved
                    self._quarantine(
                        target,
                        InvalidCheckpoint("", "superseded by a new save of the same epoch"),
                        quiet=True,
                    )
                commit_directory(staging, target)
        except Exception as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                # The estimate was short or another process filled the disk: same report, same stop.
                raise self.space.exhausted(needed) from error
            if isinstance(error, OSError):
                raise StorageError(f"cannot write checkpoint {target}: {error}") from error
            raise
        unique = {d.sha256: d.bytes for d in plan.digests.values() if d.sha256 not in plan.in_place}
        info = info_from_metadata(target, metadata, own_bytes + sum(unique.values()))
        logger.info(
            "saved checkpoint %s (%s new on disk: its files %s + %d new blob(s) %s; %.2f s)",
            target,
            format_bytes(info.own_bytes + sum(unique[sha] for sha in written)),
            format_bytes(info.own_bytes),
            len(written),
            format_bytes(sum(unique[sha] for sha in written)),
            time.perf_counter() - started,
        )
        self._prune(info)
        return info

    def load_latest(self) -> LoadedCheckpoint | None:
        """The newest valid, compatible checkpoint, deserialized; bad ones are quarantined on the way."""
        self.wait()
        for path in reversed(self._candidates()):
            started = time.perf_counter()
            try:
                if not self._inspect(path, hashed=()).resume_capable:
                    logger.info(
                        "checkpoint %s holds weights only (its trial ended): not a resume point", path
                    )
                    continue
                info = self._inspect(path, hashed=(WEIGHTS_FILE, STATE_FILE))
                state = read_training_state(path, info.epoch, info.step)
            except InvalidCheckpoint as problem:
                self._quarantine(path, problem)
                continue
            logger.info(
                "loaded checkpoint %s (epoch %d, step %d, %.2f s)",
                path,
                info.epoch,
                info.step,
                time.perf_counter() - started,
            )
            self._resumed_from = info
            return LoadedCheckpoint(info, state)
        logger.info("no valid checkpoint in %s: the trial starts at epoch 0", self.folder)
        return None

    def finish_trial(self) -> RetentionDecision:
        """The trial has ended: keep only its best checkpoint(s), as weights without resume state (and
        nothing a crashed save or deletion left: an ended trial has no next save to remove it)."""
        self.wait()
        self.fence()
        remove_stale_staging(self.folder)
        infos = self._checked(self._candidates(), hashed=())
        decision = choose_trial_checkpoints(infos, self._policy(), trial_running=False)
        self._apply(decision, infos)
        # Also what a killed save of this trial left in the store (its pruning collects the rest).
        collect_garbage(experiments_of_checkpoints(self.folder))
        return decision

    def strip_resume_state(self, info: CheckpointInfo) -> bool:
        """Drop ``info``'s training_state.pt; it stays valid for best()/load_weights, not for resume.

        Returns False (logged) when it could not: the checkpoint is then left whole or quarantined.
        """
        try:
            strip_resume_state(info)
        except InvalidCheckpoint as problem:
            self._quarantine(info.path, problem)
            return False
        except OSError as error:  # e.g. a full disk: the whole checkpoint stays, which is safe
            logger.warning("cannot drop the resume state of checkpoint %s: %s", info.path, error)
            return False
        logger.info("dropped the resume state of checkpoint %s (trial ended; weights kept)", info.path)
        return True

    def valid_checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint whose files all match their SHA-256, oldest first; bad ones are quarantined."""
        self.wait()
        return self._checked(self._candidates(), hashed=(WEIGHTS_FILE, STATE_FILE))

    def best(self) -> CheckpointInfo | None:
        """The valid checkpoint with the highest metric value (ties: the earliest); weights hash-checked."""
        tied = self.co_best()
        return tied[0] if tied else None

    def co_best(self) -> list[CheckpointInfo]:
        """Every valid checkpoint tied for the highest metric value, earliest first; weights hash-checked.

        Only the weights of the tied checkpoints are read, not every file of every checkpoint.
        """
        self.wait()
        ranked = sorted(
            self._checked(self._candidates(), hashed=()), key=lambda i: (-i.metric_value, i.epoch)
        )
        tied: list[CheckpointInfo] = []
        for info in ranked:
            if tied and info.metric_value != tied[0].metric_value:
                break
            try:
                tied.append(self._inspect(info.path, hashed=(WEIGHTS_FILE,)))
            except InvalidCheckpoint as problem:
                self._quarantine(info.path, problem)
        return tied

    def load_weights(self, info: CheckpointInfo) -> dict[str, torch.Tensor]:
        """The model weights of ``info``, verified against their SHA-256 first (CPU tensors)."""
        self.wait()
        if not info.path.is_dir():
            raise StorageError(f"checkpoint {info.path} does not exist any more (pruned or quarantined)")
        try:
            verified = self._inspect(info.path, hashed=(WEIGHTS_FILE,))
            if verified.sha256 != info.sha256:
                raise StorageError(f"checkpoint {info.path} was replaced since it was listed; list it again")
            return read_weights(info.path)
        except InvalidCheckpoint as problem:
            self._quarantine(info.path, problem)
            raise StorageError(
                f"checkpoint {info.path} is invalid ({problem.file}: {problem.reason}); it was moved to "
                f"{self.folder / QUARANTINE_DIR}: evaluate another checkpoint or rerun the trial"
            ) from None

    # ------------------------------------------------------------------ internals

    def _candidates(self) -> list[Path]:
        """Directories named like a checkpoint, oldest epoch first (staging and quarantine are skipped)."""
        recover_interrupted_strips(self.folder)
        return checkpoint_directories(self.folder)

    def _inspect(self, path: Path, *, hashed: Sequence[str]) -> CheckpointInfo:
        return inspect_checkpoint(self, path, hashed=hashed)

    def _checked(self, paths: Sequence[Path], *, hashed: Sequence[str]) -> list[CheckpointInfo]:
        infos: list[CheckpointInfo] = []
        for path in paths:
            try:
                infos.append(self._inspect(path, hashed=hashed))
            except InvalidCheckpoint as problem:
                self._quarantine(path, problem)
        return infos

    def _quarantine(self, path: Path, problem: InvalidCheckpoint, *, quiet: bool = False) -> None:
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        quarantine_invalid(path, problem, self.folder / QUARANTINE_DIR, stamp, quiet=quiet)

    def _prune(self, new: CheckpointInfo) -> None:
        """Apply the retention policy; runs only after the new checkpoint is committed."""
        resumed = self._resumed_from
        self._apply_policy(self._policy(), also_protected=new.path)
        if resumed is not None and new.epoch > resumed.epoch:
            self._resumed_from = None  # a newer resume point is committed: the policy decides from now on

    def _prune_for_space(self) -> int:
        """Storage escalation step 1: only the newest resume point (and the one resumed from) and
        the co-best stay; leftovers of crashed saves go too. Returns the bytes freed."""
        remove_stale_staging(self.folder)
        return self._apply_policy(tightened(self.retention))

    def _policy(self) -> RetentionConfig:
        """The retention policy now: tightened once the space guard escalated to best-only."""
        return tightened(self.retention) if self.space.best_only else self.retention

    def _apply_policy(self, policy: RetentionConfig, also_protected: Path | None = None) -> int:
        """Prune the running trial's checkpoints by ``policy``, never the one resumed from."""
        infos = self._checked(self._candidates(), hashed=())
        protected = {p.path for p in (self._resumed_from,) if p is not None}
        protected |= {also_protected} if also_protected is not None else set()
        return self._apply(choose_trial_checkpoints(infos, policy, protected=protected), infos)

    def _apply(self, decision: RetentionDecision, infos: Sequence[CheckpointInfo]) -> int:
        freed = apply_deletions(decision.delete, infos, logger)
        by_path = {info.path: info for info in infos}
        for path in decision.strip_resume_state:
            self.strip_resume_state(by_path[path])
        return freed
