"""Workers sharing a study (hpo/workers.py), in-process against a shared SQLite storage: exactly
n_trials, a dead worker's trial queued again and taken over, one final evaluation, the lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from conftest import captured_logs
from dsm5_hpo.config import HPOConfig
from dsm5_hpo.errors import ConfigError, TrainingError
from dsm5_hpo.hpo.database import storage_lock
from dsm5_hpo.hpo.workers import (
    FINAL_EVALUATION,
    WORKER,
    SharedWorker,
    counted_trials,
    fail_stale_trials,
    finished_trials,
    make_storage,
    retried_from,
    retry_history,
    shared_study_id,
    worker_id,
)
from heartbeat_helpers import backdate


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

    def __call__(
        self, trial: optuna.Trial, reported: set[int] | None = None, fence: Callable[[], None] | None = None
    ) -> float:
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


class BoundedSleep:
    """The worker's sleep between polls; a worker that keeps waiting past ``limit`` polls is stuck (a
    test then fails instead of hanging)."""

    def __init__(self, limit: int = 50) -> None:
        self.calls = 0
        self.limit = limit

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        if self.calls > self.limit:
            raise AssertionError(f"the worker is still waiting after {self.limit} polls")


def worker(
    config: HPOConfig,
    objective: Callable[..., float],
    study: optuna.Study | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> SharedWorker:
    storage = make_storage(config)
    study = study or optuna.create_study(
        study_name=config.study_name, storage=storage, direction="maximize", load_if_exists=True
    )
    return SharedWorker(study, storage, config, objective, [], sleep=BoundedSleep(), clock=clock)


def died_mid_trial(
    study: optuna.Study, storage: RDBStorage, tmp_path: Path, *, beat: bool = True
) -> optuna.Trial:
    """A trial taken by a worker that died: params, a folder, a reported epoch, then silence."""
    dead = study.ask()
    dead.suggest_float("x", 0.0, 1.0)
    dead.set_user_attr("trial_uuid", "uuid-dead")
    dead.set_user_attr("trial_dir", str(tmp_path / "trial_dead"))
    dead.set_user_attr(WORKER, "elsewhere:1")
    dead.report(0.3, 0)
    if beat:
        storage.record_heartbeat(dead._trial_id)
    backdate(storage, dead._trial_id, 3600)
    return dead


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
    def broken(trial: optuna.Trial, reported: set[int] | None = None, fence: object = None) -> float:
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
    died_mid_trial(study, storage, tmp_path)

    objective = Objective(tmp_path)
    shared = worker(config, objective, study)
    shared.run_trials()
    trials = shared.study.trials
    assert trials[0].state == TrialState.FAIL
    (retry,) = [t for t in trials if retried_from(t) == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert retry.user_attrs["trial_uuid"] == "uuid-dead" and retry.user_attrs[WORKER] == worker_id()
    # The retry ran first, as a resumed trial that already reported epoch 0.
    assert objective.calls[0] == (retry.number, True, {0})
    # n_trials counts the dead trial once: 3 counted, 3 completed.
    assert counted_trials(trials) == 3 == finished_trials(trials)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_a_trial_taken_but_never_beating_is_found_stale(tmp_path: Path) -> None:
    # Killed between `ask` and the first heartbeat: no heartbeat row at all, which Optuna alone never
    # sees as stale, so the other workers waited for it forever.
    config = hpo(tmp_path, n_trials=1)
    storage = make_storage(config)
    study = optuna.create_study(study_name=config.study_name, storage=storage, direction="maximize")
    died_mid_trial(study, storage, tmp_path, beat=False)
    shared = worker(config, Objective(tmp_path), study)
    shared.run_trials()  # before the fix: waits on the beatless trial until BoundedSleep gives up
    trials = shared.study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert retried_from(trials[1]) == 0


def test_a_trial_that_was_just_taken_is_not_stale_before_its_first_beat(tmp_path: Path) -> None:
    config = hpo(tmp_path, n_trials=1)
    storage = make_storage(config)
    study = optuna.create_study(study_name=config.study_name, storage=storage, direction="maximize")
    taken = study.ask()  # no heartbeat yet, started just now: alive
    fail_stale_trials(study)
    assert study.trials[taken.number].state == TrialState.RUNNING


def test_a_trial_that_kills_each_worker_is_retried_max_trial_retries_times_then_fails(tmp_path: Path) -> None:
    config = hpo(tmp_path, n_trials=1, max_trial_retries=2)
    storage = make_storage(config)
    study = optuna.create_study(study_name=config.study_name, storage=storage, direction="maximize")
    died_mid_trial(study, storage, tmp_path)
    for attempt in (1, 2):  # each retry is taken by a worker that dies in its turn
        fail_stale_trials(study)
        (queued,) = study.get_trials(states=(TrialState.WAITING,))
        assert retry_history(queued) == list(range(attempt))
        retry = study.ask()
        assert retry.number == queued.number
        storage.record_heartbeat(retry._trial_id)
        backdate(storage, retry._trial_id, 3600)
    fail_stale_trials(study)
    assert study.get_trials(states=(TrialState.WAITING,)) == [], "a third retry was queued"
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    # The study still ends: the trial counts once, as failed, and a worker finds nothing more to do.
    assert counted_trials(trials) == 1 == finished_trials(trials)
    objective = Objective(tmp_path)
    shared = worker(config, objective, study)
    shared.run_trials()
    assert objective.calls == [] and len(shared.study.trials) == 3


def test_past_the_timeout_a_worker_finishes_a_dead_workers_retry_starts_nothing_new_and_exits(
    tmp_path: Path,
) -> None:
    config = hpo(tmp_path, n_trials=3)
    storage = make_storage(config)
    study = optuna.create_study(study_name=config.study_name, storage=storage, direction="maximize")
    died_mid_trial(study, storage, tmp_path)
    study.enqueue_trial({"x": 0.25})  # queued for a first run: not started past the deadline
    objective = Objective(tmp_path)
    shared = worker(config, objective, study, clock=lambda: 100.0)
    shared.run_trials(deadline=50.0)  # before the fix: polled forever (BoundedSleep gives up)
    trials = shared.study.trials
    (retry,) = [t for t in trials if retried_from(t) == 0]
    assert retry.state == TrialState.COMPLETE, "a trial started before the deadline is finished"
    assert [call[0] for call in objective.calls] == [retry.number], "nothing new started after the deadline"
    assert [t.state for t in trials if t.state == TrialState.WAITING] == [TrialState.WAITING]


def test_a_worker_whose_trial_was_taken_over_stops_it_without_writing_and_goes_on(tmp_path: Path) -> None:
    config = hpo(tmp_path, n_trials=2)
    storage = make_storage(config)
    writes: list[int] = []

    def objective(
        trial: optuna.Trial, reported: set[int] | None = None, fence: Callable[[], None] | None = None
    ) -> float:
        assert fence is not None
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 0:
            # Paused past the grace period: meanwhile another worker failed the trial and queued its retry.
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        fence()  # what the checkpoint manager calls before a save
        writes.append(trial.number)
        return x

    shared = worker(config, objective)
    with captured_logs("dsm5_hpo.hpo") as logs:
        shared.run_trials()
    trials = shared.study.trials
    assert writes == [1], "trial 0 wrote nothing after it was taken over"
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.COMPLETE
    assert any("trial 0 stopped on this worker" in r.getMessage() for r in logs)


def test_a_trial_taken_over_between_the_last_check_and_tell_is_not_told(tmp_path: Path) -> None:
    config = hpo(tmp_path, n_trials=1)
    storage = make_storage(config)

    def objective(
        trial: optuna.Trial, reported: set[int] | None = None, fence: Callable[[], None] | None = None
    ) -> float:
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)  # after its last fence
        return trial.suggest_float("x", 0.0, 1.0)

    shared = worker(config, objective)
    shared.run_trials()  # before the fix: tell raised UpdateFinishedTrialError and the worker died
    assert [t.state for t in shared.study.trials] == [TrialState.FAIL]


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
