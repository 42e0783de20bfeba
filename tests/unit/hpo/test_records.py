"""study.json and trial.json as typed records: round trips, the contracts, clear errors on damage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dsm5_hpo.errors import ConfigError, StorageError
from dsm5_hpo.hpo.records import (
    STUDY_RECORD_SCHEMA,
    STUDY_STATES,
    TRIAL_RECORD_SCHEMA,
    TRIAL_STATES,
    StudyRecord,
    TrialRecord,
    differing_keys,
    read_study_record,
    read_trial_record,
    write_study_record,
    write_trial_record,
)
from dsm5_hpo.layout import StudyPaths, TrialPaths


def study(**changes: Any) -> StudyRecord:
    fields: dict[str, Any] = {
        "study_id": "abc",
        "state": "RUNNING",
        "created_at": "2026-12-03T00:00:00+00:00",
        "optuna_storage": "sqlite:///x/optuna.db",
        "study_name": "study_abc",
        "shared": False,
        "config": {"hpo": {"n_trials": 2, "metric": "joint_f1"}},
        "synthetic_data": True,
    }
    return StudyRecord(**{**fields, **changes})


def trial(**changes: Any) -> TrialRecord:
    fields: dict[str, Any] = {
        "trial_id": "t1",
        "study_id": "abc",
        "number": 0,
        "params": {"lr": 1e-4},
        "state": "RUNNING",
        "started_at": "2026-12-03T00:00:00+00:00",
        "resumed": False,
    }
    return TrialRecord(**{**fields, **changes})


@pytest.mark.parametrize("schema", [STUDY_RECORD_SCHEMA, TRIAL_RECORD_SCHEMA])
def test_the_contracts_are_valid_draft_2020_12_schemas(schema: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(schema.read_text()))


def test_the_contracts_list_the_states_the_code_writes() -> None:
    for schema, states in [(STUDY_RECORD_SCHEMA, STUDY_STATES), (TRIAL_RECORD_SCHEMA, TRIAL_STATES)]:
        assert json.loads(schema.read_text())["properties"]["state"]["enum"] == list(states)


def test_a_study_record_round_trips_and_leaves_unset_keys_out(tmp_path: Path) -> None:
    record = study(best_trial_id="t1", best_value=0.5, data={"posts": 3}, test_evaluation_s=3.25)
    write_study_record(tmp_path, record)
    written = json.loads(StudyPaths(tmp_path).record.read_text())
    assert "finished_at" not in written and "error" not in written and written["best_value"] == 0.5
    assert read_study_record(tmp_path) == record
    record.state, record.finished_at = "COMPLETE", "2026-12-03T01:00:00+00:00"
    write_study_record(tmp_path, record)
    assert read_study_record(tmp_path).state == "COMPLETE"


def test_keys_of_a_newer_version_are_kept_on_rewrite(tmp_path: Path) -> None:
    data = {**study().to_dict(), "added_later": {"x": 1}}
    StudyPaths(tmp_path).record.write_text(json.dumps(data))
    record = read_study_record(tmp_path)
    assert record.extra == {"added_later": {"x": 1}}
    record.state = "FAILED"
    write_study_record(tmp_path, record)
    assert json.loads(StudyPaths(tmp_path).record.read_text())["added_later"] == {"x": 1}


def test_a_trial_record_round_trips(tmp_path: Path) -> None:
    record = trial()
    write_trial_record(tmp_path, record)
    record.state, record.mlflow_run_id, record.error = "FAILED", "run1", "TrainingError: nan"
    write_trial_record(tmp_path, record)
    assert read_trial_record(tmp_path) == record
    assert json.loads(TrialPaths(tmp_path).record.read_text())["error"] == "TrainingError: nan"
    # Where its time went (hpo/trial_timing.py), as the contract has it.
    record.timing = {"training_s": 12.5, "evaluation_s": 1.0, "startup_s": 0.8, "teardown_s": None}
    write_trial_record(tmp_path, record)
    assert read_trial_record(tmp_path).timing == record.timing
    record.timing = {**record.timing, "training_s": -1.0}
    with pytest.raises(StorageError, match=r"key timing.training_s: -1.0 is less than the minimum"):
        write_trial_record(tmp_path, record)


def test_a_record_that_breaks_its_contract_is_not_written(tmp_path: Path) -> None:
    write_study_record(tmp_path, study())
    before = StudyPaths(tmp_path).record.read_bytes()
    with pytest.raises(StorageError, match=r"key state: 'DONE' is not one of"):
        write_study_record(tmp_path, study(state="DONE"))
    assert StudyPaths(tmp_path).record.read_bytes() == before  # the previous record is intact


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: d.pop("study_id"), r"key \(top level\): 'study_id' is a required property"),
        (lambda d: d.update(shared="yes"), r"key shared: 'yes' is not of type 'boolean'"),
        (lambda d: d.update(best_value="high"), r"key best_value: 'high' is not of type"),
    ],
)
def test_a_damaged_study_record_names_the_file_and_the_key(tmp_path: Path, damage: Any, match: str) -> None:
    data = study().to_dict()
    damage(data)
    StudyPaths(tmp_path).record.write_text(json.dumps(data))
    with pytest.raises(StorageError, match=match) as info:
        read_study_record(tmp_path)
    assert str(StudyPaths(tmp_path).record) in str(info.value) and "study_record.schema.json" in str(
        info.value
    )


def test_missing_half_written_and_non_object_records(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a trial folder; check the id"):
        read_trial_record(tmp_path)
    TrialPaths(tmp_path).record.write_text('{"trial_id": "t1", ')
    with pytest.raises(StorageError, match="cannot be read"):
        read_trial_record(tmp_path)
    TrialPaths(tmp_path).record.write_text("[1, 2]")
    with pytest.raises(StorageError, match="holds list, not an object"):
        read_trial_record(tmp_path)


def test_differing_keys_names_each_key_with_both_values_and_skips_machine_sections() -> None:
    saved = {"hpo": {"n_trials": 4, "choices": [1, 2]}, "paths": {"experiments_dir": "/a"}}
    given = {"hpo": {"n_trials": 6, "choices": (1, 2), "new": True}, "paths": {"experiments_dir": "/b"}}
    assert differing_keys(saved, given, ignore=("paths",)) == [
        "hpo.n_trials (saved 4, given 6)",
        "hpo.new (saved '<unset>', given True)",
    ]
    assert differing_keys(saved, saved) == []
