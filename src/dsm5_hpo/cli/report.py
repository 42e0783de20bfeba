"""Regenerate a study's summary and plots (a finished study, or one still running).

    python -m dsm5_hpo.cli.report                    # the newest study
    python -m dsm5_hpo.cli.report --study-id ID
    make report [ARGS="--study-id ID"]

Writes study_<uuid>/summary_report.json and study_<uuid>/plots/ (PNG + HTML, index.json), and
logs the plots to the study's MLflow run when the study tracks to MLflow and MLflow can be reached
(otherwise a WARNING: the files are written all the same).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from dsm5_hpo.cli.common import experiments_dir_override, run_cli
from dsm5_hpo.cli.status import study_dir_of
from dsm5_hpo.config import study_config_from_mapping
from dsm5_hpo.errors import ConfigError, TrackingError
from dsm5_hpo.hpo.records import read_study_record
from dsm5_hpo.hpo.summary_plots import (
    LossReader,
    mlflow_loss_reader,
    no_losses,
    refresh_summary,
    render_study_plots,
)
from dsm5_hpo.layout import PLOTS_DIR
from dsm5_hpo.tracking.factory import build_tracker
from dsm5_hpo.tracking.tracker import RunTracker, Tracker

logger = logging.getLogger("dsm5_hpo.cli.report")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--study-id", help="study uuid (default: the newest study)")
    parser.add_argument(
        "--experiments-dir",
        type=Path,
        default=Path("experiments"),
        help="where study_*/ live (paths.experiments_dir)",
    )
    parser.add_argument(
        "--no-mlflow", action="store_true", help="write the files only, log nothing to MLflow"
    )
    args = parser.parse_args(experiments_dir_override(argv))

    def run() -> int:
        study_dir = study_dir_of(args.experiments_dir, args.study_id)
        record = read_study_record(study_dir).to_dict()
        config = study_config_from_mapping(record["config"])
        summary_path = refresh_summary(study_dir, record)
        try:
            study = optuna.load_study(
                study_name=str(record["study_name"]), storage=str(record["optuna_storage"])
            )
        except KeyError as error:
            raise ConfigError(
                f"{study_dir}: no Optuna study stored yet ({error}); run a trial first"
            ) from error
        tracker: Tracker | None = None
        run: RunTracker | None = None
        losses: LossReader = no_losses
        if not args.no_mlflow and config.tracking.backend != "none" and record.get("mlflow_run_id"):
            try:
                tracker = build_tracker(config)
                run = tracker.attach_run(str(record["mlflow_run_id"]))
                losses = mlflow_loss_reader(config.tracking.resolved_uri(config.paths.experiments))
            except TrackingError as error:
                logger.warning("MLflow cannot be reached (%s): plots are written to disk only", error)
        try:
            index = render_study_plots(study_dir, record, study, losses=losses, run=run)
        finally:
            if tracker is not None:
                left = tracker.close(config.tracking.drain_timeout_s)
                if left:
                    logger.warning("%d MLflow entries wait in the outbox; `make sync` sends them later", left)
        print(f"summary: {summary_path}")
        print(f"plots:   {study_dir / PLOTS_DIR} ({', '.join(index.files) or 'none'})")
        for name, why in index.skipped.items():
            print(f"skipped: {name}: {why}")
        if run is not None:
            print(f"logged to the study's MLflow run {record['mlflow_run_id']} under {PLOTS_DIR}/")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
