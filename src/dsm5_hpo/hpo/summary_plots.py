"""What a study leaves for people to read: its summary and its plots, refreshed by the study itself
(summary after every trial, both at the end) and by ``make report`` for any study, any time.

Nothing here may stop a study: a summary or plot that cannot be written is a WARNING (the trials
and their checkpoints are what matter); ``make report`` reports the same problems as errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from dsm5_hpo.hpo.plots import PlotIndex, TrialCurve, render_plots, top_trials
from dsm5_hpo.hpo.summary import collect_summary, load_trials, study_time_metrics, write_summary
from dsm5_hpo.hpo.trial_folders import trial_dir_of
from dsm5_hpo.layout import PLOTS_DIR, StudyPaths, TrialPaths
from dsm5_hpo.storage.atomic import read_json_object
from dsm5_hpo.tracking.mlflow_tracker import mlflow_run_id
from dsm5_hpo.tracking.tracker import RunTracker

logger = logging.getLogger(__name__)

LossReader = Callable[[str], list[float]]
"""MLflow run id -> the run's training loss per epoch (empty when unknown)."""
PLOTLY_JS = "plotly.min.js"


def no_losses(run_id: str) -> list[float]:
    return []


def mlflow_loss_reader(tracking_uri: str) -> LossReader:
    """Per-epoch training loss (``train_loss_epoch``) of a trial's MLflow run, from ``tracking_uri``."""

    def read(run_id: str) -> list[float]:
        from mlflow import MlflowClient

        try:
            client = MlflowClient(tracking_uri=tracking_uri)
            real = mlflow_run_id(client, run_id)  # a trial that ended before MLflow had its run: local id
            history = client.get_metric_history(real, "train_loss_epoch") if real else []
        except Exception as error:  # noqa: BLE001 - MLflow down or the run unknown: plot without the loss
            logger.info("no training loss for run %s from MLflow (%s)", run_id, type(error).__name__)
            return []
        by_step = {int(m.step): float(m.value) for m in history}
        return [by_step[s] for s in sorted(by_step)]

    return read


def trial_curves(
    trials: Sequence[FrozenTrial], metric: str, losses: LossReader = no_losses
) -> list[TrialCurve]:
    """Per-epoch validation ``metric`` (from each top trial's validation_report.json) and training loss."""
    curves = []
    for trial in top_trials(trials):
        folder = trial_dir_of(trial)
        report = read_json_object(TrialPaths(folder).validation_report) if folder else None
        if report is None:
            continue
        validation = [float(epoch.get(metric) or 0.0) for epoch in report.get("history") or []]
        run_id = trial.user_attrs.get("mlflow_run_id")
        curves.append(
            TrialCurve(
                number=trial.number,
                value=float(trial.value or 0.0),
                validation=validation,
                train_loss=losses(str(run_id)) if run_id else [],
            )
        )
    return curves


def refresh_summary(
    study_dir: Path, record: Mapping[str, Any], trials: Sequence[FrozenTrial] | None = None
) -> Path:
    """Rewrite summary_report.json (trials read from Optuna's storage unless given)."""
    found = list(trials) if trials is not None else load_trials(record)
    return write_summary(study_dir, collect_summary(study_dir, record, found))


def refresh_summary_quietly(
    study_dir: Path, record: Mapping[str, Any], trials: Sequence[FrozenTrial] | None = None
) -> None:
    """:func:`refresh_summary` from inside a study: a failure is a WARNING, the study goes on."""
    try:
        refresh_summary(study_dir, record, trials)
    except Exception as error:  # noqa: BLE001 - a summary must never stop a study or hide why it stopped
        logger.warning("summary_report.json of %s not updated: %s", study_dir.name, error)


def log_study_times(run: RunTracker, record: Mapping[str, Any]) -> None:
    """The study's wall time and overhead figures (summary_report.json's ``time``) as metrics of its MLflow
    run, at its end (through the outbox: nothing waits for MLflow); a failure is a WARNING."""
    try:
        metrics = study_time_metrics(record, load_trials(record), datetime.now(UTC))
    except Exception as error:  # noqa: BLE001 - figures for people must never stop a study
        logger.warning("time figures of study %s not logged: %s", record.get("study_id"), error)
        return
    run.log_metrics(metrics, step=0)
    if "overhead_fraction" in metrics:
        logger.info(
            "wall time %.1f s: training %.1f s, evaluation %.1f s, overhead %.1f s (%.1f %%)",
            metrics["wall_time_s"],
            metrics["training_s"],
            metrics["evaluation_s"],
            metrics["overhead_s"],
            100 * metrics["overhead_fraction"],
        )


def render_study_plots(
    study_dir: Path,
    record: Mapping[str, Any],
    study: optuna.Study,
    *,
    losses: LossReader = no_losses,
    run: RunTracker | None = None,
) -> PlotIndex:
    """Draw the study's plots into ``study_dir/plots``; with ``run``, log them to it (under plots/)."""
    metric = str((record.get("config") or {}).get("hpo", {}).get("metric", "value"))
    folder = StudyPaths(study_dir).plots
    index = render_plots(
        study,
        folder,
        metric=metric,
        report=read_json_object(StudyPaths(study_dir).evaluation_report),
        curves=trial_curves(study.trials, metric, losses),
    )
    if run is not None:
        names = [name for files in index.files.values() for name in files]
        if any(name.endswith(".html") for name in names) and (folder / PLOTLY_JS).is_file():
            names.append(PLOTLY_JS)  # the pages load it from beside them, in MLflow too
        for name in names:
            run.log_artifact(folder / name, PLOTS_DIR)
    return index


def render_study_plots_quietly(
    study_dir: Path,
    record: Mapping[str, Any],
    study: optuna.Study,
    *,
    losses: LossReader = no_losses,
    run: RunTracker | None = None,
) -> None:
    try:
        index = render_study_plots(study_dir, record, study, losses=losses, run=run)
    except Exception as error:  # noqa: BLE001 - plots must never stop a study (make report redraws them)
        logger.warning(
            "plots of %s not drawn: %s: %s (make report retries)", study_dir.name, type(error).__name__, error
        )
        return
    logger.info(
        "plots in %s: %s%s",
        StudyPaths(study_dir).plots,
        ", ".join(index.files) or "none",
        f" (skipped: {', '.join(index.skipped)})" if index.skipped else "",
    )
