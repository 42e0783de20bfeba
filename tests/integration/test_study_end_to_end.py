"""End to end: `python -m dsm5_hpo.cli.train` runs a 2-trial tiny study; layout, MLflow, report, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from checkpoint_helpers import blob_names
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.cli import evaluate
from dsm5_hpo.hpo.report import validate_report
from dsm5_hpo.storage.atomic import sha256_file
from integration_helpers import FinishedStudy, run_study

pytestmark = pytest.mark.integration


@pytest.fixture
def finished(finished_study: FinishedStudy) -> FinishedStudy:
    return finished_study


def test_directory_layout(finished: FinishedStudy) -> None:
    experiments, study_dir = finished.experiments, finished.study_dir
    assert (experiments / "mlflow_db" / "mlflow.db").is_file()
    for name in (
        "optuna.db",
        "study.json",
        "evaluation_report.json",
        "logs/study.jsonl",
        "best_model/dsm5_hpo.json",
    ):
        assert (study_dir / name).is_file(), name
    trials = sorted(experiments.glob("trial_*"))
    assert len(trials) == 2
    for trial_dir in trials:
        for name in ("config.yaml", "trial.json", "validation_report.json", "logs/trial.jsonl"):
            assert (trial_dir / name).is_file(), f"{trial_dir.name}/{name}"
        # A finished trial keeps only its best checkpoint(s), as weights without resume state.
        checkpoints = sorted((trial_dir / "checkpoints").glob("epoch_*"))
        values = {json.loads((c / "metadata.json").read_text())["metric_value"] for c in checkpoints}
        assert checkpoints and len(values) == 1, checkpoints
        for checkpoint in checkpoints:
            assert sorted(p.name for p in checkpoint.iterdir()) == [".hash", "metadata.json"]  # + its blobs
            for blob in blob_names(checkpoint):
                assert sha256_file(BlobStore(experiments / "blobs").path(blob)) == blob
            assert json.loads((checkpoint / "metadata.json").read_text())["resume_capable"] is False
        resolved = yaml.safe_load((trial_dir / "config.yaml").read_text())
        assert resolved["model"]["local_path"] == "tiny"
        record = json.loads((trial_dir / "trial.json").read_text())
        assert record["state"] == "COMPLETE"
        assert record["timing"]["training_s"] > 0
        assert 0 < record["timing"]["setup_s"] < record["timing"]["startup_s"]
    assert finished.study["state"] == "COMPLETE"


def test_report_is_valid_and_complete(finished: FinishedStudy) -> None:
    report = finished.report
    validate_report(report)
    assert report["study_id"] == finished.study["study_id"]
    assert report["best_trial_id"] == finished.study["best_trial_id"]
    assert report["synthetic_data"] is True and "SYNTHETIC" in report["note"]
    assert report["data"]["revision"].startswith("sha256:")
    assert set(report["per_criterion"]) == set(report["data"]["criteria"])
    assert blob_names(Path(report["checkpoints"][0]["path"]))  # its weights, in the blob store
    assert "report: " in finished.stdout and "best trial" in finished.stdout
    # The metrics that say what happened, in the report and in its schema's required set.
    new = ("joint_f1", "evidence_span_f1", "evidence_span_precision", "evidence_has_answer_exact_match")
    for name in (*new, "criteria_average_precision"):
        assert name in report["test_metrics"], name
    assert report["optimization_metric"]["name"] == "joint_f1"
    schema = json.loads(
        (Path(__file__).parents[2] / "contracts" / "evaluation_report.schema.json").read_text()
    )
    assert set(new) <= set(schema["properties"]["test_metrics"]["required"])


def test_mlflow_holds_the_study_and_trial_runs(finished: FinishedStudy) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{finished.experiments / 'mlflow_db' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dsm5_hpo")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["progress"] == "trial 2/2"
    assert parent.data.tags["completed_fraction"] == "1.000" and parent.data.tags["eta_seconds"] == "0"
    assert float(parent.data.tags["trials_per_hour"]) > 0 and "best_value" in parent.data.tags
    # Every entry reached MLflow through the outbox, which is then removed.
    assert not list((finished.experiments / "tracking_outbox").glob("outbox-*.jsonl"))
    assert {"test_joint_score", "test_joint_f1", "test_evidence_span_f1"} <= set(parent.data.metrics)
    assert "best_joint_f1" in parent.data.metrics  # the study's metric, as it improved
    # summary_report.json's time figures, logged at the end of the study
    assert 0 < parent.data.metrics["overhead_fraction"] < 1 and parent.data.metrics["training_s"] > 0
    assert 0 < parent.data.metrics["trial_setup_median_s"] < parent.data.metrics["trial_startup_median_s"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert "hp.learning_rate_encoder" in child.data.params
        val = client.get_metric_history(child.info.run_id, "val_joint_score")
        assert sorted(m.step for m in val) == [0, 1]  # one value per epoch, no duplicates
        for name in ("val_joint_f1", "val_evidence_span_f1", "val_evidence_has_answer_exact_match"):
            assert sorted(m.step for m in client.get_metric_history(child.info.run_id, name)) == [0, 1], name
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        assert steps and len(steps) == len(set(steps))


def test_evaluate_cli_reproduces_the_test_metrics(
    finished: FinishedStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    before = finished.report["test_metrics"]
    code = evaluate.main(
        ["--experiments-dir", str(finished.experiments), "--study-id", finished.study["study_id"]]
    )
    assert code == 0
    assert "report:" in capsys.readouterr().out
    after = json.loads((finished.study_dir / "evaluation_report.json").read_text())
    assert after["test_metrics"] == before


def test_evaluate_cli_trial_mode_writes_into_the_trial(finished: FinishedStudy) -> None:
    trial_id = finished.study["best_trial_id"]
    assert evaluate.main(["--experiments-dir", str(finished.experiments), "--trial-id", trial_id]) == 0
    report = json.loads((finished.experiments / f"trial_{trial_id}" / "evaluation_report.json").read_text())
    assert report["test_metrics"] == finished.report["test_metrics"]


def test_same_config_and_seed_give_the_same_metrics(
    finished: FinishedStudy, tmp_path: Path, model_cache: Path
) -> None:
    again = run_study(tmp_path / "experiments", model_cache)

    def validation_metrics(f: FinishedStudy) -> list[dict[str, float]]:
        reports = [
            json.loads((t / "validation_report.json").read_text()) for t in f.experiments.glob("trial_*")
        ]
        return [r["metrics"] for r in reports]

    first = sorted(json.dumps(m, sort_keys=True) for m in validation_metrics(finished))
    second = sorted(json.dumps(m, sort_keys=True) for m in validation_metrics(again))
    assert first == second
    assert again.report["test_metrics"] == finished.report["test_metrics"]
