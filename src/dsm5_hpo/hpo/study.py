"""Run a whole study: prepare data once, run trials one after another, evaluate the best on test.

Layout (layout.py): ``experiments/study_<uuid>/`` holds optuna.db, study.json, study.lock,
logs/ and evaluation_report.json; each trial writes ``experiments/trial_<uuid>/``. Every trial runs
through hpo/trial_runner.py; the test evaluation of the best trial is hpo/final_evaluation.py.

A study interrupted at any moment is continued by :meth:`StudyRunner.resume`: trials that
finished are kept, the trial that was running is re-attached (Optuna 5:
``optuna.trial.Trial(study, trial_id)``) and continues from its last valid checkpoint in the
same folder and MLflow run, and the study still ends with ``hpo.n_trials`` trials.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from dsm5_hpo.checkpointing.study_retention import prune_study_for_space
from dsm5_hpo.config import StudyConfig, study_config_from_mapping
from dsm5_hpo.data.prepare import PreparedData
from dsm5_hpo.errors import ConfigError, Interrupted, ResumableStop
from dsm5_hpo.hpo.database import opened_storage, storage_lock
from dsm5_hpo.hpo.devices import in_process
from dsm5_hpo.hpo.final_evaluation import StudyOutcome, finish_study, outcome_without_evaluation
from dsm5_hpo.hpo.isolation import IsolatedObjective
from dsm5_hpo.hpo.lock import study_lock
from dsm5_hpo.hpo.model_choices import available_model_choices
from dsm5_hpo.hpo.objective import Objective
from dsm5_hpo.hpo.pruners import make_pruner
from dsm5_hpo.hpo.records import StudyRecord, read_study_record, refuse_another_config, write_study_record
from dsm5_hpo.hpo.sampling import enqueue_config_trial, make_sampler
from dsm5_hpo.hpo.summary_plots import (
    log_study_times,
    mlflow_loss_reader,
    no_losses,
    refresh_summary_quietly,
    render_study_plots_quietly,
)
from dsm5_hpo.hpo.trial_callbacks import ProgressReport, SummaryAfterTrial, retention_after_trial
from dsm5_hpo.hpo.trial_failures import RetryKilledTrial
from dsm5_hpo.hpo.trial_folders import trial_folders
from dsm5_hpo.hpo.trial_inputs import InputsByModel, prepare_inputs
from dsm5_hpo.hpo.trial_loops import drive_trials, host_slots, isolated_objectives
from dsm5_hpo.hpo.trial_runner import AfterTrial, long_lived_heap_frozen
from dsm5_hpo.hpo.workers import (
    make_storage,
    shared_study_id,
    worker_id,
)
from dsm5_hpo.layout import StudyPaths
from dsm5_hpo.storage.monitor import DiskMonitor, StorageMonitor
from dsm5_hpo.storage.space_guard import SpaceGuard
from dsm5_hpo.tracking.tracker import RunSpec, RunTracker, Tracker, is_local_uri
from dsm5_hpo.utils.logging import json_log_file, log_context
from dsm5_hpo.utils.mappings import flatten

logger = logging.getLogger(__name__)


STOP_DRAIN_S = 5.0
"""On Ctrl-C or a full disk, the longest wait for MLflow before exiting (the rest is replayed later)."""
PLOT_DRAIN_S = 10.0
"""Before drawing the training curves, the longest wait for MLflow to take the trials' losses."""
_STARTED = tuple(state for state in TrialState if state != TrialState.WAITING)


