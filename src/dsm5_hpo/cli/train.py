"""Start an HPO study, or continue an interrupted one.

    python -m dsm5_hpo.cli.train --config configs/hpo_study.yaml [hydra overrides ...]
    python -m dsm5_hpo.cli.train --resume [--study-id ID]      # make resume
    python -m dsm5_hpo.cli.train --dry-run [overrides ...]       # check config, data and model only
    make train ARGS="model=tiny hpo.n_trials=5"

--resume uses the study's own saved config; overrides given with it are refused, except
paths.experiments_dir (where to look for the study).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dsm5_hpo.cli.common import DEFAULT_CONFIG, build_tracker, compose_config, run_cli
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.preflight import dry_run
from dsm5_hpo.hpo.study import StudyOutcome, StudyRunner, newest_unfinished_study


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
    for override in args.overrides:
        key, _, value = override.partition("=")
        if key != "paths.experiments_dir":
            raise ConfigError(
                f"--resume continues a study with its saved config; drop the override {override!r} "
                "(only paths.experiments_dir=DIR is accepted)"
            )
        experiments = Path(value)
    study_dir = (
        experiments / f"study_{args.study_id}" if args.study_id else newest_unfinished_study(experiments)
    )
    if not study_dir.is_dir():
        raise ConfigError(f"study folder {study_dir} not found; check --study-id and paths.experiments_dir")
    runner, record = StudyRunner.for_resume(study_dir, build_tracker)
    return runner.resume(study_dir, record)


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
