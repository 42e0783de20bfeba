"""One Optuna trial: sample params, train on the study's shared data, return the best validation score.

Every trial gets its own folder (``trial_<uuid>/``: resolved config, trial.json, logs,
best weights) and its own MLflow run under the study's run.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from dsm5_hpo.checkpointing.base_weights import IN_PLACE_ORIGINS, BaseWeights
from dsm5_hpo.checkpointing.manager import CheckpointManager, architecture_signature
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.features import WindowFeatures
from dsm5_hpo.data.prepare import augmented_epochs
from dsm5_hpo.errors import PipelineError, ResumableStop, TrialTakenOver
from dsm5_hpo.evaluation.prediction import EvaluationData
from dsm5_hpo.hpo.records import TrialRecord, TrialState, read_trial_record, write_trial_record
from dsm5_hpo.hpo.search_space import suggest_params
from dsm5_hpo.hpo.trial_folders import TRIAL_DIR_ATTR, started_trial_dir
from dsm5_hpo.hpo.trial_inputs import InputsByModel, TrialInputs
from dsm5_hpo.hpo.trial_timing import TIMING_ATTR, AttemptClock, TimedRun, TrialTiming
from dsm5_hpo.layout import TrialPaths
from dsm5_hpo.models.multi_task import DualHeadModel, build_model
from dsm5_hpo.storage.atomic import atomic_write_json, atomic_write_text
from dsm5_hpo.storage.space_guard import SpaceGuard
from dsm5_hpo.tracking.tracker import RunSpec, RunTracker, Tracker
from dsm5_hpo.training.distributed import DistributedContext
from dsm5_hpo.training.reporting import ReportPoint, Reports
from dsm5_hpo.training.trainer import Trainer
from dsm5_hpo.utils.logging import json_log_file, log_context
from dsm5_hpo.utils.mappings import flatten
from dsm5_hpo.utils.seeding import seed_everything

logger = logging.getLogger(__name__)


def _note_run_id(trial: optuna.Trial, run: RunTracker) -> None:
    """Replace the trial's local run id by MLflow's once the outbox has created the run (what people
    look up in MLflow); the local id keeps naming the same run through the outbox otherwise."""
    if trial.user_attrs.get("mlflow_run_id") == run.run_id:
        return
    try:
        trial.set_user_attr("mlflow_run_id", run.run_id)
    except Exception as error:  # noqa: BLE001 - the trial's outcome matters more than a nicer id
        logger.debug("cannot record the MLflow id of trial %d: %s", trial.number, error)


def _no_fence() -> None:
    """Every trial but a shared study's is this process's until it ends."""


def checkpoint_manager(
    trial_dir: Path,
    model: DualHeadModel,
    trial_id: str,
    config: StudyConfig,
    space: SpaceGuard | None = None,
    snapshot_buffers: dict[tuple[Any, ...], torch.Tensor] | None = None,
    fence: Callable[[], None] | None = None,
    base: BaseWeights | None = None,
) -> CheckpointManager:
    """The trial's checkpoints, tied to this model's architecture and heads; ``base``: the encoder's
    read-only folder, whose tensors checkpoints reference in place instead of copying."""
    return CheckpointManager(
        TrialPaths(trial_dir).checkpoints,
        trial_id=trial_id,
        architecture_signature=architecture_signature(model),
        head_config=model.head_config(),
        interval_epochs=config.train.checkpoint_interval_epochs,
        retention=config.retention_policy,
        space=space,
        asynchronous=config.train.async_checkpointing,
        snapshot_buffers=snapshot_buffers,
        fence=fence,
        base=base,
    )


def pretrained_base(inputs: TrialInputs) -> BaseWeights | None:
    """The encoder's folder when checkpoints may read its tensors in place (a read-only origin)."""
    return BaseWeights(inputs.model_path) if inputs.origin in IN_PLACE_ORIGINS else None


def _earlier_attempts(trial_dir: Path) -> list[dict[str, Any]] | None:
    """The attempts before this one, as the trial.json found in the folder tells them."""
    if not TrialPaths(trial_dir).record.is_file():
        return None
    try:
        previous = read_trial_record(trial_dir)
    except PipelineError as error:  # a damaged record: this attempt starts a new history
        logger.warning("cannot read the previous attempt of %s: %s", trial_dir, error)
        return None
    return [*(previous.attempts or []), previous.as_attempt()]


