"""optuna-dashboard on a study's Optuna storage: every trial, its params, intermediate values and
Optuna's plots, live while the study runs.

    python -m dsm5_hpo.cli.dashboard                       # the newest study, http://127.0.0.1:8080
    python -m dsm5_hpo.cli.dashboard --study-id ID --port 8081
    make dashboard [STUDY=ID] [DASHBOARD_PORT=8080] [DASHBOARD_HOST=127.0.0.1]

Serves on the loopback interface by default: the dashboard can edit notes and delete studies, so
exposing it (``--host 0.0.0.0``) is a deliberate choice, best behind an SSH tunnel.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dsm5_hpo.cli.common import experiments_dir_override, run_cli
from dsm5_hpo.cli.status import study_dir_of
from dsm5_hpo.errors import ConfigError, Interrupted
from dsm5_hpo.hpo.records import read_study_record
from dsm5_hpo.hpo.summary import not_created_yet


def study_storage(experiments: Path, study_id: str | None) -> tuple[str, str]:
    """(study id, Optuna storage URL) of ``study_id``, or of the newest study."""
    record = read_study_record(study_dir_of(experiments, study_id)).to_dict()
    storage = str(record["optuna_storage"])
    if not_created_yet(storage):
        raise ConfigError(
            f"study {record['study_id']} has no Optuna database yet ({storage}); wait for its first trial"
        )
    return str(record["study_id"]), storage


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--study-id", help="study uuid (default: the newest study)")
    parser.add_argument("--experiments-dir", type=Path, default=Path("experiments"))
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(experiments_dir_override(argv))

    def run() -> int:
        import optuna_dashboard

        study_id, storage = study_storage(args.experiments_dir, args.study_id)
        print(
            f"optuna-dashboard for study {study_id} on http://{args.host}:{args.port} (Ctrl-C stops it)",
            flush=True,
        )
        try:
            optuna_dashboard.run_server(storage, host=args.host, port=args.port)
        except Interrupted:  # Ctrl-C is how a dashboard ends: not an interrupted study
            print("dashboard stopped", file=sys.stderr)
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
