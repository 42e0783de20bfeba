"""Plots of small in-memory studies: drawn when they can be, skipped with the reason when not, and
never an exception out of the study's own call."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution

from conftest import captured_logs
from dsm5_hpo.hpo.plots import INDEX_FILE, TrialCurve, per_criterion_rows, render_plots
from dsm5_hpo.hpo.summary_plots import render_study_plots_quietly, trial_curves

REPORT = {
    "best_trial_number": 1,
    "optimization_metric": {"name": "joint_score", "test_value": 0.4},
    "synthetic_data": True,
    "per_criterion": {
        "DEPRESSED_MOOD": {"criteria_f1": 0.5, "evidence_has_answer_token_f1": 0.25, "support": 4},
        "ANHEDONIA": {"criteria_f1": None, "evidence_has_answer_token_f1": None, "support": 0},
    },
}


def study_with(values: list[float]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for i, value in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 1e-4 * (i + 1), "batch": 8 * (1 + i % 2)},
                distributions={
                    "lr": FloatDistribution(1e-5, 1e-2, log=True),
                    "batch": IntDistribution(8, 16),
                },
                value=value,
            )
        )
    return study


def test_every_plot_is_drawn_for_a_study_with_several_trials(tmp_path: Path) -> None:
    curves = [TrialCurve(0, 0.7, [0.5, 0.7], [1.2, 0.8]), TrialCurve(2, 0.6, [0.6], [])]
    index = render_plots(
        study_with([0.7, 0.5, 0.6]), tmp_path, metric="joint_score", report=REPORT, curves=curves
    )
    assert index.skipped == {}
    for files in index.files.values():
        for name in files:
            assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / INDEX_FILE).read_text())["files"] == index.files


def test_what_cannot_be_drawn_is_skipped_with_its_reason(tmp_path: Path) -> None:
    index = render_plots(study_with([0.7]), tmp_path, metric="joint_score", report=None, curves=[])
    assert "at least 2 completed trials" in index.skipped["param_importances"]
    assert "at least 2 completed trials" in index.skipped["parallel_coordinate"]
    assert "has not finished" in index.skipped["per_criterion_f1"]
    assert "no completed trial" in index.skipped["training_curves"]
    assert "optimization_history" in index.files
    assert not (tmp_path / "param_importances.png").exists()
    assert json.loads((tmp_path / INDEX_FILE).read_text())["skipped"] == index.skipped


def test_undefined_per_criterion_f1_stays_undefined() -> None:
    assert per_criterion_rows(REPORT) == [("DEPRESSED_MOOD", 0.5, 0.25, 4), ("ANHEDONIA", None, None, 0)]


def test_a_plot_failure_inside_a_study_is_a_warning(tmp_path: Path) -> None:
    study_dir = tmp_path / "study_x"
    study_dir.mkdir()
    (study_dir / "plots").write_text("a file where the plots folder should be")
    with captured_logs("dsm5_hpo.hpo.summary_plots") as records:
        render_study_plots_quietly(
            study_dir, {"config": {"hpo": {"metric": "joint_score"}}}, study_with([0.5, 0.6])
        )
    assert any(r.levelname == "WARNING" and "plots of study_x not drawn" in r.getMessage() for r in records)


def test_curves_come_from_the_validation_reports_of_the_top_trials(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    for i, value in enumerate([0.2, 0.9, 0.5, 0.7]):
        folder = tmp_path / f"trial_{i}"
        folder.mkdir()
        history = [{"joint_score": value / 2}, {"joint_score": value}]
        (folder / "validation_report.json").write_text(json.dumps({"history": history}))
        study.add_trial(
            optuna.trial.create_trial(
                value=value, user_attrs={"trial_dir": str(folder), "mlflow_run_id": f"run{i}"}
            )
        )
    curves = trial_curves(study.trials, "joint_score", losses=lambda run_id: [float(run_id[-1])])
    assert [(c.number, c.validation, c.train_loss) for c in curves] == [
        (1, [0.45, 0.9], [1.0]),
        (3, [0.35, 0.7], [3.0]),
        (2, [0.25, 0.5], [2.0]),
    ]
