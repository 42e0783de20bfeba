"""Run a whole study: prepare data once, run trials one after another, evaluate the best on test.

Layout (DESIGN.md): ``experiments/study_<uuid>/`` holds optuna.db, study.json, logs/ and
evaluation_report.json; each trial writes ``experiments/trial_<uuid>/``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna

from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.prepare import PreparedData, prepare_data
from dsm5_hpo.errors import TrainingError
from dsm5_hpo.hpo.objective import BEST_WEIGHTS_DIR, Objective, flatten, trial_dir_of
from dsm5_hpo.hpo.report import build_report, evaluate_checkpoint_on_test, write_report
from dsm5_hpo.models.loading import ResolvedModel, load_tokenizer, resolve_model
from dsm5_hpo.storage.atomic import atomic_write_json
from dsm5_hpo.tracking.tracker import RunTracker, Tracker
from dsm5_hpo.utils.logging import json_log_file, log_context

logger = logging.getLogger(__name__)

STUDY_FILE = "study.json"
OPTUNA_DB = "optuna.db"


@dataclass
class StudyOutcome:
    study_id: str
    study_dir: Path
    best_trial_number: int
    best_trial_id: str
    best_value: float
    report_path: Path
    report: dict[str, Any]
    n_complete: int
    n_pruned: int
    n_failed: int


def _sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    if config.hpo.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.train.seed)
    return optuna.samplers.TPESampler(seed=config.train.seed, n_startup_trials=min(10, config.hpo.n_trials))


def _pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    if config.hpo.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=config.hpo.pruner_startup_trials, n_warmup_steps=config.hpo.pruner_warmup_epochs
    )


class StudyRunner:
    def __init__(self, config: StudyConfig, tracker: Tracker, *, progress: bool | None = None) -> None:
        self.config = config
        self.tracker = tracker
        self.progress = progress

    def run(self) -> StudyOutcome:
        config = self.config
        study_id = str(uuid.uuid4())
        study_dir = config.paths.experiments / f"study_{study_id}"
        study_dir.mkdir(parents=True, exist_ok=False)
        with (
            log_context(study=study_id),
            json_log_file(
                study_dir / "logs" / "study.jsonl",
                max_bytes=config.logging.max_bytes,
                backup_count=config.logging.backup_count,
            ),
        ):
            logger.info("study %s started in %s", study_id, study_dir)
            try:
                return self._run(study_id, study_dir)
            except Exception as error:
                # Into the study's JSON log too: stdout scrolls away, the log file stays with the study.
                logger.error("study %s stopped: %s: %s", study_id, type(error).__name__, error)
                raise

    def _run(self, study_id: str, study_dir: Path) -> StudyOutcome:
        config = self.config
        started = time.monotonic()
        resolved = resolve_model(config.model, cache_dir=config.paths.cache)
        logger.info("encoder %s from %s (%s)", config.model.name, resolved.path, resolved.origin)
        data = prepare_data(config.data, load_tokenizer(resolved.path), seed=config.train.seed)
        record: dict[str, Any] = {
            "study_id": study_id,
            "state": "RUNNING",
            "created_at": datetime.now(UTC).isoformat(),
            "optuna_storage": f"sqlite:///{(study_dir / OPTUNA_DB).resolve()}",
            "study_name": f"study_{study_id}",
            "config": config.to_dict(),
            "data": data.summary(),
            "synthetic_data": config.data.synthetic,
            "model_origin": resolved.origin,
        }
        atomic_write_json(study_dir / STUDY_FILE, record)

        study_run = self.tracker.start_run(
            f"study-{study_id[:8]}",
            tags={
                "study_id": study_id,
                "role": "study",
                "data_source": data.dataset.source,
                "data_revision": data.dataset.revision,
                "synthetic_data": config.data.synthetic,
            },
        )
        record["mlflow_run_id"] = study_run.run_id
        atomic_write_json(study_dir / STUDY_FILE, record)
        study_run.log_params(flatten(config.to_dict()))
        study_run.log_dict(config.to_dict(), "resolved_config.json")
        try:
            outcome = self._optimize(study_id, study_dir, data, resolved, study_run, record, started)
        except BaseException as error:
            record.update(state="FAILED", error=str(error), finished_at=datetime.now(UTC).isoformat())
            atomic_write_json(study_dir / STUDY_FILE, record)
            study_run.finish("FAILED")
            raise
        record.update(
            state="COMPLETE",
            finished_at=datetime.now(UTC).isoformat(),
            best_trial_id=outcome.best_trial_id,
            best_value=outcome.best_value,
            report=str(outcome.report_path),
        )
        atomic_write_json(study_dir / STUDY_FILE, record)
        study_run.finish("FINISHED")
        return outcome

    def _optimize(
        self,
        study_id: str,
        study_dir: Path,
        data: PreparedData,
        resolved: ResolvedModel,
        study_run: RunTracker,
        record: dict[str, Any],
        started: float,
    ) -> StudyOutcome:
        config = self.config
        study = optuna.create_study(
            study_name=f"study_{study_id}",
            storage=record["optuna_storage"],
            direction="maximize",
            sampler=_sampler(config),
            pruner=_pruner(config),
        )
        objective = Objective(config, data, resolved.path, study_id, self.tracker, study_run, self.progress)

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = len(study.trials)
            elapsed = time.monotonic() - started
            eta = elapsed / done * (config.hpo.n_trials - done)
            best = _best_or_none(study)
            logger.info(
                "trial %d of %d %s%s; best so far: %s; ETA %.0f s",
                done,
                config.hpo.n_trials,
                trial.state.name,
                f" ({config.hpo.metric}={trial.value:.4f})" if trial.value is not None else "",
                f"trial {best.number} {best.value:.4f}" if best else "none",
                eta,
            )
            tags = {"progress": f"trial {done}/{config.hpo.n_trials}", "eta_seconds": f"{eta:.0f}"}
            if best is not None:
                tags.update(best_trial=str(best.number), best_value=f"{best.value:.6f}")
                study_run.log_metrics({f"best_{config.hpo.metric}": best.value}, step=done)
            study_run.set_tags(tags)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(
            objective,
            n_trials=config.hpo.n_trials,
            n_jobs=1,
            timeout=config.hpo.timeout_s or None,
            catch=(TrainingError,),
            callbacks=[after_trial],
            gc_after_trial=True,
        )
        states = [t.state for t in study.trials]
        n_complete = states.count(optuna.trial.TrialState.COMPLETE)
        n_pruned = states.count(optuna.trial.TrialState.PRUNED)
        n_failed = states.count(optuna.trial.TrialState.FAIL)
        best = _best_or_none(study)
        if best is None:
            raise TrainingError(
                f"no trial completed ({n_pruned} pruned, {n_failed} failed); see the trial logs in "
                f"{config.paths.experiments}/trial_*/logs"
            )
        logger.info(
            "best trial %d: validation %s=%.4f; evaluating it on the test split",
            best.number,
            config.hpo.metric,
            best.value,
        )
        checkpoint = trial_dir_of(best) / BEST_WEIGHTS_DIR
        result, metadata = evaluate_checkpoint_on_test(
            config.with_train(**best.params), data, resolved.path, checkpoint
        )
        assert best.value is not None
        report = build_report(
            config=config.with_train(**best.params),
            study_id=study_id,
            trial_id=str(best.user_attrs["trial_uuid"]),
            trial_number=best.number,
            validation_value=best.value,
            result=result,
            checkpoint=checkpoint,
            checkpoint_metadata=metadata,
            data=data,
            model_origin=resolved.origin,
        )
        report_path = write_report(report, study_dir)
        study_run.log_metrics({f"test_{k}": v for k, v in result.metrics.items()}, step=0)
        study_run.log_dict(report, "evaluation_report.json")
        return StudyOutcome(
            study_id=study_id,
            study_dir=study_dir,
            best_trial_number=best.number,
            best_trial_id=str(best.user_attrs["trial_uuid"]),
            best_value=best.value,
            report_path=report_path,
            report=report,
            n_complete=n_complete,
            n_pruned=n_pruned,
            n_failed=n_failed,
        )


def _best_or_none(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None
