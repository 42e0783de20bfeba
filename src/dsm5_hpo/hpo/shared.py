"""Several workers on one study through a shared Optuna storage (hpo.storage = a database URL).

Optuna's database storage is how Optuna distributes: every worker asks the same study for trials.
What this module adds so that a week-long study on several machines behaves like one process:

- **Exactly hpo.n_trials.** Counting the trials and asking for a new one happen under one lock held
  in the database (PostgreSQL advisory lock; a lock file for SQLite), so two workers never both take
  "the last" trial.
- **Dead workers.** Each running trial records a heartbeat. A trial silent for hpo.heartbeat_grace_s
  belongs to a dead worker: Optuna marks it FAIL and :func:`requeue_stale_trial` queues it again with
  the same params and the same trial folder and MLflow run, so whichever worker takes it continues from
  its last checkpoint when the folder is shared, or starts it again when it is not. A FAIL that was
  queued again does not count toward n_trials.
- **One final evaluation.** The first worker to see every trial finished claims it in the study (under
  the lock), provided it can read the best trial's checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.config import HPOConfig
from dsm5_hpo.errors import StorageUnavailable, TrainingError
from dsm5_hpo.hpo.database import RetryingStorage, open_storage, storage_lock

logger = logging.getLogger(__name__)

RETRY_OF = "retry_of"
"""User attr of a trial queued again for a dead worker's trial: that trial's number."""
WORKER = "worker"
"""User attr: the worker (host:pid) that ran the trial last."""
FINAL_EVALUATION = "final_evaluation"
"""Study user attr: the worker that claimed the study's test evaluation."""
WAIT_POLL_S = 2.0
"""How often a worker with nothing to start looks again (for a queued trial, or the end of the study)."""
_NAMESPACE = uuid.UUID("8a0c5f52-7e0f-4d8e-9a53-1f0b7f0d3c11")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def shared_study_id(storage: str, study_name: str) -> str:
    """The study's id, the same on every worker: derived from the storage URL and the study name."""
    return str(uuid.uuid5(_NAMESPACE, f"{storage}#{study_name}"))


def requeue_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's failed-trial callback for a trial whose worker died: queue it again, same everything."""
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**trial.user_attrs, RETRY_OF: trial.number},
            intermediate_values=trial.intermediate_values,
        )
    )
    logger.warning(
        "trial %d had no heartbeat for longer than the grace period (its worker %s died): queued again, "
        "to continue from its last checkpoint where its folder is visible",
        trial.number,
        trial.user_attrs.get(WORKER, "?"),
    )


def make_storage(config: HPOConfig, *, sleep: Callable[[float], None] = time.sleep) -> RetryingStorage:
    """The worker's one connection pool to the shared study, for its whole run; a dead worker's trial
    found by :func:`fail_stale_trials` is queued again (:func:`requeue_stale_trial`)."""
    return open_storage(config, stale_trial_callback=requeue_stale_trial, sleep=sleep)