class StudyRunner:
    def __init__(
        self,
        config: StudyConfig,
        tracker: Tracker,
        *,
        progress: bool | None = None,
        checkpointing: bool = True,
        disk_monitor: DiskMonitor | None = None,
        epoch_hook: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.epoch_hook = epoch_hook
        """Objective.epoch_hook (fault injection for tests; a module-level function, so that a trial's
        own process can be given it)."""
        self.tracker = tracker
        self.progress = progress
        self.checkpointing = checkpointing
        self.sleep: Callable[[float], None] = time.sleep
        """How a worker of a shared study waits for the others (tests inject their own)."""
        policy = config.retention_policy
        # Runs for the whole study (started in _drive): logs usage, warns when the disk runs low.
        self.disk_monitor: DiskMonitor = disk_monitor or StorageMonitor(
            config.paths.experiments,
            interval_s=policy.disk_check_interval_s,
            warn_percent=policy.disk_space_threshold_percent,
            critical_percent=policy.disk_space_threshold_percent / 2,
        )

    def run(self) -> StudyOutcome:
        """Start a new study, or, with a shared storage (hpo.storage), join the workers' study."""
        self.config = available_model_choices(self.config)  # before anything is written
        hpo = self.config.hpo
        if hpo.shared:
            study_id = shared_study_id(hpo.storage, hpo.study_name)
            study_dir = self.config.paths.layout.study(study_id).dir
            if StudyPaths(study_dir).record.is_file():  # a worker on this machine was here before
                joined = read_study_record(study_dir)
                refuse_another_config(study_dir, joined, self.config.to_dict())
                joined.state, joined.finished_at = "RUNNING", None
                write_study_record(study_dir, joined)
                return self._drive(study_dir, joined)
            storage, study_name = hpo.storage, hpo.study_name
        else:
            study_id = str(uuid.uuid4())
            study_dir = self.config.paths.layout.study(study_id).dir
            storage, study_name = f"sqlite:///{StudyPaths(study_dir).optuna_db.resolve()}", study_dir.name
        study_dir.mkdir(parents=True, exist_ok=hpo.shared)
        record = StudyRecord(
            study_id=study_id,
            state="RUNNING",
            created_at=datetime.now(UTC).isoformat(),
            optuna_storage=storage,
            study_name=study_name,
            shared=hpo.shared,
            config=self.config.to_dict(),
            synthetic_data=self.config.data.synthetic,
            checkpointing=self.checkpointing,
        )
        write_study_record(study_dir, record)
        return self._drive(study_dir, record)

    @classmethod
    def for_resume(
        cls, study_dir: Path, tracker_factory: Any, *, progress: bool | None = None
    ) -> tuple[StudyRunner, StudyRecord]:
        """A runner with the study's own saved config (not today's YAML), and its record."""
        record = read_study_record(study_dir)
        config = study_config_from_mapping(record.config)
        runner = cls(config, tracker_factory(config), progress=progress, checkpointing=record.checkpointing)
        return runner, record

    def resume(self, study_dir: Path, record: StudyRecord) -> StudyOutcome:
        """Continue an interrupted study in place."""
        if record.state == "COMPLETE":
            raise ConfigError(f"study {record.study_id} is already complete; nothing to resume")
        return self._drive(study_dir, record)

    def _drive(self, study_dir: Path, record: StudyRecord) -> StudyOutcome:
        study_id = record.study_id
        config = self.config
        shared = config.hpo.shared
        # Shared: several workers (maybe on this machine, maybe with one experiments folder) drive the
        # study together; the database coordinates them, and each keeps a log of its own.
        log_name = f"worker_{worker_id().replace(':', '_')}.jsonl" if shared else "study.jsonl"
        with (
            log_context(study=study_id),
            json_log_file(
                StudyPaths(study_dir).log(log_name),
                max_bytes=config.logging.max_bytes,
                backup_count=config.logging.backup_count,
            ),
            contextlib.nullcontext() if shared else study_lock(study_dir),
            self.disk_monitor,
        ):
            resuming = record.mlflow_run_id is not None or StudyPaths(study_dir).optuna_db.exists()
            logger.info("study %s %s in %s", study_id, "resumed" if resuming else "started", study_dir)
            drain_timeout_s: float | None = None  # the tracking config's own
            try:
                return self._run(study_id, study_dir, record)
            except ResumableStop as stop:
                what = f"interrupted ({stop})" if isinstance(stop, Interrupted) else stop.summary
                logger.warning("study %s %s; continue it with `make resume`", study_id, what)
                record.state, record.finished_at = stop.state, datetime.now(UTC).isoformat()
                write_study_record(study_dir, record)
                refresh_summary_quietly(study_dir, record.to_dict())
                drain_timeout_s = min(STOP_DRAIN_S, config.tracking.drain_timeout_s)  # exit promptly
                raise
            except Exception as error:
                # Into the study's JSON log too: stdout scrolls away, the log file stays with the study.
                logger.error("study %s stopped: %s: %s", study_id, type(error).__name__, error)
                record.state, record.error = "FAILED", str(error)
                record.finished_at = datetime.now(UTC).isoformat()
                write_study_record(study_dir, record)
                refresh_summary_quietly(study_dir, record.to_dict())
                raise
            finally:
                # Whatever MLflow does not take in time stays in the outbox for the next run.
                self.tracker.close(drain_timeout_s)

    def _study_run(
        self, study_id: str, study_dir: Path, record: StudyRecord, data: PreparedData
    ) -> RunTracker:
        config = self.config
        spec = RunSpec(
            f"study-{study_id[:8]}",
            tags={
                "study_id": study_id,
                "role": "study",
                "data_source": data.dataset.source,
                "data_revision": data.dataset.revision,
                "synthetic_data": config.data.synthetic,
                "seed": config.train.seed,
            },
        )
        # Once per process, before training: the one MLflow lookup and creation made on this thread (the
        # other workers of a shared study find the study run by its tags, so it is created at once).
        run_id = record.mlflow_run_id or self.tracker.find_run({"study_id": study_id, "role": "study"})
        if run_id:
            if not record.mlflow_run_id:
                record.mlflow_run_id = run_id
                write_study_record(study_dir, record)
            return self.tracker.resume_run(str(run_id), spec)
        run = self.tracker.start_run(spec.name, tags=spec.tags, now=True)
        run.log_params(flatten(config.to_dict()))
        run.log_dict(config.to_dict(), "resolved_config.json")
        record.mlflow_run_id = run.run_id
        write_study_record(study_dir, record)
        return run

    def _run(self, study_id: str, study_dir: Path, record: StudyRecord) -> StudyOutcome:
        config = self.config
        study_inputs = prepare_inputs(config)
        logger.info(
            "encoder %s from %s (%s)", config.model.name, study_inputs.model_path, study_inputs.origin
        )
        inputs = InputsByModel(config, study_inputs)
        data = study_inputs.data
        record.state, record.data, record.model_origin = "RUNNING", data.summary(), study_inputs.origin
        write_study_record(study_dir, record)
        # One connection pool to the shared storage for the whole run (None: the study's own SQLite file).
        shared_storage = make_storage(config.hpo) if config.hpo.shared else None
        with (  # one study run in MLflow for all the workers: the first creates it, the others find it
            storage_lock(shared_storage, config.hpo.storage, config.hpo.study_name)
            if shared_storage is not None
            else contextlib.nullcontext()
        ):
            study_run = self._study_run(study_id, study_dir, record, data)
        try:
            outcome = self._optimize(study_id, study_dir, inputs, study_run, record, shared_storage)
        except BaseException as error:
            study_run.finish("KILLED" if isinstance(error, ResumableStop) else "FAILED")
            raise
        record.mlflow_run_id = study_run.run_id  # MLflow's id, once the outbox has created the run
        record.best_trial_id, record.best_value = outcome.best_trial_id, outcome.best_value
        record.report = str(outcome.report_path) if outcome.report_path else None
        if outcome.test_evaluation_s is not None:  # else kept: evaluated before a stop, or not here
            record.test_evaluation_s = round(outcome.test_evaluation_s, 3)
        if outcome.report_path is None and config.hpo.shared:  # another worker's report, in a shared folder
            evaluated = read_study_record(study_dir)
            record.report, record.test_evaluation_s = evaluated.report, evaluated.test_evaluation_s
        record.error = None
        write_study_record(study_dir, record)  # the report is kept, should a kill come now
        if not config.hpo.shared or outcome.report_path is not None:  # one worker draws a shared study
            self._publish_plots(study_dir, record, study_run)
            log_study_times(study_run, record.to_dict())
        study_run.finish("FINISHED")
        # COMPLETE only once nothing is left to do: a study killed before this line is still unfinished,
        # and --resume draws its plots and closes its MLflow run (its test evaluation is kept: finish_study).
        record.state, record.finished_at = "COMPLETE", datetime.now(UTC).isoformat()
        write_study_record(study_dir, record)
        refresh_summary_quietly(study_dir, record.to_dict())
        return outcome

    def _publish_plots(self, study_dir: Path, record: StudyRecord, study_run: RunTracker) -> None:
        """The study's plots into study_dir/plots and its MLflow run (training losses read from MLflow)."""
        config = self.config
        uri = config.tracking.resolved_uri(config.paths.experiments)
        # Training losses are read back from MLflow only when it is a local database: a remote server
        # that is down would hold the end of the study in MLflow's HTTP retries.
        local = config.tracking.backend != "none" and is_local_uri(uri)
        losses = mlflow_loss_reader(uri) if local else no_losses
        if local:  # the trials' losses reach MLflow through the outbox: send what waits before reading
            self.tracker.drain(min(PLOT_DRAIN_S, config.tracking.drain_timeout_s))
        with opened_storage(record.optuna_storage) as storage:  # closed after: no pool left behind
            study = optuna.load_study(study_name=record.study_name, storage=storage)
            render_study_plots_quietly(study_dir, record.to_dict(), study, losses=losses, run=study_run)

    def _optimize(
        self,
        study_id: str,
        study_dir: Path,
        inputs: InputsByModel,
        study_run: RunTracker,
        record: StudyRecord,
        shared_storage: RDBStorage | None,
    ) -> StudyOutcome:
        config = self.config
        started = time.monotonic()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=record.study_name,
            storage=shared_storage or record.optuna_storage,
            direction="maximize",
            sampler=make_sampler(config),
            pruner=make_pruner(config),
            load_if_exists=True,
        )
        if config.hpo.enqueue_config_trial:
            enqueue_config_trial(
                study,
                config,
                lock=storage_lock(shared_storage, config.hpo.storage, config.hpo.study_name)
                if shared_storage is not None
                else contextlib.nullcontext(),
            )
        policy = config.retention_policy
        slots = host_slots(config)
        space = SpaceGuard(
            self.disk_monitor,
            config.paths.experiments,
            threshold_percent=policy.disk_space_threshold_percent,
            study_id=study_id,
            prune_study=lambda step: prune_study_for_space(trial_folders(study.trials), policy, step),
            escalate=not policy.keep_all,
        )
        objective = Objective(
            config=config,
            inputs=inputs,
            study_id=study_id,
            tracker=self.tracker,
            study_run=study_run,
            progress=self.progress,
            checkpointing=self.checkpointing,
            space=space,
            device=slots[0].name,
            epoch_hook=self.epoch_hook,
        )
        callbacks: list[AfterTrial] = [
            ProgressReport(study, study_run, n_trials=config.hpo.n_trials, metric=config.hpo.metric)
        ]
        isolated = not in_process(config, slots, cuda=torch.cuda.is_available())
        lock, stop = threading.Lock(), threading.Event()
        objectives: list[IsolatedObjective] = []
        if isolated:
            objectives = isolated_objectives(
                config,
                slots,
                study_id=study_id,
                storage=config.hpo.storage or record.optuna_storage,
                study_name=record.study_name,
                study_run_id=study_run.run_id,
                tracker=self.tracker,
                checkpointing=self.checkpointing,
                progress=self.progress,
                lock=lock,
                stop=stop,
                study_dir=study_dir,
                epoch_hook=self.epoch_hook,
            )
            callbacks.insert(0, RetryKilledTrial(config.hpo.max_trial_retries))  # before the count is shown
            logger.info(
                "trials run in processes of their own (%s), one at a time on each of: %s",
                config.hpo.trial_start_method,
                ", ".join(slot.name for slot in slots),
            )
        if self.checkpointing:  # the trial has ended: keep the study under max_total_size
            callbacks.append(retention_after_trial(policy))
        summary = SummaryAfterTrial(study_dir, record)
        callbacks.append(summary)
        deadline = started + config.hpo.timeout_s if config.hpo.timeout_s else None
        experiments = config.paths.experiments

        with long_lived_heap_frozen(), contextlib.closing(summary):  # the last trial's summary is written
            evaluator = drive_trials(
                study,
                config.hpo,
                objective if not isolated else None,
                objectives if isolated else [],
                callbacks,
                shared_storage=shared_storage,
                deadline=deadline,
                lock=lock,
                stop=stop,
                sleep=self.sleep,
            )
        if evaluator is not None and not evaluator.claim_final_evaluation(self.checkpointing):
            return outcome_without_evaluation(study, study_id, study_dir, experiments)
        with evaluator.evaluating() if evaluator is not None else contextlib.nullcontext():
            return finish_study(
                study, self.config, inputs, study_run, study_dir, record, checkpointing=self.checkpointing
            )
