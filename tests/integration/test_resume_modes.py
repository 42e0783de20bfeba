"""Resume edge cases and --no-checkpoint through the train CLI (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CONFIG_FILE, TINY_OVERRIDES, captured_logs
from dsm5_hpo.cli import train
from dsm5_hpo.hpo.study import StudyRunner

pytestmark = pytest.mark.integration


def _overrides(experiments: Path, cache: Path) -> list[str]:
    return [
        *TINY_OVERRIDES,
        "hpo.n_trials=1",
        f"paths.experiments_dir={experiments}",
        f"paths.cache_dir={cache}",
    ]


def test_no_checkpoint_study_logs_metrics_and_writes_no_weights(
    tmp_path: Path, model_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiments = tmp_path / "exp"
    code = train.main(
        ["--config", str(CONFIG_FILE), "--no-checkpoint", *_overrides(experiments, model_cache)]
    )
    assert code == 0
    assert "best trial 0" in capsys.readouterr().out
    (trial_dir,) = experiments.glob("trial_*")
    assert not (trial_dir / "checkpoints").exists()
    assert json.loads((trial_dir / "validation_report.json").read_text())["metrics"]
    (study_dir,) = experiments.glob("study_*")
    assert not (study_dir / "evaluation_report.json").exists()
    assert json.loads((study_dir / "study.json").read_text())["state"] == "COMPLETE"


def test_resuming_a_complete_study_is_refused(
    tmp_path: Path, model_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiments = tmp_path / "exp"
    assert train.main(["--config", str(CONFIG_FILE), *_overrides(experiments, model_cache)]) == 0
    (study_dir,) = experiments.glob("study_*")
    study_id = study_dir.name.removeprefix("study_")
    capsys.readouterr()
    assert train.main(["--resume", "--study-id", study_id, f"paths.experiments_dir={experiments}"]) == 2
    assert "already complete" in capsys.readouterr().err
    assert train.main(["--resume", f"paths.experiments_dir={experiments}"]) == 2
    assert "no unfinished study" in capsys.readouterr().err


class Killed(BaseException):
    """kill -9 at that instant: no handler of the study runs."""


def test_a_study_killed_after_its_evaluation_is_finished_by_resume_without_evaluating_again(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    experiments = tmp_path / "exp"

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:  # the kill lands while the plots are drawn
        patch.setattr(StudyRunner, "_publish_plots", killed)
        with pytest.raises(Killed):
            train.main(["--config", str(CONFIG_FILE), *_overrides(experiments, model_cache)])
    (study_dir,) = experiments.glob("study_*")
    record = json.loads((study_dir / "study.json").read_text())
    assert record["state"] == "RUNNING", "marked COMPLETE before its last step"
    assert not (study_dir / "plots").exists()
    report = (study_dir / "evaluation_report.json").read_bytes()
    # A kill in the middle of a checkpoint deletion, in a trial that has ended.
    (trial_dir,) = experiments.glob("trial_*")
    leftover = trial_dir / "checkpoints" / ".tmp-deleted-epoch_0000-1a2b3c4d"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"x" * 64)
    capsys.readouterr()

    # The habit of running the same command again with --resume: an override that differs from the
    # saved config is refused, naming it with both values; the original command is accepted.
    original = ["--config", str(CONFIG_FILE), *_overrides(experiments, model_cache)]
    assert train.main(["--resume", *original, "hpo.n_trials=5", "train.seed=7"]) == 2
    error = capsys.readouterr().err
    assert "hpo.n_trials (saved 1, given 5)" in error and "train.seed (saved 42, given 7)" in error, error
    assert json.loads((study_dir / "study.json").read_text())["state"] == "RUNNING"
    with captured_logs("dsm5_hpo.cli.train") as logs:
        assert train.main(["--resume", *original]) == 0
    assert "--resume: model=tiny equals the study's saved config: accepted" in [r.getMessage() for r in logs]
    record = json.loads((study_dir / "study.json").read_text())
    assert record["state"] == "COMPLETE" and (study_dir / "plots").is_dir()
    assert (study_dir / "evaluation_report.json").read_bytes() == report  # not evaluated a second time
    assert "exported before the study stopped: kept" in (study_dir / "logs" / "study.jsonl").read_text()
    assert not leftover.exists()