def trials_that_count(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials toward hpo.n_trials: all but the failures of dead workers that were queued again
    (their re-queued copy counts in their place)."""
    requeued = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in requeued)]


def counted_trials(trials: Sequence[FrozenTrial]) -> int:
    return len(trials_that_count(trials))


def finished_trials(trials: Sequence[FrozenTrial]) -> int:
    """Counted trials that ended (a dead worker's trial counts once, when its re-queued copy ends)."""
    return sum(1 for t in trials_that_count(trials) if t.state.is_finished())


class Heartbeat:
    """Records the trial's heartbeat every interval until the block ends (a daemon thread)."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval_s: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dsm5-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self._storage.record_heartbeat(self._trial_id)
            except (Exception, StorageUnavailable) as error:  # noqa: BLE001 - the next beat tries again;
                # the trial goes on, and the main thread stops the worker if the database stays away
                logger.warning("cannot record the heartbeat of trial id %d: %s", self._trial_id, error)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of dead workers FAIL; :func:`requeue_stale_trial` queues each again."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and still the documented way
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class SharedWorker:
    """Runs trials of a shared study one at a time, until the study has hpo.n_trials and none is left
    running (a dead worker's trial is taken over), then says whether this worker evaluates the study."""

    def __init__(
        self,
        study: optuna.Study,
        storage: RDBStorage,
        config: HPOConfig,
        objective: Callable[..., float],
        after_trial: Callable[[optuna.Study, FrozenTrial], None],
        *,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study = study
        self.storage = storage
        self.config = config
        self.objective = objective
        self.after_trial = after_trial
        self.sleep = sleep
        self.clock = clock
        self.worker = worker_id()

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return storage_lock(self.storage, self.config.storage, self.config.study_name)

    def _next_trial(self, deadline: float | None) -> optuna.Trial | None:
        """A queued trial (a dead worker's), else a new one while the study is short of n_trials."""
        with self._lock():
            trials = self.study.get_trials(deepcopy=False)
            queued = any(t.state == TrialState.WAITING for t in trials)
            timed_out = deadline is not None and self.clock() >= deadline
            if timed_out or not (queued or counted_trials(trials) < self.config.n_trials):
                return None
            with warnings.catch_warnings():  # Optuna: "heartbeat is supposed to be used with optimize";
                warnings.simplefilter("ignore", UserWarning)  # this loop beats itself (Heartbeat below)
                trial = self.study.ask()  # pops a queued trial first
            # Alive from this moment: a worker killed before its first beat would leave a trial no one
            # ever sees as stale.
            self.storage.record_heartbeat(trial._trial_id)
            trial.set_user_attr(WORKER, self.worker)
            return trial

    def _run(self, trial: optuna.Trial) -> None:
        reported = set(self.storage.get_trial(trial._trial_id).intermediate_values)
        with Heartbeat(self.storage, trial._trial_id, self.config.heartbeat_interval_s):
            try:
                value = self.objective(trial, reported=reported)
            except optuna.TrialPruned:
                self.study.tell(trial, state=TrialState.PRUNED)
            except TrainingError as error:
                logger.error("trial %d failed: %s", trial.number, error)
                self.study.tell(trial, state=TrialState.FAIL)
            except Exception:
                self.study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                self.study.tell(trial, value)
        self.after_trial(self.study, self.study.trials[trial.number])

    def run_trials(self, deadline: float | None = None) -> None:
        while True:
            fail_stale_trials(self.study)  # dead workers' trials go back to the queue
            trial = self._next_trial(deadline)
            if trial is not None:
                self._run(trial)
                continue
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
            if not running:
                return
            # Other workers are still at it; wait, to take over a trial whose worker dies.
            logger.info(
                "no trial left to start; waiting for %d running on other workers (%s)",
                len(running),
                ", ".join(f"{t.number}: {t.user_attrs.get(WORKER, '?')}" for t in running),
            )
            # Short polls: the last trial of a peer usually ends long before its worker could be declared dead.
            self.sleep(min(self.config.heartbeat_interval_s, WAIT_POLL_S))

    def claim_final_evaluation(self, checkpointing: bool) -> bool:
        """True for the one worker that evaluates the study on test: the first to ask that can read the
        best trial's checkpoints (its folder may live on another machine)."""
        if not checkpointing:
            return True  # nothing to evaluate; every worker reports its outcome
        with self._lock():
            self.study = optuna.load_study(study_name=self.study.study_name, storage=self.storage)
            claimed = self.study.user_attrs.get(FINAL_EVALUATION)
            if claimed:
                return False
            try:
                best = self.study.best_trial
            except ValueError:  # no completed trial: _finish says so, on this worker
                return True
            if not (Path(str(best.user_attrs.get("trial_dir", ""))) / "checkpoints").is_dir():
                logger.warning(
                    "the best trial %d ran on %s and its checkpoints are not visible here; that worker (or "
                    "`make evaluate` on its machine) evaluates the study",
                    best.number,
                    best.user_attrs.get(WORKER, "another machine"),
                )
                return False
            self.study.set_user_attr(FINAL_EVALUATION, self.worker)
            return True
