"""One Optuna trial: sample params, train on the study's shared data, return the best validation score.

Every trial gets its own folder (``trial_<uuid>/``: resolved config, trial.json, logs,
best weights) and its own MLflow run under the study's run.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import yaml

from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.prepare import PreparedData
from dsm5_hpo.hpo.search_space import suggest_params
from dsm5_hpo.models.loading import load_encoder
from dsm5_hpo.models.multi_task import DualAgentModel
from dsm5_hpo.storage.atomic import atomic_write_json, atomic_write_text
from dsm5_hpo.tracking.tracker import RunTracker, Tracker
from dsm5_hpo.training.best_weights import BestWeightsWriter
from dsm5_hpo.training.trainer import EvaluationData, Trainer
from dsm5_hpo.utils.logging import json_log_file, log_context
from dsm5_hpo.utils.seeding import seed_everything

logger = logging.getLogger(__name__)

BEST_WEIGHTS_DIR = Path("checkpoints") / "best"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'seed': 1}} -> {'train.seed': 1} (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def trial_dir_of(trial: optuna.trial.FrozenTrial | optuna.Trial) -> Path:
    return Path(str(trial.user_attrs["trial_dir"]))


@dataclass
class Objective:
    config: StudyConfig
    data: PreparedData
    model_path: Path
    study_id: str
    tracker: Tracker
    study_run: RunTracker
    progress: bool | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest_params(trial, self.config.hpo.search_space)
        config = self.config.with_train(**params)
        trial_uuid = str(uuid.uuid4())
        trial_dir = self.config.paths.experiments / f"trial_{trial_uuid}"
        trial_dir.mkdir(parents=True, exist_ok=False)
        trial.set_user_attr("trial_uuid", trial_uuid)
        trial.set_user_attr("trial_dir", str(trial_dir))
        atomic_write_text(trial_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        record: dict[str, Any] = {
            "trial_id": trial_uuid,
            "study_id": self.study_id,
            "number": trial.number,
            "params": params,
            "state": "RUNNING",
            "started_at": datetime.now(UTC).isoformat(),
        }
        atomic_write_json(trial_dir / "trial.json", record)

        with (
            log_context(study=self.study_id, trial=trial.number),
            json_log_file(
                trial_dir / "logs" / "trial.jsonl",
                max_bytes=self.config.logging.max_bytes,
                backup_count=self.config.logging.backup_count,
            ),
        ):
            run = self.tracker.start_run(
                f"trial-{trial.number}",
                parent=self.study_run,
                tags={"study_id": self.study_id, "trial_id": trial_uuid, "trial_number": trial.number},
            )
            trial.set_user_attr("mlflow_run_id", run.run_id)
            run.log_params({**flatten(config.to_dict()), **{f"hp.{k}": v for k, v in params.items()}})
            logger.info("trial %d of %d started: %s", trial.number + 1, self.config.hpo.n_trials, params)
            try:
                value = self._train(trial, config, trial_dir, run)
            except optuna.TrialPruned:
                self._finish(trial_dir, record, run, "PRUNED", "KILLED")
                raise
            except BaseException:
                self._finish(trial_dir, record, run, "FAILED", "FAILED")
                raise
            self._finish(trial_dir, record, run, "COMPLETE", "FINISHED")
            return value

    def _train(self, trial: optuna.Trial, config: StudyConfig, trial_dir: Path, run: RunTracker) -> float:
        seed_everything(config.train.seed)
        model = DualAgentModel(load_encoder(self.model_path), dropout=config.train.dropout)

        def report(epoch: int, metrics: dict[str, float | None]) -> None:
            value = metrics[self.config.hpo.metric]
            assert value is not None and math.isfinite(value)
            trial.report(value, epoch)
            if trial.should_prune():
                logger.info(
                    "trial %d pruned after epoch %d (%s=%.4f)",
                    trial.number,
                    epoch,
                    self.config.hpo.metric,
                    value,
                )
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        trainer = Trainer(
            model,
            config.train,
            criteria=self.data.criteria,
            metric=self.config.hpo.metric,
            max_answer_tokens=config.data.max_answer_tokens,
            tracker=run,
            epoch_callback=report,
            best_weights=BestWeightsWriter(trial_dir / BEST_WEIGHTS_DIR),
            progress=self.progress,
        )
        validation = self.data.splits["validation"]
        result = trainer.fit(
            self.data.splits["train"].features, EvaluationData(validation.examples, validation.features)
        )
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("best_metrics", result.best_metrics)
        atomic_write_json(
            trial_dir / "validation_report.json",
            {
                "trial_id": trial.user_attrs["trial_uuid"],
                "split": "validation",
                "best_epoch": result.best_epoch,
                "metric": self.config.hpo.metric,
                "value": result.best_value,
                "metrics": result.best_metrics,
                "history": result.history,
                "synthetic_data": self.config.data.synthetic,
            },
        )
        return result.best_value

    def _finish(
        self, trial_dir: Path, record: dict[str, Any], run: RunTracker, state: str, run_status: str
    ) -> None:
        record.update(state=state, finished_at=datetime.now(UTC).isoformat())
        atomic_write_json(trial_dir / "trial.json", record)
        run.set_tags({"optuna_state": state})
        run.finish(run_status)
