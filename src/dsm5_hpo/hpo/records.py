"""study.json and trial.json as typed records: what each holds, checked against its contract.

One dataclass per file, with ``contracts/study_record.schema.json`` and
``contracts/trial_record.schema.json`` as the contracts; the one writer of each file
(``write_study_record``, ``write_trial_record``) checks a record against its schema before it reaches
the disk, and the reader checks what it finds, so a damaged or hand-edited record fails with the key
and the file named rather than as a KeyError three modules away. Keys this version does not know
(written by a newer one) are kept in ``extra`` and written back unchanged.

Light on purpose (no torch, no optuna): `make status` and `make cleanup` read these records.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from dsm5_hpo.errors import ConfigError, StopState, StorageError
from dsm5_hpo.layout import StudyPaths, TrialPaths
from dsm5_hpo.storage.atomic import atomic_write_json
from dsm5_hpo.utils.mappings import flatten

CONTRACTS = Path(__file__).resolve().parents[3] / "contracts"
STUDY_RECORD_SCHEMA = CONTRACTS / "study_record.schema.json"
TRIAL_RECORD_SCHEMA = CONTRACTS / "trial_record.schema.json"

# A stopped study or trial takes the state of the stop (errors.ResumableStop.state).
_StudyEnd = Literal["RUNNING", "COMPLETE", "FAILED"]
_TrialEnd = Literal["RUNNING", "COMPLETE", "PRUNED", "FAILED"]
StudyState = _StudyEnd | StopState
TrialState = _TrialEnd | StopState
STUDY_STATES: tuple[str, ...] = (*get_args(_StudyEnd), *get_args(StopState))
TRIAL_STATES: tuple[str, ...] = (*get_args(_TrialEnd), *get_args(StopState))
"""What the contracts' state enums list (a contract test holds them equal)."""


@dataclass
class StudyRecord:
    """study.json: what a study is (ids, storage, config) and where it stands."""

    study_id: str
    state: StudyState
    created_at: str
    optuna_storage: str
    study_name: str
    shared: bool
    config: dict[str, Any]
    synthetic_data: bool
    checkpointing: bool = True
    data: dict[str, Any] | None = None
    model_origin: str | None = None
    mlflow_run_id: str | None = None
    best_trial_id: str | None = None
    best_value: float | None = None
    report: str | None = None
    test_evaluation_s: float | None = None
    """Seconds the test evaluation of the best trial took (the summary counts it as evaluation time)."""
    error: str | None = None
    finished_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, mapping: dict[str, Any], source: Path | str = "study.json") -> StudyRecord:
        return _from_dict(cls, mapping, STUDY_RECORD_SCHEMA, source)


@dataclass
class TrialRecord:
    """trial.json: one trial's ids, parameters and outcome, beside its checkpoints."""

    trial_id: str
    study_id: str
    number: int
    params: dict[str, Any]
    state: TrialState
    started_at: str
    resumed: bool
    mlflow_run_id: str | None = None
    error: str | None = None
    finished_at: str | None = None
    device: str | None = None
    process: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] | None = None
    """Earlier attempts of this trial (a resume, a retry after its process died), oldest first."""
    timing: dict[str, float | None] | None = None
    """Seconds of training, validation, start-up and teardown (hpo/trial_timing.py), set at its end."""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_attempt(self) -> dict[str, Any]:
        """This record as one entry of a later attempt's ``attempts``."""
        keys = ("state", "started_at", "finished_at", "error", "device", "process")
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, mapping: dict[str, Any], source: Path | str = "trial.json") -> TrialRecord:
        return _from_dict(cls, mapping, TRIAL_RECORD_SCHEMA, source)


Record = TypeVar("Record", StudyRecord, TrialRecord)


def _to_dict(record: StudyRecord | TrialRecord) -> dict[str, Any]:
    # Unset optional keys are left out rather than written as null: the files read as they always did.
    out = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)
        if f.name != "extra" and (getattr(record, f.name) is not None or f.default is dataclasses.MISSING)
    }
    return {**record.extra, **out}


