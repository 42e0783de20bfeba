"""The tracker a config asks for: MLflow through the outbox, or none (tracking.backend=none).

One function, so that the CLI and a trial's own process (hpo/trial_process.py) build the same one.
"""

from __future__ import annotations

from dsm5_hpo.config import StudyConfig
from dsm5_hpo.tracking.mlflow_tracker import MlflowTracker
from dsm5_hpo.tracking.tracker import NullTracker, Tracker


def build_tracker(config: StudyConfig) -> Tracker:
    if config.tracking.backend == "none":
        return NullTracker()
    layout = config.paths.layout
    return MlflowTracker(
        config.tracking.resolved_uri(layout.root),
        config.tracking.experiment_name,
        artifact_root=layout.mlflow_artifacts,
        outbox_dir=layout.outbox,
        outbox_warn_bytes=config.tracking.outbox_warn_mb * 1_000_000,
        drain_timeout_s=config.tracking.drain_timeout_s,
    )
