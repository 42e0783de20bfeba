"""Run a whole study: prepare data once, run trials one after another, evaluate the best on test.

Layout (DESIGN.md): ``experiments/study_<uuid>/`` holds optuna.db, study.json, study.lock,
logs/ and evaluation_report.json; each trial writes ``experiments/trial_<uuid>/``.

A study interrupted at any moment is continued by :meth:`StudyRunner.resume`: trials that
finished are kept, the trial that was running is re-attached (Optuna 5:
``optuna.trial.Trial(study, trial_id)``) and continues from its last valid checkpoint in the
same folder and MLflow run, and the study still ends with ``hpo.n_trials`` trials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.checkpointing.study_retention import (
    prune_ended_trials,
    prune_study_for_space,
    sweep_deletion_leftovers,
)
from dsm5_hpo.config import StudyConfig, study_config_from_mapping
from dsm5_hpo.data.prepare import PreparedData
from dsm5_hpo.errors import ConfigError, Interrupted, ResumableStop, StorageError, TrainingError
from dsm5_hpo.hpo.database import opened_storage, storage_lock
from dsm5_hpo.hpo.lock import study_lock
from dsm5_hpo.hpo.model_choices import available_model_choices
from dsm5_hpo.hpo.objective import Objective, flatten, trial_dir_of
from dsm5_hpo.hpo.report import build_report, evaluate_trial_on_test, export_description, write_report
from dsm5_hpo.hpo.sampling import enqueue_config_trial, make_pruner, make_sampler
from dsm5_hpo.hpo.study_record import read_study_record, write_study_record
from dsm5_hpo.hpo.summary_plots import (
    mlflow_loss_reader,
    no_losses,
    refresh_summary_quietly,
    render_study_plots_quietly,
)
from dsm5_hpo.hpo.trial_folders import trial_folders
from dsm5_hpo.hpo.trial_inputs import InputsByModel, prepare_inputs
from dsm5_hpo.hpo.workers import (
    FINAL_EVALUATION,
    SharedWorker,
    finished_trials,
    make_storage,
    shared_study_id,
    trials_that_count,
    worker_id,
)
from dsm5_hpo.layout import EVALUATION_REPORT_FILE, StudyPaths
from dsm5_hpo.models.export import export_model, read_info
from dsm5_hpo.storage.monitor import DiskMonitor, StorageMonitor
from dsm5_hpo.storage.space_guard import SpaceGuard
from dsm5_hpo.tracking.tracker import RunSpec, RunTracker, Tracker, is_local_uri
from dsm5_hpo.utils.logging import json_log_file, log_context

logger = logging.getLogger(__name__)


STOP_DRAIN_S = 5.0
"""On Ctrl-C or a full disk, the longest wait for MLflow before exiting (the rest is replayed later)."""
PLOT_DRAIN_S = 10.0
"""Before drawing the training curves, the longest wait for MLflow to take the trials' losses."""
_STARTED = tuple(state for state in TrialState if state != TrialState.WAITING)


@dataclass
class StudyOutcome:
    study_id: str
    study_dir: Path
    best_trial_number: int
    best_trial_id: str
    best_value: float
    report_path: Path | None
    report: dict[str, Any] | None
    n_complete: int
    n_pruned: int
    n_failed: int


