"""Send to MLflow the tracking entries that earlier runs left in the outbox.

    python -m dsm5_hpo.cli.sync [--config configs/hpo_study.yaml] [overrides ...]
    make sync [ARGS="tracking.uri=http://host:5000 paths.experiments_dir=DIR"]

A study that ended (or was killed) while MLflow was down keeps its metrics in
``<experiments>/tracking_outbox/``; the next ``make train`` or ``make resume`` sends them too,
this sends them now. Exit 0 when MLflow has everything, 5 when entries are still waiting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dsm5_hpo.cli.common import DEFAULT_CONFIG, compose_config, run_cli
from dsm5_hpo.errors import ConfigError, TrackingError
from dsm5_hpo.tracking.factory import build_tracker
from dsm5_hpo.tracking.mlflow_tracker import MlflowTracker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsm5_hpo.cli.sync", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for MLflow (default 120)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. tracking.uri=http://host:5000")
    args = parser.parse_args(argv)

    def run() -> int:
        config = compose_config(args.config, args.overrides)
        if config.tracking.backend == "none":
            raise ConfigError("tracking.backend is none: there is no MLflow to send to; drop tracking=none")
        folder = config.paths.layout.outbox
        waiting = sorted(folder.glob("outbox-*.jsonl")) if folder.is_dir() else []
        if not waiting:
            print(f"nothing to send: no outbox file in {folder}")
            return 0
        tracker = build_tracker(config)  # adopts the files of dead processes
        assert isinstance(tracker, MlflowTracker)
        adopted = tracker.outbox.pending_count()
        left = tracker.close(args.timeout)
        if left:
            raise TrackingError(
                f"{left} of {adopted} tracking entries could not be sent to {tracker.describe()} within "
                f"{args.timeout:.0f} s; they stay in {folder}: check that the server is up and run this again"
            )
        print(f"sent {adopted} tracking entries to {tracker.describe()}")
        busy = [p.name for p in folder.glob("outbox-*.jsonl")]
        if busy:  # files of processes still running: they send their own entries
            print(f"left alone (their processes are running): {', '.join(busy)}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
