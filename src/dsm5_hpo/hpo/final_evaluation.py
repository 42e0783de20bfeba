"""The end of a study: its outcome (counts, best trial) and the one test-split evaluation and export of
its best trial, which a stop after it does not repeat."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.checkpointing.study_retention import sweep_deletion_leftovers
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.errors import StorageError, TrainingError
from dsm5_hpo.hpo.records import StudyRecord
from dsm5_hpo.hpo.report import build_report, evaluate_trial_on_test, export_description, write_report
from dsm5_hpo.hpo.trial_callbacks import best_or_none
from dsm5_hpo.hpo.trial_folders import started_trial_dir, trial_folders
from dsm5_hpo.hpo.trial_inputs import InputsByModel
from dsm5_hpo.hpo.workers import FINAL_EVALUATION, trials_that_count
from dsm5_hpo.layout import EVALUATION_REPORT_FILE, StudyPaths
from dsm5_hpo.models.export import BaseEncoder, export_model, read_info
from dsm5_hpo.tracking.tracker import RunTracker

logger = logging.getLogger(__name__)


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
    test_evaluation_s: float | None = None
    """Seconds the test evaluation took in this run (None: none was run, or it was kept from before a stop)."""


def study_outcome(
    study: optuna.Study, study_id: str, study_dir: Path, experiments: Path
) -> tuple[StudyOutcome, FrozenTrial]:
    """The study's counts and best trial (TrainingError when no trial completed)."""
    states = [t.state for t in trials_that_count(study.trials)]
    counts = {s: states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = best_or_none(study)
    if best is None:
        raise TrainingError(
            f"no trial completed ({counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed); "
            f"see the trial logs in {experiments}/trial_*/logs"
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


def outcome_without_evaluation(
    study: optuna.Study, study_id: str, study_dir: Path, experiments: Path
) -> StudyOutcome:
    """A worker of a shared study that leaves the test evaluation to the worker that claimed it."""
    outcome, _ = study_outcome(study, study_id, study_dir, experiments)
    logger.info(
        "every trial of the shared study has ended; the test evaluation is done by worker %s",
        study.user_attrs.get(FINAL_EVALUATION, "?"),
    )
    return outcome


def finish_study(
    study: optuna.Study,
    config: StudyConfig,
    inputs: InputsByModel,
    study_run: RunTracker,
    study_dir: Path,
    record: StudyRecord,
    *,
    checkpointing: bool,
) -> StudyOutcome:
    """The study's outcome; its best trial evaluated once on the test split and exported (kept when
    that was done before a stop)."""
    study_id = record.study_id
    outcome, best = study_outcome(study, study_id, study_dir, config.paths.experiments)
    assert best.value is not None
    sweep_deletion_leftovers(trial_folders(study.trials))  # every trial has ended: no deletion is in flight
    if not checkpointing:
        logger.warning("checkpointing was off (--no-checkpoint): no weights to evaluate on the test split")
        return outcome
    kept = evaluated_before(study_dir, record, outcome.best_trial_id)
    if kept is not None:  # stopped after its test evaluation and export: they are not done twice
        logger.info(
            "best trial %d was evaluated on the test split and exported before the study stopped: kept (%s)",
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
    started = time.perf_counter()
    evaluation = evaluate_trial_on_test(
        trial_config, data, best_inputs.model_path, started_trial_dir(best), outcome.best_trial_id
    )
    outcome.test_evaluation_s = time.perf_counter() - started
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
        merge_lora=trial_config.export.merge_lora,
        base=BaseEncoder(trial_config.model, best_inputs.model_path),
    )
    logger.info("best model exported to %s (DualHeadModel.from_pretrained loads it)", exported)
    outcome.report = report
    study_run.log_metrics({f"test_{k}": v for k, v in result.metrics.items()}, step=0)
    study_run.log_dict(report, EVALUATION_REPORT_FILE)
    return outcome


def evaluated_before(study_dir: Path, record: StudyRecord, best_trial_id: str) -> Path | None:
    """The study's report when its test evaluation of this same best trial and its export were done
    before a stop (the record says so and both still read back), else None."""
    report = record.report
    if not report or record.best_trial_id != best_trial_id:
        return None
    path = Path(str(report))
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("best_trial_id") != best_trial_id:
            return None
        read_info(StudyPaths(study_dir).best_model)
    except (OSError, ValueError, StorageError):
        return None
    return path