class StudyRunner:
    def __init__(
        self,
        config: StudyConfig,
        tracker: Tracker,
        *,
        progress: bool | None = None,
        checkpointing: bool = True,
        disk_monitor: DiskMonitor | None = None,
    ) -> None:
        self.config = config
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
                joined.update(state="RUNNING", config=self.config.to_dict())
                joined.pop("finished_at", None)
                write_study_record(study_dir, joined)
                return self._drive(study_dir, joined)
            storage, study_name = hpo.storage, hpo.study_name
        else:
            study_id = str(uuid.uuid4())
            study_dir = self.config.paths.layout.study(study_id).dir
            storage, study_name = f"sqlite:///{StudyPaths(study_dir).optuna_db.resolve()}", study_dir.name
        study_dir.mkdir(parents=True, exist_ok=hpo.shared)
        record: dict[str, Any] = {
            "study_id": study_id,
            "state": "RUNNING",
            "created_at": datetime.now(UTC).isoformat(),
            "optuna_storage": storage,
            "study_name": study_name,
            "shared": hpo.shared,
            "config": self.config.to_dict(),
            "synthetic_data": self.config.data.synthetic,
            "checkpointing": self.checkpointing,
        }
        write_study_record(study_dir, record)
        return self._drive(study_dir, record)

    @classmethod
    def for_resume(
        cls, study_dir: Path, tracker_factory: Any, *, progress: bool | None = None
    ) -> tuple[StudyRunner, dict[str, Any]]:
        """A runner with the study's own saved config (not today's YAML), and its record."""
        record = read_study_record(study_dir)
        config = study_config_from_mapping(record["config"])
        runner = cls(
            config,
            tracker_factory(config),
            progress=progress,
            checkpointing=bool(record.get("checkpointing", True)),
        )
        return runner, record

    def resume(self, study_dir: Path, record: dict[str, Any]) -> StudyOutcome:
        """Continue an interrupted study in place."""
        if record.get("state") == "COMPLETE":
            raise ConfigError(f"study {record['study_id']} is already complete; nothing to resume")
        return self._drive(study_dir, record)

    def _drive(self, study_dir: Path, record: dict[str, Any]) -> StudyOutcome:
        study_id = str(record["study_id"])
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
            resuming = "mlflow_run_id" in record or StudyPaths(study_dir).optuna_db.exists()
            logger.info("study %s %s in %s", study_id, "resumed" if resuming else "started", study_dir)
            drain_timeout_s: float | None = None  # the tracking config's own
            try:
                return self._run(study_id, study_dir, record)
            except ResumableStop as stop:
                what = f"interrupted ({stop})" if isinstance(stop, Interrupted) else stop.summary
                logger.warning("study %s %s; continue it with `make resume`", study_id, what)
                record.update(state=stop.state, finished_at=datetime.now(UTC).isoformat())
                write_study_record(study_dir, record)
                refresh_summary_quietly(study_dir, record)
                drain_timeout_s = min(STOP_DRAIN_S, config.tracking.drain_timeout_s)  # exit promptly
                raise
            except Exception as error:
                # Into the study's JSON log too: stdout scrolls away, the log file stays with the study.
                logger.error("study %s stopped: %s: %s", study_id, type(error).__name__, error)
                record.update(state="FAILED", error=str(error), finished_at=datetime.now(UTC).isoformat())
                write_study_record(study_dir, record)
                refresh_summary_quietly(study_dir, record)
                raise
            finally:
                # Whatever MLflow does not take in time stays in the outbox for the next run.
                self.tracker.close(drain_timeout_s)

    def _study_run(
        self, study_id: str, study_dir: Path, record: dict[str, Any], data: PreparedData
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
        run_id = record.get("mlflow_run_id") or self.tracker.find_run({"study_id": study_id, "role": "study"})
        if run_id:
            if not record.get("mlflow_run_id"):
                record["mlflow_run_id"] = run_id
                write_study_record(study_dir, record)
            return self.tracker.resume_run(str(run_id), spec)
        run = self.tracker.start_run(spec.name, tags=spec.tags, now=True)
        run.log_params(flatten(config.to_dict()))
        run.log_dict(config.to_dict(), "resolved_config.json")
        record["mlflow_run_id"] = run.run_id
        write_study_record(study_dir, record)
        return run

    def _run(self, study_id: str, study_dir: Path, record: dict[str, Any]) -> StudyOutcome:
        config = self.config
        study_inputs = prepare_inputs(config)
        logger.info(
            "encoder %s from %s (%s)", config.model.name, study_inputs.model_path, study_inputs.origin
        )
        inputs = InputsByModel(config, study_inputs)
        data = study_inputs.data
        record.update(state="RUNNING", data=data.summary(), model_origin=study_inputs.origin)
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
        record.update(
            mlflow_run_id=study_run.run_id,  # MLflow's id, once the outbox has created the run
            best_trial_id=outcome.best_trial_id,
            best_value=outcome.best_value,
            report=str(outcome.report_path) if outcome.report_path else None,
        )
        if outcome.report_path is None and config.hpo.shared:  # another worker's report, in a shared folder
            record["report"] = read_study_record(study_dir).get("report")
        record.pop("error", None)
        write_study_record(study_dir, record)  # the report is kept, should a kill come now
        if not config.hpo.shared or outcome.report_path is not None:  # one worker draws a shared study
            self._publish_plots(study_dir, record, study_run)
        study_run.finish("FINISHED")
        # COMPLETE only once nothing is left to do: a study killed before this line is still unfinished,
        # and --resume draws its plots and closes its MLflow run (its test evaluation is kept, _finish).
        record.update(state="COMPLETE", finished_at=datetime.now(UTC).isoformat())
        write_study_record(study_dir, record)
        refresh_summary_quietly(study_dir, record)
        return outcome

    def _publish_plots(self, study_dir: Path, record: dict[str, Any], study_run: RunTracker) -> None:
        """The study's plots into study_dir/plots and its MLflow run (training losses read from MLflow)."""
        config = self.config
        uri = config.tracking.resolved_uri(config.paths.experiments)
        # Training losses are read back from MLflow only when it is a local database: a remote server
        # that is down would hold the end of the study in MLflow's HTTP retries.
        local = config.tracking.backend != "none" and is_local_uri(uri)
        losses = mlflow_loss_reader(uri) if local else no_losses
        if local:  # the trials' losses reach MLflow through the outbox: send what waits before reading
            self.tracker.drain(min(PLOT_DRAIN_S, config.tracking.drain_timeout_s))
        with opened_storage(str(record["optuna_storage"])) as storage:  # closed after: no pool left behind
            study = optuna.load_study(study_name=str(record["study_name"]), storage=storage)
            render_study_plots_quietly(study_dir, record, study, losses=losses, run=study_run)

    def _optimize(
        self,
        study_id: str,
        study_dir: Path,
        inputs: InputsByModel,
        study_run: RunTracker,
        record: dict[str, Any],
        shared_storage: RDBStorage | None,
    ) -> StudyOutcome:
        config = self.config
        started = time.monotonic()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=str(record["study_name"]),
            storage=shared_storage or str(record["optuna_storage"]),
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
        space = SpaceGuard(
            self.disk_monitor,
            config.paths.experiments,
            threshold_percent=policy.disk_space_threshold_percent,
            study_id=study_id,
            prune_study=lambda step: prune_study_for_space(trial_folders(study.trials), policy, step),
            escalate=not policy.keep_all,
        )
        objective = Objective(
            config,
            inputs,
            study_id,
            self.tracker,
            study_run,
            self.progress,
            self.checkpointing,
            space,
        )
        done_before = finished_trials(study.trials)

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            done = finished_trials(study.trials)
            rate = (done - done_before) / max(1e-9, time.monotonic() - started)
            eta = max(0, config.hpo.n_trials - done) / rate if rate > 0 else 0.0
            best = _best_or_none(study)
            logger.info(
                "trial %d of %d %s%s; best so far: %s; %.1f trials/hour; ETA %.0f s",
                done,
                config.hpo.n_trials,
                trial.state.name,
                f" ({config.hpo.metric}={trial.value:.4f})" if trial.value is not None else "",
                f"trial {best.number} {best.value:.4f}" if best else "none",
                rate * 3600,
                eta,
            )
            tags = {
                "progress": f"trial {done}/{config.hpo.n_trials}",
                "completed_fraction": f"{done / config.hpo.n_trials:.3f}",
                "trials_per_hour": f"{rate * 3600:.2f}",
                "eta_seconds": f"{eta:.0f}",
            }
            if best is not None:
                tags.update(best_trial=str(best.number), best_value=f"{best.value:.6f}")
                study_run.log_metrics({f"best_{config.hpo.metric}": best.value}, step=done)
            study_run.set_tags(tags)
            if self.checkpointing:  # the trial has ended: keep the study under max_total_size
                prune_ended_trials(trial_folders(study.trials), config.retention_policy)
            refresh_summary_quietly(study_dir, record, study.trials)

        if shared_storage is not None:
            workers = SharedWorker(
                study, shared_storage, config.hpo, objective, after_trial, sleep=self.sleep
            )
            workers.run_trials(deadline=started + config.hpo.timeout_s if config.hpo.timeout_s else None)
            if not workers.claim_final_evaluation(self.checkpointing):
                return self._outcome_without_evaluation(study, study_id, study_dir)
            with workers.evaluating():
                return self._finish(study, study_id, study_dir, inputs, study_run, record)

        # Trials a dead process left RUNNING continue first, in trial-number order.
        for frozen in sorted(study.get_trials(states=(TrialState.RUNNING,)), key=lambda t: t.number):
            self._continue_trial(study, frozen, objective)
            after_trial(study, study.trials[frozen.number])
        # A queued trial (the config's own, above) is one of the n_trials Optuna runs next, not one done.
        remaining = config.hpo.n_trials - len(study.get_trials(deepcopy=False, states=_STARTED))
        if remaining > 0:
            study.optimize(
                objective,
                n_trials=remaining,
                n_jobs=1,
                timeout=config.hpo.timeout_s or None,
                catch=(TrainingError,),
                callbacks=[after_trial],
                gc_after_trial=True,
            )
        return self._finish(study, study_id, study_dir, inputs, study_run, record)

    def _continue_trial(self, study: optuna.Study, frozen: FrozenTrial, objective: Objective) -> None:
        logger.info("trial %d was running when the study stopped: continuing it", frozen.number)
        trial = optuna.trial.Trial(study, frozen._trial_id)
        try:
            value = objective(trial, reported=set(frozen.intermediate_values))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except TrainingError as error:
            logger.error("trial %d failed: %s", frozen.number, error)
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)

    def _outcome(
        self, study: optuna.Study, study_id: str, study_dir: Path
    ) -> tuple[StudyOutcome, FrozenTrial]:
        """The study's counts and best trial (TrainingError when no trial completed)."""
        states = [t.state for t in trials_that_count(study.trials)]
        counts = {s: states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        best = _best_or_none(study)
        if best is None:
            raise TrainingError(
                f"no trial completed ({counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed); "
                f"see the trial logs in {self.config.paths.experiments}/trial_*/logs"
            )
        assert best.value is not None
        outcome = StudyOutcome(
            study_id=study_id,
            study_dir=study_dir,
            best_trial_number=best.number,
            best_trial_id=str(best.user_attrs["trial_uuid"]),
            best_value=best.value,
            report_path=None,
            report=None,
            n_complete=counts[TrialState.COMPLETE],
            n_pruned=counts[TrialState.PRUNED],
            n_failed=counts[TrialState.FAIL],
        )
        return outcome, best

    def _outcome_without_evaluation(
        self, study: optuna.Study, study_id: str, study_dir: Path
    ) -> StudyOutcome:
        """A worker of a shared study that leaves the test evaluation to the worker that claimed it."""
        outcome, _ = self._outcome(study, study_id, study_dir)
        logger.info(
            "every trial of the shared study has ended; the test evaluation is done by worker %s",
            study.user_attrs.get(FINAL_EVALUATION, "?"),
        )
        return outcome

    def _finish(
        self,
        study: optuna.Study,
        study_id: str,
        study_dir: Path,
        inputs: InputsByModel,
        study_run: RunTracker,
        record: dict[str, Any],
    ) -> StudyOutcome:
        config = self.config
        outcome, best = self._outcome(study, study_id, study_dir)
        assert best.value is not None
        sweep_deletion_leftovers(
            trial_folders(study.trials)
        )  # every trial has ended: no deletion is in flight
        if not self.checkpointing:
            logger.warning(
                "checkpointing was off (--no-checkpoint): no weights to evaluate on the test split"
            )
            return outcome
        kept = evaluated_before(study_dir, record, outcome.best_trial_id)
        if kept is not None:  # stopped after its test evaluation and export: they are not done twice
            logger.info(
                "best trial %d was evaluated on the test split and exported before the study stopped: "
                "kept (%s)",
                best.number,
                kept,
            )
            outcome.report_path = kept
            outcome.report = json.loads(kept.read_text(encoding="utf-8"))
            return outcome
        logger.info(
            "best trial %d: validation %s=%.4f; evaluating it on the test split",
            best.number,
            config.hpo.metric,
            best.value,
        )
        trial_config = config.with_params(best.params)
        # The best trial's own encoder and windows (it may have drawn another encoder or input format).
        best_inputs = inputs.for_config(trial_config)
        data = best_inputs.data
        evaluation = evaluate_trial_on_test(
            trial_config, data, best_inputs.model_path, trial_dir_of(best), outcome.best_trial_id
        )
        result = evaluation.result
        report = build_report(
            config=evaluation.config,
            study_id=study_id,
            trial_id=outcome.best_trial_id,
            trial_number=best.number,
            validation_value=best.value,
            result=result,
            checkpoints=evaluation.checkpoints,
            data=data,
            model_origin=best_inputs.origin,
        )
        outcome.report_path = write_report(report, study_dir)
        exported = export_model(
            evaluation.model,
            data.tokenizer,
            StudyPaths(study_dir).best_model,
            description=export_description(evaluation, study_id=study_id, trial_id=outcome.best_trial_id),
        )
        logger.info("best model exported to %s (DualHeadModel.from_pretrained loads it)", exported)
        outcome.report = report
        study_run.log_metrics({f"test_{k}": v for k, v in result.metrics.items()}, step=0)
        study_run.log_dict(report, EVALUATION_REPORT_FILE)
        return outcome


def evaluated_before(study_dir: Path, record: dict[str, Any], best_trial_id: str) -> Path | None:
    """The study's report when its test evaluation of this same best trial and its export were done
    before a stop (the record says so and both still read back), else None."""
    report = record.get("report")
    if not report or record.get("best_trial_id") != best_trial_id:
        return None
    path = Path(str(report))
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("best_trial_id") != best_trial_id:
            return None
        read_info(StudyPaths(study_dir).best_model)
    except (OSError, ValueError, StorageError):
        return None
    return path


def _best_or_none(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None
