"""contracts/evaluation_report.schema.json: a valid schema, met by real output, enforced on write."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO_ROOT
from dsm5_hpo.hpo.report import SCHEMA_FILE, validate_report, write_report
from integration_helpers import FinishedStudy

pytestmark = pytest.mark.integration


def test_schema_file_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA_FILE == REPO_ROOT / "contracts" / "evaluation_report.schema.json"
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


def test_real_report_meets_the_contract(finished_study: FinishedStudy) -> None:
    validate_report(finished_study.report)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r.pop("best_trial_id"),
        lambda r: r["test_metrics"].pop("criteria_f1_macro"),
        lambda r: r["test_metrics"].update(criteria_f1_macro="high"),
        lambda r: r["checkpoints"][0].update(sha256="not-a-hash"),
        lambda r: r.update(split="validation"),
        lambda r: r.update(unexpected=1),
        lambda r: r["seeds"].pop("train_seed"),
    ],
)
def test_broken_reports_are_refused_and_not_written(
    finished_study: FinishedStudy, tmp_path: Path, breakage
) -> None:  # type: ignore[no-untyped-def]
    report = copy.deepcopy(finished_study.report)
    breakage(report)
    with pytest.raises(jsonschema.ValidationError):
        write_report(report, tmp_path)
    assert not (tmp_path / "evaluation_report.json").exists()
