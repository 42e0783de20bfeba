"""Start an HPO study.

python -m dsm5_hpo.cli.train --config configs/hpo_study.yaml [hydra overrides ...]
make train ARGS="model=tiny hpo.n_trials=5"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dsm5_hpo.cli.common import DEFAULT_CONFIG, build_tracker, compose_config, run_cli
from dsm5_hpo.hpo.study import StudyRunner


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="study config (Hydra YAML)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. hpo.n_trials=5 model=tiny")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> int:
        config = compose_config(args.config, args.overrides)
        outcome = StudyRunner(config, build_tracker(config)).run()
        metric = config.hpo.metric
        test_value = outcome.report["optimization_metric"]["test_value"]
        print(
            f"\nstudy {outcome.study_id}: {outcome.n_complete} complete, {outcome.n_pruned} pruned, "
            f"{outcome.n_failed} failed\n"
            f"best trial {outcome.best_trial_number} ({outcome.best_trial_id}): validation {metric} = "
            f"{outcome.best_value:.4f}, test {metric} = {test_value:.4f}\n"
            f"report: {outcome.report_path}"
            + (
                "\n(synthetic sample data: the scores only show that the pipeline works)"
                if config.data.synthetic
                else ""
            )
        )
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
