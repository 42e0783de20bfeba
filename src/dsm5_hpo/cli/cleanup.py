"""List, then delete, the checkpoints that retention allows to go and the leftovers no trial uses.

    python -m dsm5_hpo.cli.cleanup                      # dry run: what would go, and the space freed
    python -m dsm5_hpo.cli.cleanup --apply              # delete it
    python -m dsm5_hpo.cli.cleanup --study-id ID        # one study only
    make cleanup [APPLY=1] [ARGS="--study-id ID --experiments-dir DIR"]

Never deletes metrics, logs, reports or the MLflow database, never follows a symbolic link, and
leaves alone a study that a live process is running (see ``hpo.cleanup``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dsm5_hpo.cli.common import experiments_dir_override, run_cli
from dsm5_hpo.hpo.cleanup import CleanupPlan, apply_cleanup, plan_cleanup
from dsm5_hpo.storage.monitor import format_bytes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.cleanup", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--apply", action="store_true", help="delete (default: dry run, delete nothing)")
    parser.add_argument("--study-id", help="only this study (default: every study, plus orphans)")
    parser.add_argument(
        "--experiments-dir", type=Path, default=Path("experiments"), help="default: experiments"
    )
    return parser


def format_plan(plan: CleanupPlan, *, freed: int | None = None) -> str:
    """The plan as a table; ``freed`` is what --apply actually freed (None for a dry run)."""
    applied = freed is not None
    lines = [f"cleanup of {plan.root}" + ("" if applied else " (dry run: nothing is deleted)")]
    if plan.items:
        lines.append(f"  {'action':<7} {'size':>10}  path  (why)")
        for item in plan.items:
            what = item.action  # strip: training_state.pt only; collect: unreferenced blobs
            lines.append(f"  {what:<7} {format_bytes(item.bytes):>10}  {item.path}  ({item.reason})")
    else:
        lines.append("  nothing to delete: every checkpoint is one the retention policies keep")
    for path, why in plan.skipped:
        lines.append(f"  skipped {path}: {why}")
    if freed is None:
        lines.append(
            f"{len(plan.items)} item(s); would free {format_bytes(plan.total_bytes)} ({plan.total_bytes:,} bytes)"
        )
    else:
        lines.append(f"{len(plan.items)} item(s); freed {format_bytes(freed)} ({freed:,} bytes)")
    if plan.items and not applied:
        lines.append("delete them with: make cleanup APPLY=1   (python -m dsm5_hpo.cli.cleanup --apply)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(experiments_dir_override(argv))

    def run() -> int:
        plan = plan_cleanup(args.experiments_dir, study_id=args.study_id)
        freed = apply_cleanup(plan) if args.apply else None
        print(format_plan(plan, freed=freed))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
