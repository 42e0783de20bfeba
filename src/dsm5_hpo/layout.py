"""The experiments folder, in one place: every path a study, a trial or a tool writes or reads there.

    experiments/
      study_<id>/          StudyPaths: study.json, study.lock, optuna.db, logs/, plots/,
                           summary_report.json, evaluation_report.json, best_model/
      trial_<uuid>/        TrialPaths: trial.json, config.yaml, validation_report.json, logs/,
                           checkpoints/ (epoch_NNNN/, quarantine/, .tmp-* staging folders)
      blobs/               BlobStore: checkpoint tensors by content, sha256/<2 hex>/<sha256>
      tracking_outbox/     metrics waiting for the tracking backend
      mlflow_db/           the default MLflow backend (mlflow.db, artifacts/)
      .cache/              prepared features, shared by studies (paths.cache_dir overrides it)

A leaf module (it imports nothing of the package), so that the read-only commands (`make status`,
`make cleanup`) find their way without importing the training code. Each file has one writer,
named beside its path below; everyone else only reads through these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGING_PREFIX = ".tmp-"
"""Name prefix of a folder being written (checkpoint, export); one left behind by a crash is stale."""
DELETED_PREFIX = f"{STAGING_PREFIX}deleted-"
"""A folder on its way out (renamed, then removed): left only by a kill in the middle of a deletion."""

STUDY_PREFIX = "study_"
TRIAL_PREFIX = "trial_"
STUDY_FILE = "study.json"
TRIAL_FILE = "trial.json"
CHECKPOINTS_DIR = "checkpoints"
QUARANTINE_DIR = "quarantine"
EVALUATION_REPORT_FILE = "evaluation_report.json"
VALIDATION_REPORT_FILE = "validation_report.json"
PLOTS_DIR = "plots"
BLOBS_DIR = "blobs"
CHECKPOINT_MARKERS = (".hash", "metadata.json")
"""A folder holding either file is one checkpoint (committed or quarantined); checkpointing.metadata
writes them under these names."""


@dataclass(frozen=True)
class TrialPaths:
    """``trial_<uuid>/``: one trial's files. Written by the trial's runner (hpo.objective) and its
    checkpoint manager; read by summary, cleanup, report, evaluate."""

    dir: Path

    @property
    def trial_id(self) -> str:
        return self.dir.name.removeprefix(TRIAL_PREFIX)

    @property
    def record(self) -> Path:
        """trial.json (hpo.records.TrialRecord)."""
        return self.dir / TRIAL_FILE

    @property
    def config(self) -> Path:
        """config.yaml: the trial's full configuration, parameters applied."""
        return self.dir / "config.yaml"

    @property
    def validation_report(self) -> Path:
        return self.dir / VALIDATION_REPORT_FILE

    @property
    def log(self) -> Path:
        return self.dir / "logs" / "trial.jsonl"

    @property
    def checkpoints(self) -> Path:
        """checkpoints/: owned by the trial's checkpointing.manager.CheckpointManager."""
        return self.dir / CHECKPOINTS_DIR

    @property
    def quarantine(self) -> Path:
        """checkpoints/quarantine/: checkpoints that failed verification, kept for a post-mortem."""
        return self.checkpoints / QUARANTINE_DIR


@dataclass(frozen=True)
class StudyPaths:
    """``study_<id>/``: one study's files. Written by hpo.study (study.json, the lock, optuna.db,
    the evaluation report, best_model/) and hpo.summary_plots (summary, plots)."""

    dir: Path

    @property
    def study_id(self) -> str:
        return self.dir.name.removeprefix(STUDY_PREFIX)

    @property
    def record(self) -> Path:
        """study.json (hpo.records.StudyRecord)."""
        return self.dir / STUDY_FILE

    @property
    def lock(self) -> Path:
        return self.dir / "study.lock"

    @property
    def optuna_db(self) -> Path:
        """The study's own Optuna storage when hpo.storage is empty."""
        return self.dir / "optuna.db"

    def log(self, name: str) -> Path:
        return self.dir / "logs" / name

    @property
    def plots(self) -> Path:
        return self.dir / PLOTS_DIR

    @property
    def summary(self) -> Path:
        return self.dir / "summary_report.json"

    @property
    def evaluation_report(self) -> Path:
        return self.dir / EVALUATION_REPORT_FILE

    @property
    def best_model(self) -> Path:
        """best_model/: the exported best trial (models.export publishes it)."""
        return self.dir / "best_model"


@dataclass(frozen=True)
class ExperimentLayout:
    """The experiments folder (paths.experiments_dir) and everything in it."""

    root: Path

    def study(self, study_id: str) -> StudyPaths:
        return StudyPaths(self.root / f"{STUDY_PREFIX}{study_id}")

    def trial(self, trial_id: str) -> TrialPaths:
        return TrialPaths(self.root / f"{TRIAL_PREFIX}{trial_id}")

    def studies(self) -> list[StudyPaths]:
        """Every study folder that holds a study.json, in name order."""
        return [
            StudyPaths(p) for p in sorted(self.root.glob(f"{STUDY_PREFIX}*")) if (p / STUDY_FILE).is_file()
        ]

    def trials(self) -> list[TrialPaths]:
        """Every trial folder, in name order."""
        return [TrialPaths(p) for p in sorted(self.root.glob(f"{TRIAL_PREFIX}*")) if p.is_dir()]

    @property
    def blobs(self) -> Path:
        """blobs/: owned by checkpointing.blobs.BlobStore (written by saves, swept by its collector)."""
        return self.root / BLOBS_DIR

    def checkpoint_folders(self) -> list[Path]:
        """Every ``<run>/checkpoints/`` folder below the root: the checkpoints that may reference blobs."""
        return sorted(p for p in self.root.glob(f"*/{CHECKPOINTS_DIR}") if p.is_dir())

    @property
    def outbox(self) -> Path:
        """tracking_outbox/: owned by tracking.outbox.Outbox."""
        return self.root / "tracking_outbox"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow_db"

    @property
    def mlflow_db(self) -> Path:
        """The default MLflow backend store (a SQLite file)."""
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def default_cache(self) -> Path:
        """.cache/: prepared features (data.feature_cache), unless paths.cache_dir says elsewhere."""
        return self.root / ".cache"


def experiments_of_checkpoints(folder: Path) -> ExperimentLayout:
    """The layout a ``<run>/checkpoints/`` folder lives in (its blobs are two levels up).

    A trial's folder is ``experiments/trial_<uuid>/checkpoints``; tests and tools may use any
    ``<root>/<name>/checkpoints``: the blob store is then ``<root>/blobs`` all the same."""
    return ExperimentLayout(folder.parent.parent)
