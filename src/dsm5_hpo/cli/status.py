"""A quick look at studies, also while one runs (read-only: it never writes or locks anything).

python -m dsm5_hpo.cli.status                    # every study: state, trials, best score, size
python -m dsm5_hpo.cli.status --study-id ID      # one study's trials: state, score, epochs, checkpoints
python -m dsm5_hpo.cli.status --study-id latest  # the newest study's trials
make status [ARGS="--study-id ID"]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsm5_hpo.cli.common import experiments_dir_override, run_cli
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.liveness import study_driver
from dsm5_hpo.hpo.records import StudyRecord, read_study_record
from dsm5_hpo.hpo.summary import collect_summary, load_trials, measure_storage, trial_row
from dsm5_hpo.layout import ExperimentLayout
from dsm5_hpo.storage.monitor import format_bytes

_PARAMS_WIDTH = 70


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, as wide as their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _params(params: Mapping[str, Any]) -> str:
    text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
    return text if len(text) <= _PARAMS_WIDTH else text[: _PARAMS_WIDTH - 1] + "…"


def state_of(record: Mapping[str, Any], owner: str | None) -> str:
    """The study's state, saying whether a 'RUNNING' study still has a live process."""
    state = str(record.get("state", "?"))
    if state == "RUNNING":
        if owner:
            return f"RUNNING ({owner})"
        if record.get("shared"):
            return "RUNNING (no worker alive: start one again with the same command)"
        return "RUNNING (no live process: make resume)"
    return state


def studies_table(entries: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], str | None]]) -> str:
    """(study record, summary, lock owner) per study, newest first."""
    rows = []
    for record, summary, owner in entries:
        counts = summary["trial_counts"]
        best = summary["best_trial"]
        finished = counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"]
        rows.append(
            [
                str(record["study_id"]),
                state_of(record, owner),
                f"{finished}/{summary['n_trials_target']}",
                f"{counts['COMPLETE']}/{counts['PRUNED']}/{counts['FAIL']}",
                f"{_number(best['value'])} (#{best['number']})" if best else "-",
                _number(summary["test_value"]),
                format_bytes(summary["storage"]["total_bytes"]),
                str(record.get("created_at", ""))[:19].replace("T", " "),
            ]
        )
    return table(
        ["STUDY", "STATE", "TRIALS", "OK/PRUNED/FAIL", "BEST", "TEST", "DISK", "CREATED (UTC)"], rows
    )


def trials_table(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    body = [
        [
            str(r["number"]),
            str(r["state"]),
            _number(r["value"]),
            str(r["epochs"]),
            f"{format_bytes(r['retained_checkpoint_bytes'])} ({r['checkpoints']})",
            _duration(r["duration_s"]),
            str(r.get("device") or "-"),
            _params(r["params"]),
        ]
        for r in rows
    ]
    metric = str(summary["metric"]).upper() or "VALUE"
    return table(["#", "STATE", metric, "EPOCHS", "CHECKPOINTS", "TIME", "DEVICE", "PARAMS"], body)


def study_header(record: Mapping[str, Any], summary: Mapping[str, Any], owner: str | None) -> str:
    counts, best, storage = summary["trial_counts"], summary["best_trial"], summary["storage"]
    best_text = f"{_number(best['value'])} (trial {best['number']})" if best else "-"
    fraction = summary["time"].get("overhead_fraction")  # neither training nor evaluation
    overhead = f" ({100 * fraction:.1f} % overhead)" if fraction is not None else ""
    return (
        f"study {record['study_id']}  {state_of(record, owner)}\n"
        f"trials {sum(counts.values())}/{summary['n_trials_target']}: {counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} pruned, {counts['FAIL']} failed, {counts['RUNNING']} running; "
        f"best {best_text}; test {_number(summary['test_value'])}\n"
        f"disk {format_bytes(storage['total_bytes'])}, retained checkpoints "
        f"{format_bytes(storage['retained_checkpoint_bytes'])} ({storage['retained_checkpoints']}); "
        f"wall time {_duration(summary['time']['wall_time_s'])}{overhead}\n"
    )


def studies_newest_first(experiments: Path) -> list[tuple[Path, StudyRecord]]:
    """Every study folder with its record, newest first (each study.json read once)."""
    found = [(paths.dir, read_study_record(paths.dir)) for paths in ExperimentLayout(experiments).studies()]
    return sorted(found, key=lambda entry: entry[1].created_at, reverse=True)


def study_dir_of(experiments: Path, study_id: str | None) -> Path:
    """The folder of ``study_id``, or of the newest study (ConfigError when there is none)."""
    if study_id:
        return ExperimentLayout(experiments).study(study_id).dir
    studies = studies_newest_first(experiments)
    if not studies:
        raise ConfigError(
            f"no study under {experiments}; start one with `make train`, or pass --experiments-dir"
        )
    return studies[0][0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.status",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--study-id", help="one study's trials (a uuid, or 'latest')")
    parser.add_argument(
        "--experiments-dir",
        type=Path,
        default=Path("experiments"),
        help="where study_*/ live (paths.experiments_dir)",
    )
    args = parser.parse_args(experiments_dir_override(argv))

    def run() -> int:
        experiments: Path = args.experiments_dir
        specific = args.study_id and args.study_id != "latest"
        studies = [] if specific else studies_newest_first(experiments)
        if not specific and not studies:
            raise ConfigError(
                f"no study under {experiments}; start one with `make train`, or pass --experiments-dir"
            )
        if not args.study_id:
            entries = []
            for study_dir, study_record in studies:
                record = study_record.to_dict()
                entries.append(
                    (
                        record,
                        collect_summary(study_dir, record, load_trials(record)),
                        study_driver(study_dir, record),
                    )
                )
            print(studies_table(entries))
            print("\nOne study's trials: python -m dsm5_hpo.cli.status --study-id ID (or latest)")
            return 0
        study_dir = ExperimentLayout(experiments).study(args.study_id).dir if specific else studies[0][0]
        record = (read_study_record(study_dir) if specific else studies[0][1]).to_dict()
        trials = load_trials(record)
        storage = measure_storage(trials)
        now = datetime.now(UTC)
        summary = collect_summary(study_dir, record, trials, now=now, storage=storage)
        print(study_header(record, summary, study_driver(study_dir, record)))
        print(trials_table(summary, [trial_row(t, storage.get(t.number), now) for t in trials]))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
