"""Evaluate a study's best model (or one trial's best weights) on the test split.

    python -m dsm5_hpo.cli.evaluate                      # newest finished study
    python -m dsm5_hpo.cli.evaluate --study-id ID        # evaluation_report.json in study_ID/
    python -m dsm5_hpo.cli.evaluate --trial-id ID        # evaluation_report.json in trial_ID/
    make evaluate ARGS="--study-id ID"

The data, split and thresholds come from the trial's saved config, so the test split is the
one the study held out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dsm5_hpo.cli.common import experiments_dir_override, run_cli
from dsm5_hpo.config import StudyConfig, study_config_from_mapping
from dsm5_hpo.errors import ConfigError, StorageError
from dsm5_hpo.hpo.records import read_study_record, read_trial_record
from dsm5_hpo.hpo.report import build_report, evaluate_trial_on_test, write_report
from dsm5_hpo.hpo.study_record import newest_finished_study
from dsm5_hpo.hpo.trial_inputs import prepare_inputs
from dsm5_hpo.layout import ExperimentLayout, TrialPaths


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path} not found; check the id and --experiments-dir") from error
    except (OSError, json.JSONDecodeError) as error:
        raise StorageError(f"{path} cannot be read ({error}); the file is damaged") from error
    return data


def _trial_config(trial_dir: Path) -> StudyConfig:
    path = TrialPaths(trial_dir).config
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path} not found; is {trial_dir.name} a trial folder?") from error
    except (OSError, yaml.YAMLError) as error:
        raise StorageError(f"{path} cannot be read ({error})") from error
    return study_config_from_mapping(mapping)


def evaluate_trial(trial_dir: Path, *, study_id: str, output_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Test-evaluate the best weights of ``trial_dir``; write the report into ``output_dir``."""
    config = _trial_config(trial_dir)
    trial = read_trial_record(trial_dir)
    validation = _read_json(TrialPaths(trial_dir).validation_report)
    inputs = prepare_inputs(config)  # the trial's own encoder and input format
    data = inputs.data
    evaluation = evaluate_trial_on_test(config, data, inputs.model_path, trial_dir, trial.trial_id)
    report = build_report(
        config=evaluation.config,
        study_id=study_id,
        trial_id=trial.trial_id,
        trial_number=trial.number,
        validation_value=float(validation["value"]),
        result=evaluation.result,
        checkpoints=evaluation.checkpoints,
        data=data,
        model_origin=inputs.origin,
    )
    return write_report(report, output_dir), report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--study-id", help="study uuid (default: the newest finished study)")
    which.add_argument("--trial-id", help="trial uuid: evaluate that trial's best weights")
    parser.add_argument(
        "--experiments-dir",
        type=Path,
        default=Path("experiments"),
        help="where study_*/ and trial_*/ live (paths.experiments_dir)",
    )
    args = parser.parse_args(experiments_dir_override(argv))

    def run() -> int:
        experiments: Path = args.experiments_dir
        layout = ExperimentLayout(experiments)
        if args.trial_id:
            trial_dir = layout.trial(args.trial_id).dir
            study_id = read_trial_record(trial_dir).study_id
            path, report = evaluate_trial(trial_dir, study_id=study_id, output_dir=trial_dir)
        else:
            study_dir = (
                layout.study(args.study_id).dir if args.study_id else newest_finished_study(experiments)
            )
            study = read_study_record(study_dir)
            if not study.best_trial_id:
                raise ConfigError(f"study {study.study_id} has no finished best trial (state {study.state})")
            trial_dir = layout.trial(study.best_trial_id).dir
            path, report = evaluate_trial(trial_dir, study_id=study.study_id, output_dir=study_dir)
        metric = report["optimization_metric"]
        print(
            f"test {metric['name']} = {metric['test_value']:.4f} (validation {metric['validation_value']:.4f})\n"
            f"report: {path}"
        )
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
