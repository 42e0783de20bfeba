"""data.input_format as a trial's choice: binary_pairs and multi_label trials in one tiny study through
the train CLI, evaluated with the same metrics; the multi_label export predicts through the predict CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dsm5_hpo.data.criteria import CRITERIA
from dsm5_hpo.vocabulary import METRIC_NAMES
from integration_helpers import FinishedStudy, run_study

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> FinishedStudy:
    return run_study(
        tmp_path_factory.mktemp("input_formats") / "experiments",
        model_cache,
        "+search_space.data.input_format={type:categorical,choices:[binary_pairs,multi_label]}",
        "hpo.sampler=random",
        "hpo.n_trials=4",
    )


def test_both_formats_train_and_are_evaluated_with_the_same_metrics(study: FinishedStudy) -> None:
    trials = [json.loads(p.read_text()) for p in study.experiments.glob("trial_*/trial.json")]
    formats = {t["params"]["data.input_format"] for t in trials}
    assert formats == {"binary_pairs", "multi_label"}, formats
    assert all(t["state"] == "COMPLETE" for t in trials)
    for trial in trials:
        folder = study.experiments / f"trial_{trial['trial_id']}"
        resolved = yaml.safe_load((folder / "config.yaml").read_text())
        assert resolved["data"]["input_format"] == trial["params"]["data.input_format"]
        if resolved["data"]["input_format"] == "multi_label":
            assert resolved["train"]["negative_sampling"] == 1.0  # no negative pairs in a post's window
        report = json.loads((folder / "validation_report.json").read_text())
        assert set(METRIC_NAMES) <= set(report["metrics"])


def test_the_export_of_a_multi_label_trial_predicts_every_criterion(
    study: FinishedStudy, tmp_path: Path, model_cache: Path
) -> None:
    """Export a multi_label trial's best weights like the study does, then predict with the CLI."""
    from dsm5_hpo.cli.evaluate import _trial_config
    from dsm5_hpo.data.prepare import prepare_data
    from dsm5_hpo.hpo.report import evaluate_trial_on_test, export_description
    from dsm5_hpo.models.export import export_model
    from dsm5_hpo.models.loading import load_tokenizer, resolve_model

    trial = next(
        json.loads(p.read_text())
        for p in sorted(study.experiments.glob("trial_*/trial.json"))
        if json.loads(p.read_text())["params"]["data.input_format"] == "multi_label"
    )
    folder = study.experiments / f"trial_{trial['trial_id']}"
    config = _trial_config(folder)
    path = resolve_model(config.model, cache_dir=config.paths.cache).path
    data = prepare_data(config.data, load_tokenizer(path), seed=config.train.seed)
    evaluation = evaluate_trial_on_test(config, data, path, folder, trial["trial_id"])
    exported = export_model(
        evaluation.model,
        data.tokenizer,
        tmp_path / "best_model",
        description=export_description(evaluation, study_id="s", trial_id=trial["trial_id"]),
    )
    posts = '{"post_id": "a", "text": "I sleep all day and feel worthless."}\n'
    done = subprocess.run(
        [sys.executable, "-m", "dsm5_hpo.cli.predict", "--model", str(exported), "--input", "-"],
        input=posts,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert [c["criterion"] for c in record["criteria"]] == list(CRITERIA)
    assert json.loads((exported / "dsm5_hpo.json").read_text())["input_format"] == "multi_label"
