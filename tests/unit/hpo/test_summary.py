"""summary_report.json from trials and disk use (pure), and the disk measurements behind it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from dsm5_hpo.hpo.summary import (
    TrialStorage,
    build_summary,
    study_time_metrics,
    trial_row,
    trial_storage,
    validate_summary,
)
from dsm5_hpo.storage.exhaustion import tree_size

START = datetime(2026, 11, 30, 8, 0, 0)  # Optuna keeps naive local times


def trial(number: int, state: TrialState, value: float | None, epochs: int = 2) -> optuna.trial.FrozenTrial:
    made = optuna.trial.create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"lr": (number + 1) / 10_000},
        distributions={"lr": FloatDistribution(1e-5, 1e-2, log=True)},
        intermediate_values={e: 0.1 * e for e in range(epochs)},
        user_attrs={"trial_uuid": f"uuid-{number}", "best_epoch": epochs - 1},
    )
    made.number = number
    made.datetime_start = START + timedelta(minutes=10 * number)
    made.datetime_complete = (
        None if state == TrialState.RUNNING else made.datetime_start + timedelta(minutes=5)
    )
    return made


def record(**extra: Any) -> dict[str, Any]:
    return {
        "study_id": "abc",
        "state": "RUNNING",
        "created_at": START.astimezone(UTC).isoformat(),
        "config": {
            "hpo": {"metric": "joint_score", "n_trials": 6},
            "retention_policy": {"max_total_size": "10GB"},
        },
        "synthetic_data": True,
        **extra,
    }


def test_counts_best_and_top_trials_in_score_order() -> None:
    trials = [
        trial(0, TrialState.COMPLETE, 0.5),
        trial(1, TrialState.PRUNED, None, epochs=1),
        trial(2, TrialState.COMPLETE, 0.7),
        trial(3, TrialState.FAIL, None, epochs=0),
        trial(4, TrialState.COMPLETE, 0.6),
        trial(5, TrialState.RUNNING, None, epochs=1),
    ]
    storage = {0: TrialStorage(100, 1, 150), 2: TrialStorage(300, 2, 350), 5: TrialStorage(50, 1, 60)}
    now = START.astimezone(UTC) + timedelta(hours=1)
    summary = build_summary(record(), trials, storage, study_dir_bytes=40, now=now, top_k=2)
    validate_summary(summary)
    assert summary["trial_counts"] == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 0}
    assert summary["best_trial"]["number"] == 2 and summary["best_trial"]["value"] == 0.7
    assert [t["number"] for t in summary["top_trials"]] == [2, 4]
    assert summary["best_trial"]["retained_checkpoint_bytes"] == 300
    assert summary["best_trial"]["epochs"] == 2 and summary["best_trial"]["params"] == {"lr": 3e-4}
    assert summary["top_trials"][1]["retained_checkpoint_bytes"] == 0  # no folder measured
    assert summary["storage"] == {
        "total_bytes": 40 + 150 + 350 + 60,
        "study_dir_bytes": 40,
        "trials_bytes": 560,
        "retained_checkpoint_bytes": 450,
        "retained_checkpoints": 4,
        "max_total_size": "10GB",
    }
    assert summary["time"]["wall_time_s"] == 3600.0  # still running: up to now
    # five finished trials of 5 min each, and the running one from 08:50 to 09:00
    assert summary["time"]["trials_time_s"] == 5 * 300.0 + 600.0
    assert summary["n_trials_target"] == 6 and summary["metric"] == "joint_score"
    assert summary["test_value"] is None


def test_epochs_are_the_objectives_count_when_reports_are_per_step() -> None:
    stepped = trial(0, TrialState.PRUNED, None, epochs=7)  # 7 reports (hpo.report_every_n_steps) ...
    stepped.user_attrs["epochs"] = 2  # ... in 2 epochs and a part
    assert trial_row(stepped, None, START)["epochs"] == 2
    assert trial_row(trial(1, TrialState.PRUNED, None, epochs=3), None, START)["epochs"] == 3  # per epoch


def test_a_finished_study_counts_its_wall_time_up_to_its_end_and_reads_its_test_value(tmp_path: Path) -> None:
    report = tmp_path / "evaluation_report.json"
    report.write_text('{"optimization_metric": {"test_value": 0.42}}')
    end = START.astimezone(UTC) + timedelta(minutes=30)
    done = record(state="COMPLETE", finished_at=end.isoformat(), report=str(report))
    summary = build_summary(
        done, [trial(0, TrialState.COMPLETE, 0.5)], {}, study_dir_bytes=0, now=end + timedelta(days=2)
    )
    validate_summary(summary)
    assert summary["time"]["wall_time_s"] == 1800.0 and summary["test_value"] == 0.42
    moved = build_summary({**done, "report": str(tmp_path / "gone.json")}, [], {}, study_dir_bytes=0, now=end)
    assert moved["test_value"] is None and moved["best_trial"] is None and moved["top_trials"] == []


def timed(made: optuna.trial.FrozenTrial, folder: str | None = None, **seconds: float | None) -> Any:
    """``made`` with the timing its objective stores at its end (hpo/trial_timing.py)."""
    made.set_user_attr("timing", {"training_s": 0.0, "evaluation_s": 0.0, **seconds})
    if folder is not None:
        made.set_user_attr("trial_dir", folder)
    return made


def test_the_time_neither_training_nor_evaluating_is_the_overhead() -> None:
    trials = [
        timed(
            trial(0, TrialState.COMPLETE, 0.5),
            "/e/trial_a",
            training_s=900.0,
            evaluation_s=60.0,
            setup_s=0.25,
            startup_s=2.0,
            teardown_s=1.0,
        ),
        # died (its process killed) and retried in the same folder: the retry carries the time along
        timed(trial(1, TrialState.FAIL, None), "/e/trial_b", training_s=300.0, evaluation_s=20.0),
        timed(
            trial(2, TrialState.PRUNED, None),
            "/e/trial_b",
            training_s=700.0,
            evaluation_s=40.0,
            startup_s=0.5,
            teardown_s=3.0,
        ),
        timed(trial(3, TrialState.FAIL, None), training_s=0.0, evaluation_s=0.0),  # never stepped
        trial(4, TrialState.RUNNING, None),  # stores its timing when it ends
    ]
    end = START.astimezone(UTC) + timedelta(hours=1)
    done = record(state="COMPLETE", finished_at=end.isoformat(), test_evaluation_s=100.0)
    summary = build_summary(done, trials, {}, study_dir_bytes=0, now=end)
    validate_summary(summary)
    time = summary["time"]
    assert (time["training_s"], time["evaluation_s"]) == (1600.0, 200.0)  # trial 1 counted once, in 2
    assert time["overhead_s"] == 3600.0 - 1800.0 and time["overhead_fraction"] == 0.5
    assert time["trial_setup_s"] == {"median": 0.25, "max": 0.25, "trials": 1}  # trial 2's record predates it
    assert time["trial_startup_s"] == {"median": 1.25, "max": 2.0, "trials": 2}
    assert time["trial_teardown_s"] == {"median": 2.0, "max": 3.0, "trials": 2}
    best = summary["best_trial"]
    assert (best["setup_s"], best["startup_s"], best["teardown_s"]) == (0.25, 2.0, 1.0)
    # The study's MLflow run: the same figures, the trials' spreads as their medians.
    assert study_time_metrics(done, trials, end) == {
        "wall_time_s": 3600.0,
        "training_s": 1600.0,
        "evaluation_s": 200.0,
        "overhead_s": 1800.0,
        "overhead_fraction": 0.5,
        "trial_setup_median_s": 0.25,
        "trial_startup_median_s": 1.25,
        "trial_teardown_median_s": 2.0,
    }


def test_without_timings_the_overhead_is_unknown_and_side_by_side_trials_read_none() -> None:
    now = START.astimezone(UTC) + timedelta(minutes=10)
    untimed = build_summary(record(), [trial(0, TrialState.RUNNING, None)], {}, study_dir_bytes=0, now=now)
    validate_summary(untimed)
    assert untimed["time"]["overhead_fraction"] is None and untimed["time"]["trial_startup_s"] is None
    assert untimed["time"]["training_s"] is None
    # two devices, ten minutes, 19 minutes of training between them: no negative overhead
    both = [timed(trial(n, TrialState.COMPLETE, 0.5), f"/e/t{n}", training_s=570.0) for n in (0, 1)]
    parallel = build_summary(record(), both, {}, study_dir_bytes=0, now=now)
    validate_summary(parallel)
    assert parallel["time"]["overhead_s"] == 0.0 and parallel["time"]["overhead_fraction"] == 0.0


def test_disk_use_counts_files_once_and_never_follows_links(tmp_path: Path) -> None:
    trial_dir = tmp_path / "trial_x"
    (trial_dir / "checkpoints" / "epoch_0000").mkdir(parents=True)
    (trial_dir / "checkpoints" / "epoch_0001").mkdir()
    (trial_dir / "checkpoints" / ".quarantine").mkdir()
    (trial_dir / "checkpoints" / "epoch_0000" / "model.safetensors").write_bytes(b"x" * 1000)
    (trial_dir / "checkpoints" / "epoch_0001" / "model.safetensors").write_bytes(b"x" * 500)
    (trial_dir / "checkpoints" / ".quarantine" / "bad").write_bytes(b"x" * 70)
    (trial_dir / "trial.json").write_bytes(b"x" * 30)
    outside = tmp_path / "big"
    outside.write_bytes(b"x" * 10_000)
    os.symlink(outside, trial_dir / "link")
    assert tree_size(trial_dir) == 1600
    assert trial_storage(trial_dir) == TrialStorage(
        retained_checkpoint_bytes=1500, checkpoints=2, total_bytes=1600
    )
    assert tree_size(tmp_path / "missing") == 0
