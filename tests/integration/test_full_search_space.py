"""A 6-trial tiny-model study over configs/search_space/full.yaml through the train CLI.

Every trial's sampled params must be recorded (trial.json, the trial's config.yaml, its MLflow
run) and lie inside the distributions of the search space.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT
from dsm5_hpo.config import searchable_setting
from integration_helpers import FinishedStudy, run_study

pytestmark = pytest.mark.integration

FULL = yaml.safe_load((REPO_ROOT / "configs" / "search_space" / "full.yaml").read_text())
# The subset that runs offline: the tiny encoder in place of the hub encoders (tests/integration/
# test_model_choice.py covers an encoder that cannot be had).
FULL["model"] = {"type": "categorical", "choices": ["tiny"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> FinishedStudy:
    return run_study(
        tmp_path_factory.mktemp("full_space") / "experiments",
        model_cache,
        "search_space=full",
        "search_space.model.choices=[tiny]",
        "hpo.n_trials=6",
        "train.max_epochs=1",
        unpinned=(
            "data.input_format",
            "heads.evidence_unit",
        ),  # searched by the full space: not fixed on the command line
    )


def inside(value: object, spec: dict) -> bool:
    if spec["type"] == "categorical":
        return value in spec["choices"]
    if spec["type"] == "int" and not isinstance(value, int):
        return False
    return spec["low"] <= value <= spec["high"]  # type: ignore[operator]


def test_every_trial_records_valid_params_for_the_whole_space(study: FinishedStudy) -> None:
    trials = [json.loads(p.read_text()) for p in study.experiments.glob("trial_*/trial.json")]
    assert len(trials) == 6
    assert [t["state"] for t in trials].count("COMPLETE") == 6
    for trial in trials:
        params = trial["params"]
        # model=tiny is on the command line, but so is search_space.model: searched (among [tiny]).
        assert set(params) == set(FULL)
        for name, value in params.items():
            assert inside(value, FULL[name]), (name, value)
        resolved = yaml.safe_load(
            (study.experiments / f"trial_{trial['trial_id']}" / "config.yaml").read_text()
        )
        for name, value in params.items():
            if name == "model":
                assert resolved["model"]["name"] == value
                continue
            section, setting = searchable_setting(name)
            assert resolved[section][setting] == value, name
    # The sampler explored: six trials did not all draw the same architecture.
    assert len({(t["params"]["heads.criteria_head"], t["params"]["heads.pooling"]) for t in trials}) > 1


def test_mlflow_holds_every_sampled_param(study: FinishedStudy) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{study.experiments / 'mlflow_db' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dsm5_hpo")
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mlflow.parentRunId")
    ]
    assert len(children) == 6
    for child in children:
        assert {f"hp.{name}" for name in FULL} <= set(child.data.params)
        assert child.data.tags["precision"] in ("fp32", "bf16")


def test_the_test_split_is_evaluated_at_the_thresholds_chosen_on_validation(study: FinishedStudy) -> None:
    report = study.report
    validation = json.loads(
        next(study.experiments.glob(f"trial_{report['best_trial_id']}/validation_report.json")).read_text()
    )
    chosen = validation["metrics"]
    assert "match_threshold" in chosen and "null_score_margin" in chosen
    train = report["resolved_config"]["train"]
    assert train["match_threshold"] == chosen["match_threshold"]
    assert train["null_score_margin"] == chosen["null_score_margin"]
