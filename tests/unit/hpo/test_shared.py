"""Workers sharing a study (hpo/shared.py), in-process against a shared SQLite storage: exactly
n_trials, a dead worker's trial queued again and taken over, one final evaluation, the lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from dsm5_hpo.config import HPOConfig
from dsm5_hpo.errors import ConfigError, TrainingError
from dsm5_hpo.hpo.database import storage_lock
from dsm5_hpo.hpo.shared import (
    FINAL_EVALUATION,
    RETRY_OF,
    WORKER,
    SharedWorker,
    counted_trials,
    finished_trials,
    make_storage,
    shared_study_id,
    worker_id,
)


def hpo(tmp_path: Path, **changes: Any) -> HPOConfig:
    settings: dict[str, Any] = {
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "study_name": "shared",
        "n_trials": 3,
        "heartbeat_interval_s": 1,
        "heartbeat_grace_s": 2,
    }
    return HPOConfig(**{**settings, **changes})


class Objective:
    """Stands in for the training objective: records what it was given, keeps the folder convention."""

    def __init__(self, tmp_path: Path, fail_on: set[int] | None = None) -> None:
        self.tmp_path = tmp_path
        self.calls: list[tuple[int, bool, set[int]]] = []
        self.fail_on = fail_on or set()

    def __call__(self, trial: optuna.Trial, reported: set[int] | None = None) -> float:
        resumed = "trial_uuid" in trial.user_attrs
        if not resumed:
            trial.set_user_attr("trial_uuid", f"uuid-{trial.number}")
            trial.set_user_attr("trial_dir", str(self.tmp_path / f"trial_{trial.number}"))
        (Path(trial.user_attrs["trial_dir"]) / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.calls.append((trial.number, resumed, set(reported or ())))
        if trial.number in self.fail_on:
            raise TrainingError("non-finite loss")
        x = trial.suggest_float("x", 0.0, 1.0)
        return x


def worker(config: HPOConfig, objective: Objective, study: optuna.Study | None = None) -> SharedWorker:
    storage = make_storage(config)
    study = study or optuna.create_study(
        study_name=config.study_name, storage=storage, direction="maximize", load_if_exists=True
    )
    return SharedWorker(study, storage, config, objective, lambda s, t: None, sleep=lambda s: None)


def test_the_study_id_is_the_same_for_every_worker_and_differs_by_name() -> None:
    assert shared_study_id("postgresql://u@h/db", "a") == shared_study_id("postgresql://u@h/db", "a")
    assert shared_study_id("postgresql://u@h/db", "a") != shared_study_id("postgresql://u@h/db", "b")


def test_a_worker_runs_exactly_n_trials_and_a_training_failure_does_not_stop_it(tmp_path: Path) -> None:
    objective = Objective(tmp_path, fail_on={1})
    shared = worker(hpo(tmp_path), objective)
    shared.run_trials()
    states = [t.state for t in shared.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert all(t.user_attrs[WORKER] == worker_id() for t in shared.study.trials)
    # A second worker arriving later finds nothing to do.
    late = worker(hpo(tmp_path), Objective(tmp_path))
    late.run_trials()
    assert len(late.study.trials) == 3 and late.objective.calls == []  # type: ignore[attr-defined]


def test_a_bug_in_the_objective_fails_the_trial_and_propagates(tmp_path: Path) -> None:
    def broken(trial: optuna.Trial, reported: set[int] | None = None) -> float:
        raise KeyError("bug")

    shared = worker(hpo(tmp_path), Objective(tmp_path))
    shared.objective = broken
    with pytest.raises(KeyError):
        shared.run_trials()
    assert [t.state for t in shared.study.trials] == [TrialState.FAIL]


def test_a_dead_workers_trial_is_queued_again_and_finished_once(tmp_path: Path) -> None:
    config = hpo(tmp_path)
    storage = make_storage(config)
    study = optuna.create_study(study_name=config.study_name, storage=storage, direction="maximize")
    # A worker that died mid-trial: its trial has params, a folder, a reported epoch, then no heartbeat.
    dead = study.ask()
    dead.suggest_float("x", 0.0, 1.0)
    dead.set_user_attr("trial_uuid", "uuid-dead")
    dead.set_user_attr("trial_dir", str(tmp_path / "trial_dead"))
    dead.set_user_attr(WORKER, "elsewhere:1")
    dead.report(0.3, 0)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3.0)  # longer than the grace period (2 s)

    objective = Objective(tmp_path)
    shared = worker(config, objective, study)
    shared.run_trials()
    trials = shared.study.trials
    assert trials[0].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert retry.user_attrs["trial_uuid"] == "uuid-dead" and retry.user_attrs[WORKER] == worker_id()
    # The retry ran first, as a resumed trial that already reported epoch 0.
    assert objective.calls[0] == (retry.number, True, {0})
    # n_trials counts the dead trial once: 3 counted, 3 completed.
    assert counted_trials(trials) == 3 == finished_trials(trials)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_one_worker_claims_the_final_evaluation(tmp_path: Path) -> None:
    config = hpo(tmp_path, n_trials=2)
    first = worker(config, Objective(tmp_path))
    first.run_trials()
    second = worker(config, Objective(tmp_path))
    assert first.claim_final_evaluation(checkpointing=True) is True
    assert second.claim_final_evaluation(checkpointing=True) is False
    assert second.study.user_attrs[FINAL_EVALUATION] == worker_id()
    assert second.claim_final_evaluation(checkpointing=False) is True  # nothing to evaluate: no claim


def test_the_best_trial_must_be_visible_to_claim_it(tmp_path: Path) -> None:
    config = hpo(tmp_path, n_trials=1)
    shared = worker(config, Objective(tmp_path))
    shared.run_trials()
    best = shared.study.best_trial
    (Path(best.user_attrs["trial_dir"]) / "checkpoints").rmdir()  # "on another machine"
    assert shared.claim_final_evaluation(checkpointing=True) is False
    assert FINAL_EVALUATION not in shared.study.user_attrs


def test_the_sqlite_lock_is_exclusive_across_connections(tmp_path: Path) -> None:
    config = hpo(tmp_path)
    storage = make_storage(config)
    order: list[str] = []
    entered = threading.Event()

    def other() -> None:
        entered.wait(5)
        with storage_lock(storage, config.storage, config.study_name):
            order.append("other")

    thread = threading.Thread(target=other)
    thread.start()
    with storage_lock(storage, config.storage, config.study_name):
        entered.set()
        time.sleep(0.3)  # the other thread is blocked meanwhile
        order.append("first")
    thread.join(5)
    assert order == ["first", "other"]


def test_an_unreachable_storage_names_the_key_and_the_fix(tmp_path: Path) -> None:
    config = hpo(tmp_path, storage=f"sqlite:///{tmp_path / 'missing' / 'dir' / 'optuna.db'}")
    with pytest.raises(ConfigError, match=r"hpo.storage.*cannot open the shared study storage"):
        make_storage(config)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"storage": "postgresql://u:secret@db/optuna"}, "PGPASSWORD or ~/.pgpass"),
        ({"storage": "redis://db"}, "must be a database URL"),
        ({"storage": "postgresql://u@db/optuna", "study_name": " "}, "hpo.study_name"),
        ({"heartbeat_interval_s": 0}, "hpo.heartbeat_interval_s"),
        ({"heartbeat_interval_s": 5, "heartbeat_grace_s": 5}, "hpo.heartbeat_grace_s"),
    ],
)
def test_shared_storage_settings_are_validated(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("~", "~")):
        HPOConfig(**changes)
