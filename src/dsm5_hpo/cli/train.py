"""Start an HPO study, or continue an interrupted one.

    python -m dsm5_hpo.cli.train --config configs/hpo_study.yaml [hydra overrides ...]
    python -m dsm5_hpo.cli.train --resume [--study-id ID]      # make resume
    python -m dsm5_hpo.cli.train --dry-run [overrides ...]       # check config, data and model only
    make train ARGS="model=tiny hpo.n_trials=5"

--resume uses the study's own saved config. Overrides given with it (the original command run again
with --resume added) are accepted when they equal the saved config, and refused, naming each key with
its saved and given values, when they differ; paths.experiments_dir says where to look for the study.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsm5_hpo.cli.common import DEFAULT_CONFIG, compose_config, run_cli
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.final_evaluation import StudyOutcome
from dsm5_hpo.hpo.preflight import dry_run
from dsm5_hpo.hpo.study import StudyRunner
from dsm5_hpo.hpo.study_record import newest_unfinished_study
from dsm5_hpo.layout import ExperimentLayout
from dsm5_hpo.tracking.factory import build_tracker

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="study config (Hydra YAML)")
    parser.add_argument("--resume", action="store_true", help="continue the newest unfinished study")
    parser.add_argument("--study-id", help="with --resume: the study to continue")
    parser.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="write no checkpoints (metrics are still logged; no test evaluation)",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate config, data and model, then exit")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. hpo.n_trials=5 model=tiny")
    return parser.parse_args(argv)


def _resume(args: argparse.Namespace) -> StudyOutcome:
    experiments = Path("experiments")
    others: list[str] = []
    for override in args.overrides:
        key, _, value = override.partition("=")
        if key == "paths.experiments_dir":
            experiments = Path(value)
        else:
            others.append(override)
    study_dir = (
        ExperimentLayout(experiments).study(args.study_id).dir
        if args.study_id
        else newest_unfinished_study(experiments)
    )
    if not study_dir.is_dir():
        raise ConfigError(f"study folder {study_dir} not found; check --study-id and paths.experiments_dir")
    runner, record = StudyRunner.for_resume(study_dir, build_tracker)
    if others:
        _check_same_as_saved(args.config, others, record.config)
    return runner.resume(study_dir, record)


_ABSENT = "<not set>"


def _value_at(config: Mapping[str, Any], key: str) -> Any:
    """The value an override key names in a resolved config (a group name: its whole section)."""
    parts = key.split(".")
    if parts[0] == "search_space":  # the search_space group lives in hpo.search_space
        parts = ["hpo", *parts]
    value: Any = config
    for part in parts:
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return json.loads(json.dumps(value, default=str))  # as study.json holds it (lists, not tuples)


def _check_same_as_saved(config_file: Path, overrides: list[str], saved: Mapping[str, Any]) -> None:
    """Accept overrides equal to the study's saved config (said at INFO); refuse those that differ."""
    given = compose_config(config_file, overrides).to_dict()
    differ = []
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        mine, theirs = _value_at(given, key), _value_at(saved, key)
        if mine == theirs:
            logger.info("--resume: %s equals the study's saved config: accepted", override)
        else:
            differ.append(f"{key} (saved {theirs!r}, given {mine!r})")
    if differ:
        raise ConfigError(
            "--resume continues a study with its saved config; these overrides differ from it: "
            f"{'; '.join(differ)}; drop them, or start a new study with `make train`"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> int:
        if args.study_id and not args.resume:
            raise ConfigError(
                "--study-id goes with --resume (to evaluate a study: python -m dsm5_hpo.cli.evaluate)"
            )
        if args.resume:
            outcome = _resume(args)
            synthetic = bool(outcome.report and outcome.report["synthetic_data"])
        else:
            config = compose_config(args.config, args.overrides)
            if args.dry_run:
                summary = dry_run(config)
                print(f"dry run ok: {summary['model']}, {summary['data']['split_windows']} windows")
                return 0
            outcome = StudyRunner(config, build_tracker(config), checkpointing=not args.no_checkpoint).run()
            synthetic = config.data.synthetic
        _print_outcome(outcome, synthetic)
        return 0

    return run_cli(run)


def _print_outcome(outcome: StudyOutcome, synthetic: bool) -> None:
    lines = [
        f"\nstudy {outcome.study_id}: {outcome.n_complete} complete, {outcome.n_pruned} pruned, "
        f"{outcome.n_failed} failed",
        f"best trial {outcome.best_trial_number} ({outcome.best_trial_id}): validation score "
        f"{outcome.best_value:.4f}",
    ]
    if outcome.report is not None:
        metric = outcome.report["optimization_metric"]
        lines.append(f"test {metric['name']} = {metric['test_value']:.4f}")
        lines.append(f"report: {outcome.report_path}")
    if synthetic:
        lines.append("(synthetic sample data: the scores only show that the pipeline works)")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
