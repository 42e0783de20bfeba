"""The study's final word: its best model evaluated once on the test split, as a JSON report.

The report is validated against ``contracts/evaluation_report.schema.json`` before it is
written, so a consumer never reads a report that breaks the contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsm5_hpo.checkpointing.manager import CheckpointInfo
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.criteria import DESCRIPTIONS
from dsm5_hpo.data.prepare import PreparedData
from dsm5_hpo.errors import DataError, StorageError
from dsm5_hpo.evaluation.evaluator import EvaluationResult
from dsm5_hpo.evaluation.prediction import EvaluationData, criteria_prior_offset, evaluate_model
from dsm5_hpo.evaluation.thresholds import MARGIN_KEY, THRESHOLD_KEY
from dsm5_hpo.hpo.objective import checkpoint_manager
from dsm5_hpo.layout import EVALUATION_REPORT_FILE
from dsm5_hpo.models.multi_task import DualHeadModel, build_model
from dsm5_hpo.models.precision import resolve_device
from dsm5_hpo.provenance import code_version
from dsm5_hpo.storage.atomic import atomic_write_json

SCHEMA_FILE = Path(__file__).resolve().parents[3] / "contracts" / "evaluation_report.schema.json"
SYNTHETIC_NOTE = (
    "Computed on the bundled SYNTHETIC sample (generated text, not real Reddit posts): "
    "it shows the pipeline works, it says nothing about depression detection."
)


@dataclass(frozen=True)
class TestEvaluation:
    result: EvaluationResult
    checkpoints: list[CheckpointInfo]
    """Every co-best checkpoint (same optimization-metric value); the first was evaluated."""
    config: StudyConfig
    """The trial's config as evaluated: with the thresholds tuned on validation, when they were."""
    model: DualHeadModel
    """The evaluated model (the best checkpoint's weights), for the export."""


def config_at(config: StudyConfig, checkpoint: CheckpointInfo) -> StudyConfig:
    """``config`` with the match threshold and null-score margin chosen on validation for ``checkpoint``'s
    epoch (train.tune_thresholds); unchanged when thresholds are not tuned or were not recorded."""
    threshold, margin = checkpoint.metrics.get(THRESHOLD_KEY), checkpoint.metrics.get(MARGIN_KEY)
    if not config.train.tune_thresholds or threshold is None or margin is None:
        return config
    return config.with_train(match_threshold=float(threshold), null_score_margin=float(margin))


def evaluate_trial_on_test(
    config: StudyConfig, data: PreparedData, model_path: Path, trial_dir: Path, trial_id: str
) -> TestEvaluation:
    """Test metrics of the trial's best checkpoint (hash-verified before loading), at the thresholds
    chosen on validation for its epoch; never tuned on the test split."""
    model = build_model(model_path, config)
    manager = checkpoint_manager(trial_dir, model, trial_id, config)
    co_best = manager.co_best()
    if not co_best:
        raise StorageError(
            f"trial {trial_id} has no valid checkpoint under {trial_dir / 'checkpoints'} (see its ERROR log); "
            "the test evaluation needs one: rerun the study, or evaluate another trial with --trial-id"
        )
    model.load_state_dict(manager.load_weights(co_best[0]))
    evaluated = config_at(config, co_best[0])
    device = resolve_device(config.train.device)
    model.to(device)
    test = data.splits["test"]
    if not test.examples:
        raise DataError("the test split is empty; use more posts or a larger data.split.test")
    result = evaluate_model(
        model,
        EvaluationData(test.examples, test.features),
        evaluated.train,
        device=device,
        criteria=data.criteria,
        max_answer_tokens=config.data.max_answer_tokens,
    )
    return TestEvaluation(result, co_best, evaluated, model)


def export_description(evaluation: TestEvaluation, *, study_id: str, trial_id: str) -> dict[str, Any]:
    """What dsm5_hpo.json of the exported best model says besides its heads and files."""
    config = evaluation.config
    criteria = list(config.data.criteria)
    return {
        "input_format": config.data.input_format,
        "criteria": criteria,
        "questions": {c: DESCRIPTIONS[c] for c in criteria},
        "match_threshold": config.train.match_threshold,
        "null_score_margin": config.train.null_score_margin,
        "evidence_gating": config.train.evidence_gating,
        "criteria_logit_offset": criteria_prior_offset(config.train),
        "max_length": config.data.max_length,
        "doc_stride": config.data.doc_stride,
        "max_answer_tokens": config.data.max_answer_tokens,
        "dropout": config.train.dropout,
        "encoder": {"name": config.model.name, "pretrained": config.model.pretrained},
        "study_id": study_id,
        "trial_id": trial_id,
        "test_metrics": evaluation.result.metrics,
        "synthetic_data": config.data.synthetic,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(),
    }


def build_report(
    *,
    config: StudyConfig,
    study_id: str,
    trial_id: str,
    trial_number: int,
    validation_value: float,
    result: EvaluationResult,
    checkpoints: list[CheckpointInfo],
    data: PreparedData,
    model_origin: str,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "schema_version": "1.0",
        "study_id": study_id,
        "best_trial_id": trial_id,
        "best_trial_number": trial_number,
        "split": "test",
        "optimization_metric": {
            "name": config.hpo.metric,
            "validation_value": validation_value,
            "test_value": result.metrics.get(config.hpo.metric),
        },
        "test_metrics": result.metrics,
        "per_criterion": result.per_criterion,
        "n_pairs": result.n_pairs,
        "checkpoints": [
            {"path": str(info.path), "sha256": info.sha256, "epoch": info.epoch, "bytes": info.bytes}
            for info in checkpoints
        ],
        "data": {"name": config.data.name, "synthetic": config.data.synthetic, **data.summary()},
        "model": {"name": config.model.name, "pretrained": config.model.pretrained, "origin": model_origin},
        "seeds": {
            "train_seed": config.train.seed,
            "sampler_seed": config.train.seed,
            "split_seed": config.train.seed,
        },
        "resolved_config": config.to_dict(),
        "synthetic_data": config.data.synthetic,
        "created_at": datetime.now(UTC).isoformat(),
        "code_version": code_version(),
    }
    if config.data.synthetic:
        report["note"] = SYNTHETIC_NOTE
    return report


def validate_report(report: dict[str, Any], schema_path: Path = SCHEMA_FILE) -> None:
    """Raise ``jsonschema.ValidationError`` when the report breaks the contract."""
    import jsonschema

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(report)


def write_report(report: dict[str, Any], folder: Path) -> Path:
    validate_report(report)
    path = folder / EVALUATION_REPORT_FILE
    atomic_write_json(path, report)
    return path