def _from_dict(cls: type[Record], mapping: dict[str, Any], schema: Path, source: Path | str) -> Record:
    _check(mapping, schema, source)
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {key: value for key, value in mapping.items() if key in names}
    extra = {key: value for key, value in mapping.items() if key not in names}
    return cls(**known, extra=extra)


@cache
def _validator(schema: Path) -> Any:
    import jsonschema  # only when a record is read or written, not at import

    return jsonschema.Draft202012Validator(json.loads(schema.read_text(encoding="utf-8")))


def _check(mapping: dict[str, Any], schema: Path, source: Path | str) -> None:
    errors = sorted(_validator(schema).iter_errors(mapping), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        key = ".".join(str(part) for part in first.absolute_path) or "(top level)"
        raise StorageError(
            f"{source}: key {key}: {first.message} (contract {schema.name}); the record is damaged or was "
            "edited by hand: restore it from a backup or remove the folder with `make cleanup`"
        )


MACHINE_LOCAL_KEYS: tuple[str, ...] = ("paths", "logging")
"""Config sections a worker may set for itself: where its files go and how it logs. Everything else
decides what the trials of a shared study are, so every worker must agree on it."""


def differing_keys(
    stored: dict[str, Any], current: dict[str, Any], *, ignore: tuple[str, ...] = ()
) -> list[str]:
    """``key (saved X, given Y)`` for every dotted key whose value differs, outside the ``ignore``d
    sections; a key one side lacks shows as <unset>. Both sides are compared as JSON holds them (a
    tuple in a live config is the list study.json has)."""
    old, new = (flatten(json.loads(json.dumps(side, default=str))) for side in (stored, current))
    unset = "<unset>"
    return [
        f"{key} (saved {old.get(key, unset)!r}, given {new.get(key, unset)!r})"
        for key in sorted(old.keys() | new.keys())
        if key.split(".", 1)[0] not in ignore and old.get(key, unset) != new.get(key, unset)
    ]


def write_study_record(study_dir: Path, record: StudyRecord) -> None:
    """The one writer of study.json (atomic: a kill leaves the previous record or this one)."""
    data = record.to_dict()
    path = StudyPaths(study_dir).record
    _check(data, STUDY_RECORD_SCHEMA, path)
    atomic_write_json(path, data)


def write_trial_record(trial_dir: Path, record: TrialRecord) -> None:
    """The one writer of trial.json (atomic)."""
    data = record.to_dict()
    path = TrialPaths(trial_dir).record
    _check(data, TRIAL_RECORD_SCHEMA, path)
    atomic_write_json(path, data)


def _read_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(
            f"{path} not found: {path.parent} is not a {what} folder; check the id and --experiments-dir"
        ) from error
    except (OSError, ValueError) as error:
        raise StorageError(f"{path} cannot be read ({error}); the {what} record is damaged") from error
    if not isinstance(data, dict):
        raise StorageError(f"{path} holds {type(data).__name__}, not an object; the {what} record is damaged")
    return data


def read_study_record(study_dir: Path) -> StudyRecord:
    path = StudyPaths(study_dir).record
    return StudyRecord.from_dict(_read_object(path, "study"), path)


def read_trial_record(trial_dir: Path) -> TrialRecord:
    path = TrialPaths(trial_dir).record
    return TrialRecord.from_dict(_read_object(path, "trial"), path)


def refuse_another_config(study_dir: Path, joined: StudyRecord, config: dict[str, Any]) -> None:
    """A worker joins a shared study with the config the study was started with, or not at all: two
    configs would tune two different problems into one set of trials (and the last worker to start
    would rewrite study.json with its own). ``config``: the joining worker's, as StudyConfig.to_dict()."""
    differences = differing_keys(joined.config, config, ignore=MACHINE_LOCAL_KEYS)
    if differences:
        shown = "; ".join(differences[:10]) + (
            f"; and {len(differences) - 10} more" if len(differences) > 10 else ""
        )
        raise ConfigError(
            f"this worker's config differs from the one shared study {joined.study_name!r} was started "
            f"with ({StudyPaths(study_dir).record}): {shown}. Start every worker with the same config "
            "and overrides, or give this one another hpo.study_name"
        )
