"""Whether a study is driven now (hpo/liveness.py): a local study's lock, a shared study's heartbeats."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna

from dsm5_hpo.cli.status import state_of
from dsm5_hpo.config import HPOConfig
from dsm5_hpo.hpo.liveness import study_driver
from dsm5_hpo.hpo.lock import study_lock
from dsm5_hpo.hpo.workers import WORKER, make_storage
from heartbeat_helpers import backdate


def shared_record(url: str, grace_s: float = 120.0) -> dict[str, Any]:
    return {
        "state": "RUNNING",
        "shared": True,
        "optuna_storage": url,
        "study_name": "shared",
        "config": {"hpo": {"heartbeat_grace_s": grace_s}},
    }


def test_a_local_study_is_driven_while_its_lock_is_held(tmp_path: Path) -> None:
    record = {"state": "RUNNING", "shared": False}
    assert study_driver(tmp_path, record) is None
    assert state_of(record, None) == "RUNNING (no live process: make resume)"
    with study_lock(tmp_path):
        owner = study_driver(tmp_path, record)
        assert owner is not None and "this host" in owner


def test_a_shared_study_is_driven_while_a_worker_beats(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = make_storage(dataclasses.replace(HPOConfig(), storage=url, study_name="shared"))
    study = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    record = shared_record(url)
    assert study_driver(tmp_path, record) is None  # no trial yet
    taken = study.ask()  # taken a moment ago, not beating yet: alive
    taken.set_user_attr(WORKER, "a:1")
    assert study_driver(tmp_path, record) == "1 worker beating within 120 s: a:1"
    storage.record_heartbeat(taken._trial_id)
    other = study.ask()
    other.set_user_attr(WORKER, "b:2")
    storage.record_heartbeat(other._trial_id)
    assert study_driver(tmp_path, record) == "2 workers beating within 120 s: a:1, b:2"
    backdate(storage, taken._trial_id, 600)
    backdate(storage, other._trial_id, 600)
    assert study_driver(tmp_path, record) is None
    assert state_of(record, None) == "RUNNING (no worker alive: start one again with the same command)"
    # A finished trial that still beat within the grace period (the final evaluation beats the best one).
    study.tell(taken, 0.5)
    storage.record_heartbeat(taken._trial_id)
    assert study_driver(tmp_path, record) == "1 worker beating within 120 s: a:1"


def test_a_shared_study_whose_database_cannot_be_read_counts_as_driven(tmp_path: Path) -> None:
    record = shared_record(f"sqlite:///{tmp_path / 'missing' / 'shared.db'}")
    owner = study_driver(tmp_path, record)
    assert owner is not None and owner.startswith("unknown: its database")