def seeded_model(inputs: TrialInputs, config: StudyConfig) -> DualHeadModel:
    """The trial's model, built after seeding: every rank of a DDP trial starts from the same weights."""
    seed_everything(config.train.seed)
    return build_model(inputs.model_path, config)


def training_data(
    inputs: TrialInputs, config: StudyConfig
) -> tuple[WindowFeatures | list[WindowFeatures], EvaluationData]:
    """What Trainer.fit takes: the training windows (one set per epoch with augmentation) and the
    validation split; the same on every rank of a DDP trial (each trains on its shard of them)."""
    data = inputs.data
    validation, train = data.splits["validation"], data.splits["train"]
    windows: WindowFeatures | list[WindowFeatures] = train.features
    if config.train.augment_probability > 0:
        windows = augmented_epochs(train.examples, data.tokenizer, config.data, config.train)
    return windows, EvaluationData(validation.examples, validation.features)


def settle_checkpoints(manager: CheckpointManager) -> None:
    """An ended trial keeps only its best weights; never let this hide the trial's own outcome."""
    try:
        manager.finish_trial()
    except Exception as error:  # noqa: BLE001 - retention is housekeeping, the trial's result stands
        logger.warning("cannot apply the retention policy to %s: %s", manager.folder, error)


@dataclass(kw_only=True)
class Objective:
    config: StudyConfig
    inputs: InputsByModel
    """Each trial's encoder and windows: the study's, or those of the encoder / input format it drew."""
    study_id: str
    tracker: Tracker
    study_run: RunTracker
    progress: bool | None = None
    checkpointing: bool = True
    """False for --no-checkpoint: trials write no weights (metrics are still logged)."""
    space: SpaceGuard | None = None
    """The study's free-space guard, shared by every trial's checkpoint manager."""
    snapshot_buffers: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict)
    """Host memory for asynchronous checkpoints, reused from trial to trial (trials run one at a time)."""
    device: str | None = None
    """Where the trials run (hpo.devices: cuda:N, cpu:N), for trial.json and the trial's Optuna attrs."""
    distributed: DistributedContext | None = None
    """This process's rank when the trial trains in several (train.distributed=ddp): rank 0 runs the
    objective, the other ranks only train (hpo/trial_process.py)."""
    epoch_hook: Callable[[int, int], None] | None = None
    """Called with (trial number, epoch) after each epoch's report and checkpoint: fault injection for
    tests (a crash mid-trial, after a checkpoint, is what a retry or a resume must continue from)."""

    def __call__(
        self, trial: optuna.Trial, reported: set[int] | None = None, fence: Callable[[], None] | None = None
    ) -> float:
        """Run ``trial``; a trial re-attached after a crash (its folder exists) continues in place.

        ``reported`` are the steps Optuna already holds intermediate values for (re-attached trials): epochs,
        or global optimizer steps with hpo.report_every_n_steps.
        ``fence`` (a shared study's worker) raises TrialTakenOver once the trial is no longer this
        worker's; it is called before every write into the trial's folder, run and Optuna trial after
        the start, and the trial then stops without writing anything more.
        """
        # The trial's start (its start-up runs from here to its first optimizer step).
        started = time.perf_counter()
        fence = fence or _no_fence
        params = suggest_params(trial, self.config.hpo.search_space)
        config = self.config.with_params(params)
        # Ids are stored in Optuna before anything is created, so a crash at any point leaves a trial
        # that the resumed study finds again (folder, MLflow run) instead of orphaned copies.
        resumed = "trial_uuid" in trial.user_attrs
        if resumed:
            trial_uuid = str(trial.user_attrs["trial_uuid"])
        else:
            trial_uuid = str(uuid.uuid4())
            trial.set_user_attr("trial_uuid", trial_uuid)
            trial.set_user_attr(TRIAL_DIR_ATTR, str(self.config.paths.layout.trial(trial_uuid).dir))
        trial_dir = started_trial_dir(trial)
        trial_dir.mkdir(parents=True, exist_ok=True)
        if not TrialPaths(trial_dir).config.is_file():
            atomic_write_text(TrialPaths(trial_dir).config, yaml.safe_dump(config.to_dict(), sort_keys=False))
        earlier = _earlier_attempts(trial_dir) if resumed else None
        # A resumed or retried trial adds this attempt's time to what its earlier ones stored.
        clock = AttemptClock(started, TrialTiming.from_dict(trial.user_attrs.get(TIMING_ATTR)))
        record = TrialRecord(
            trial_id=trial_uuid,
            study_id=self.study_id,
            number=trial.number,
            params=params,
            state="RUNNING",
            started_at=datetime.now(UTC).isoformat(),
            resumed=resumed,
            device=self.device,
            attempts=earlier,
        )
        write_trial_record(trial_dir, record)

        with (
            log_context(study=self.study_id, trial=trial.number),
            json_log_file(
                TrialPaths(trial_dir).log,
                max_bytes=self.config.logging.max_bytes,
                backup_count=self.config.logging.backup_count,
            ),
        ):
            run = self._run_tracker(trial, trial_uuid, config, params)
            if self.config.hpo.shared:  # numbers run past n_trials there: dead workers' trials are re-queued
                logger.info(
                    "trial number %d %s: %s", trial.number, "resumed" if resumed else "started", params
                )
            else:
                logger.info(
                    "trial %d of %d %s: %s",
                    trial.number + 1,
                    self.config.hpo.n_trials,
                    "resumed" if resumed else "started",
                    params,
                )
            try:
                value = self._train(trial, config, trial_dir, run, set(reported or ()), fence, clock)
                fence()
            except TrialTakenOver:  # the folder and the run are another worker's now: leave them as they are
                raise
            except optuna.TrialPruned:
                fence()
                self._finish(trial, trial_dir, record, run, "PRUNED", "KILLED", clock)
                _note_run_id(trial, run)
                raise
            except ResumableStop as stop:  # a signal or a full disk: Optuna keeps the trial RUNNING
                fence()
                self._finish(trial, trial_dir, record, run, stop.state, "KILLED", clock)
                raise
            except BaseException as error:
                fence()
                # Recorded where people look: trial.json, the trial's Optuna attrs and its MLflow run.
                record.error = f"{type(error).__name__}: {error}"
                trial.set_user_attr("error", record.error[:2000])
                run.set_tags({"error": record.error[:5000]})
                logger.error("trial %d failed: %s", trial.number, record.error)
                self._finish(trial, trial_dir, record, run, "FAILED", "FAILED", clock)
                _note_run_id(trial, run)
                raise
            self._finish(trial, trial_dir, record, run, "COMPLETE", "FINISHED", clock)
            _note_run_id(trial, run)
            return value

    def _run_tracker(
        self, trial: optuna.Trial, trial_uuid: str, config: StudyConfig, params: dict[str, Any]
    ) -> RunTracker:
        """The trial's MLflow run: the same run again when the trial is resumed.

        No call here waits for MLflow (the outbox creates and re-opens runs): the run's id is made here
        and saved in the trial before anything is queued, so a crash at any point leaves a trial whose
        resume continues the same run, created then if its creation never reached MLflow."""
        spec = RunSpec(
            f"trial-{trial.number}",
            parent=self.study_run,
            tags={"study_id": self.study_id, "trial_id": trial_uuid, "trial_number": trial.number},
        )
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            return self.tracker.resume_run(str(run_id), spec)
        run_id = self.tracker.new_run_id()
        trial.set_user_attr("mlflow_run_id", run_id)
        run = self.tracker.start_run(spec.name, parent=spec.parent, tags=spec.tags, run_id=run_id)
        run.log_params({**flatten(config.to_dict()), **{f"hp.{k}": v for k, v in params.items()}})
        return run

    def _train(
        self,
        trial: optuna.Trial,
        config: StudyConfig,
        trial_dir: Path,
        run: RunTracker,
        reported: set[int],
        fence: Callable[[], None],
        clock: AttemptClock,
    ) -> float:
        inputs = self.inputs.for_config(config)
        data = inputs.data
        model = seeded_model(inputs, config)

        hpo = self.config.hpo

        def report(point: ReportPoint, metrics: dict[str, float | None]) -> None:
            # The trial's last validation so far: its teardown starts here.
            clock.epoch_end(time.perf_counter())
            value = metrics[hpo.metric]
            assert value is not None and math.isfinite(value)
            fence()  # still this worker's trial (no checkpoint may have been written to tell, e.g. --no-checkpoint)
            if point.step not in reported:  # Optuna keeps the first value of a step; don't report it twice
                trial.report(value, point.step)
                reported.add(point.step)
            if hpo.report_every_n_steps:  # the summary's epochs trained (the reports outnumber them)
                done = point.epoch + 1 if point.end_of_epoch else point.epoch
                if trial.user_attrs.get("epochs") != done:
                    trial.set_user_attr("epochs", done)
            # Warm-up in epochs whatever the report unit: the pruner is not asked during the first epochs.
            if point.epoch >= hpo.pruner_warmup_epochs and trial.should_prune():
                where = (
                    f"after epoch {point.epoch}"
                    if point.end_of_epoch
                    else f"at step {point.step} (epoch {point.epoch})"
                )
                logger.info("trial %d pruned %s (%s=%.4f)", trial.number, where, hpo.metric, value)
                raise optuna.TrialPruned(f"pruned {where}")
            if point.end_of_epoch and self.epoch_hook is not None:
                self.epoch_hook(trial.number, point.epoch)

        checkpoints = (
            checkpoint_manager(
                trial_dir,
                model,
                str(trial.user_attrs["trial_uuid"]),
                config,
                self.space,
                self.snapshot_buffers,
                fence,
                pretrained_base(inputs),
            )
            if self.checkpointing
            else None
        )
        windows, validation = training_data(inputs, config)
        trainer = Trainer(
            model,
            config.train,
            criteria=data.criteria,
            metric=hpo.metric,
            max_answer_tokens=config.data.max_answer_tokens,
            tracker=TimedRun(run, clock.timing),  # the epochs' timings reach the study through it
            checkpoints=checkpoints,
            progress=self.progress,
            distributed=self.distributed,
            compile_cache=config.paths.cache / "compile",
            reports=Reports(hpo.report_every_n_steps, report, validation),
        )
        try:
            result = trainer.fit(windows, validation)
        except Exception:  # pruned or failed: the trial has ended (a signal leaves it resumable instead)
            if checkpoints is not None:
                fence()
                settle_checkpoints(checkpoints)
            raise
        finally:
            clock.training_start(trainer.training_started_at)
            clock.first_step(trainer.first_step_at)
        fence()
        if checkpoints is not None:
            settle_checkpoints(checkpoints)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("best_metrics", result.best_metrics)
        atomic_write_json(
            TrialPaths(trial_dir).validation_report,
            {
                "trial_id": trial.user_attrs["trial_uuid"],
                "split": "validation",
                "best_epoch": result.best_epoch,
                "metric": hpo.metric,
                "value": result.best_value,
                "metrics": result.best_metrics,
                "history": result.history,
                "synthetic_data": self.config.data.synthetic,
            },
        )
        return result.best_value

    def _finish(
        self,
        trial: optuna.Trial,
        trial_dir: Path,
        record: TrialRecord,
        run: RunTracker,
        state: TrialState,
        run_status: str,
        clock: AttemptClock,
    ) -> None:
        timing = clock.end(time.perf_counter(), after_epoch=state in ("COMPLETE", "PRUNED"))
        record.state, record.finished_at = state, datetime.now(UTC).isoformat()
        record.mlflow_run_id = run.run_id
        record.timing = timing.as_dict()
        write_trial_record(trial_dir, record)
        try:  # what the summary's overhead figures read (the study never reads MLflow back)
            trial.set_user_attr(TIMING_ATTR, timing.as_dict())
        except Exception as error:  # noqa: BLE001 - e.g. the database is away: the trial's outcome matters more
            logger.warning("cannot record the timing of trial %d: %s", trial.number, error)
        run.set_tags({"optuna_state": state})
        run.finish(run_status)
