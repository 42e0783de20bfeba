"""contracts/summary_report.schema.json: a valid schema, met by a real study's summary, enforced on write."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO_ROOT
from dsm5_hpo.hpo.summary import SUMMARY_SCHEMA, validate_summary, write_summary
from dsm5_hpo.layout import StudyPaths
from integration_helpers import FinishedStudy

pytestmark = pytest.mark.integration


def test_schema_file_is_a_valid_draft_2020_12_schema() -> None:
    assert SUMMARY_SCHEMA == REPO_ROOT / "contracts" / "summary_report.schema.json"
    jsonschema.Draft202012Validator.check_schema(json.loads(SUMMARY_SCHEMA.read_text()))


def test_the_study_wrote_a_summary_that_meets_the_contract(finished_study: FinishedStudy) -> None:
    summary = json.loads(StudyPaths(finished_study.study_dir).summary.read_text())
    validate_summary(summary)
    assert summary["study_id"] == finished_study.study["study_id"] and summary["state"] == "COMPLETE"
    assert summary["trial_counts"]["COMPLETE"] == 2 and summary["n_trials_target"] == 2
    assert summary["best_trial"]["trial_id"] == finished_study.report["best_trial_id"]
    assert summary["best_trial"]["value"] == pytest.approx(finished_study.study["best_value"])
    assert summary["test_value"] == pytest.approx(finished_study.report["optimization_metric"]["test_value"])
    assert summary["storage"]["retained_checkpoint_bytes"] > 0
    assert summary["storage"]["total_bytes"] > summary["storage"]["retained_checkpoint_bytes"]
    # Where the time went: the trials' epochs and validations and the test evaluation, the rest overhead.
    time = summary["time"]
    assert time["training_s"] > 0 and time["evaluation_s"] > finished_study.study["test_evaluation_s"] > 0
    assert time["training_s"] + time["evaluation_s"] + time["overhead_s"] == pytest.approx(
        time["wall_time_s"], abs=0.01
    )
    assert 0 < time["overhead_fraction"] < 1
    assert time["trial_setup_s"]["trials"] == time["trial_startup_s"]["trials"] == 2
    assert time["trial_teardown_s"]["trials"] == 2
    best = summary["best_trial"]
    # Nothing trains during the set-up; the start-up also holds the first step's forward, backward, update.
    assert 0 < best["setup_s"] < best["startup_s"] and best["teardown_s"] > 0


@pytest.mark.parametrize(
    "breakage",
    [
        lambda s: s.pop("trial_counts"),
        lambda s: s["trial_counts"].update(COMPLETE=-1),
        lambda s: s["best_trial"].update(state="DONE"),
        lambda s: s["storage"].update(total_bytes="big"),
        lambda s: s.update(unexpected=1),
        lambda s: s["top_trials"][0].pop("params"),
    ],
)
def test_broken_summaries_are_refused_and_not_written(
    finished_study: FinishedStudy, tmp_path: Path, breakage
) -> None:  # type: ignore[no-untyped-def]
    summary = json.loads(StudyPaths(finished_study.study_dir).summary.read_text())
    broken = copy.deepcopy(summary)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        write_summary(tmp_path, broken)
    assert not StudyPaths(tmp_path).summary.exists()
