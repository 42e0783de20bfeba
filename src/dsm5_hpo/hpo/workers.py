"""Several workers on one study through a shared Optuna storage (hpo.storage = a database URL).

Optuna's database storage is how Optuna distributes: every worker asks the same study for trials.
What this module adds so that a week-long study on several machines behaves like one process:

- **Exactly hpo.n_trials.** Counting the trials and asking for a new one happen under one lock held
  in the database (PostgreSQL advisory lock; a lock file for SQLite), so two workers never both take
  "the last" trial.
- **Dead workers.** Each running trial records a heartbeat (hpo/heartbeats.py). A trial silent for
  hpo.heartbeat_grace_s, or taken and never beating, belongs to a dead worker: Optuna marks it FAIL and
  :class:`RequeueStaleTrial` (Optuna's retry callback) queues it again with the same params, trial
  folder and MLflow run, so whichever worker takes it continues from its last checkpoint when the folder
  is shared, or starts it again when it is not; at most hpo.max_trial_retries times, so a trial that
  kills every worker it runs on fails for good. A FAIL that was queued again does not count toward
  n_trials.
- **A worker taken for dead that was not** (paused, cut off): before each checkpoint, each epoch's
  report and the final ``tell`` it checks that its trial is still RUNNING (:class:`TrialLease`); when
  it is not, it stops the trial without writing into the folder the retry now uses, and goes on.
- **hpo.timeout_s** ends the starting of new trials. A trial queued again for a dead worker was started
  before the deadline, so it is still finished (as a running trial would be); nothing else keeps a worker
  waiting past the deadline but the trials still running on the others.
- **One final evaluation.** The first worker to see every trial finished claims it in the study (under
  the lock), provided it can read the best trial's checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.config import HPOConfig
from dsm5_hpo.errors import TrialTakenOver
from dsm5_hpo.hpo.database import RetryingStorage, open_storage, storage_lock
from dsm5_hpo.hpo.heartbeats import WORKER, Heartbeat
from dsm5_hpo.hpo.trial_folders import trial_dir_of
from dsm5_hpo.hpo.trial_runner import AfterTrial, TrialObjective, run_trial
from dsm5_hpo.layout import TrialPaths

logger = logging.getLogger(__name__)

__all__ = ["WORKER", "Heartbeat"]  # re-exported: where the shared study's users look for them
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


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials this one retries, oldest first (empty for a first attempt): Optuna's
    own record, kept in the trial's system attrs by its retry callback."""
    history = trial.system_attrs.get("retry_history", [])
    return [int(number) for number in history] if isinstance(history, list) else []


def retried_from(trial: FrozenTrial) -> int | None:
    """The trial this one was queued again for (the last in its retry history), or None."""
    history = retry_history(trial)
    return history[-1] if history else None


class RequeueStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker died (same params, user attrs, so the same folder and
    MLflow run, and its reported steps), at most ``max_retry`` times, saying which it did."""

    def __init__(self, max_retry: int) -> None:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8, and the documented way to retry
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry, inherit_intermediate_values=True)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        attempts = len(retry_history(trial)) + 1  # this one included
        worker = trial.user_attrs.get(WORKER, "?")
        if attempts > self.max_retry:
            logger.error(
                "trial %d lost its worker %s, the %d%s time this trial did: it fails for good (hpo.max_trial_retries"
                "=%d); its own log and the worker's log say what killed it (out of memory is the usual cause)",
                trial.number,
                worker,
                attempts,
                {1: "st", 2: "nd", 3: "rd"}.get(attempts, "th"),
                self.max_retry,
            )
            return
        super().__call__(study, trial)
        logger.warning(
            "trial %d had no heartbeat for longer than the grace period (its worker %s died): queued again "
            "(retry %d of at most %d), to continue from its last checkpoint where its folder is visible",
            trial.number,
            worker,
            attempts,
            self.max_retry,
        )


def make_storage(config: HPOConfig, *, sleep: Callable[[float], None] = time.sleep) -> RetryingStorage:
    """The worker's one connection pool to the shared study, for its whole run; a dead worker's trial
    found by :func:`fail_stale_trials` is queued again (:class:`RequeueStaleTrial`)."""
    return open_storage(config, stale_trial_callback=RequeueStaleTrial(config.max_trial_retries), sleep=sleep)


def trials_that_count(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials toward hpo.n_trials: all but the failures of dead workers that were queued again
    (their re-queued copy counts in their place)."""
    requeued = {number for t in trials for number in retry_history(t)}
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in requeued)]


def counted_trials(trials: Sequence[FrozenTrial]) -> int:
    return len(trials_that_count(trials))


def finished_trials(trials: Sequence[FrozenTrial]) -> int:
    """Counted trials that ended (a dead worker's trial counts once, when its re-queued copy ends)."""
    return sum(1 for t in trials_that_count(trials) if t.state.is_finished())


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of dead workers FAIL; :class:`RequeueStaleTrial` queues each again."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and still the documented way
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class TrialLease:
    """Whether this worker still holds its trial: RUNNING in the database. A worker taken for dead (its
    heartbeats stopped past the grace period) finds its trial FAIL there, its retry on another worker."""

    def __init__(self, storage: RDBStorage, trial: optuna.Trial) -> None:
        self._storage = storage
        self._trial_id = trial._trial_id
        self._number = trial.number

    def check(self) -> None:
        """Raise TrialTakenOver when the trial is no longer this worker's (one read of the trial)."""
        state = self._storage.get_trial(self._trial_id).state
        if state != TrialState.RUNNING:
            raise TrialTakenOver(
                f"trial {self._number} is {state.name} in the study database: its heartbeats stopped for "
                "longer than hpo.heartbeat_grace_s (was this process paused or cut off?), so another worker "
                "runs its retry in the same folder"
            )


class SharedWorker:
    """Runs trials of a shared study one at a time, until the study has hpo.n_trials and none is left
    running (a dead worker's trial is taken over), then says whether this worker evaluates the study."""

    def __init__(
        self,
        study: optuna.Study,
        storage: RDBStorage,
        config: HPOConfig,
        objective: TrialObjective,
        callbacks: Sequence[AfterTrial],
        *,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
        worker: str | None = None,
    ) -> None:
        self.study = study
        self.storage = storage
        self.config = config
        self.objective = objective
        self.callbacks = callbacks
        self.sleep = sleep
        self.clock = clock
        self.worker = worker or worker_id()
        """Who runs its trials (hpo.devices: one worker per device slot of this process)."""

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return storage_lock(self.storage, self.config.storage, self.config.study_name)

    def _next_trial(self, deadline: float | None) -> optuna.Trial | None:
        """A queued trial (a dead worker's), else a new one while the study is short of n_trials; past
        the deadline, only a dead worker's trial (started before it, so finished as a running one is)."""
        with self._lock():
            trials = self.study.get_trials(deepcopy=False)
            if self._timed_out(deadline):
                trial = self._take_retry(trials)
            elif (
                any(t.state == TrialState.WAITING for t in trials)
                or counted_trials(trials) < self.config.n_trials
            ):
                with warnings.catch_warnings():  # Optuna: "heartbeat is supposed to be used with optimize";
                    warnings.simplefilter("ignore", UserWarning)  # this loop beats itself (Heartbeat below)
                    trial = self.study.ask()  # pops a queued trial first
            else:
                trial = None
            if trial is None:
                return None
            # Alive from this moment. A kill before this beat leaves a trial that never beat: the storage
            # counts it stale once it started longer ago than the grace period (hpo/heartbeats.py).
            self.storage.record_heartbeat(trial._trial_id)
            trial.set_user_attr(WORKER, self.worker)
            return trial

    def _timed_out(self, deadline: float | None) -> bool:
        return deadline is not None and self.clock() >= deadline

    def _take_retry(self, trials: Sequence[FrozenTrial]) -> optuna.Trial | None:
        """Take a queued retry of a dead worker's trial, not a trial queued for a first run."""
        for frozen in trials:
            if frozen.state != TrialState.WAITING or not retry_history(frozen):
                continue
            try:
                if self.storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    return optuna.trial.Trial(self.study, frozen._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker took it and finished it meanwhile
        return None

    def _run(self, trial: optuna.Trial) -> None:
        lease = TrialLease(self.storage, trial)
        run_trial(
            self.study,
            trial,
            self.objective,
            reported=set(self.storage.get_trial(trial._trial_id).intermediate_values),
            fence=lease.check,
            heartbeat=lambda t: Heartbeat(self.storage, t._trial_id, self.config.heartbeat_interval_s),
            callbacks=self.callbacks,
        )

    def run_trials(self, deadline: float | None = None) -> None:
        while True:
            fail_stale_trials(self.study)  # dead workers' trials go back to the queue
            trial = self._next_trial(deadline)
            if trial is not None:
                self._run(trial)
                continue
            trials = self.study.get_trials(deepcopy=False)
            timed_out = self._timed_out(deadline)
            # Past the deadline, a trial queued for a first run keeps no one waiting: no one starts it.
            pending = [
                t
                for t in trials
                if t.state == TrialState.RUNNING
                or (t.state == TrialState.WAITING and (retry_history(t) or not timed_out))
            ]
            if not pending:
                unstarted = sum(t.state == TrialState.WAITING for t in trials)
                if unstarted:
                    logger.info(
                        "hpo.timeout_s reached: %d queued trial(s) not started; a worker started again "
                        "with the same command runs them",
                        unstarted,
                    )
                return
            # Other workers are still at it; wait, to take over a trial whose worker dies.
            logger.info(
                "no trial left to start; waiting for %d running on other workers (%s)",
                len(pending),
                ", ".join(f"{t.number}: {t.user_attrs.get(WORKER, '?')}" for t in pending),
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
            folder = trial_dir_of(best)
            if folder is None or not TrialPaths(folder).checkpoints.is_dir():
                logger.warning(
                    "the best trial %d ran on %s and its checkpoints are not visible here; that worker (or "
                    "`make evaluate` on its machine) evaluates the study",
                    best.number,
                    best.user_attrs.get(WORKER, "another machine"),
                )
                return False
            self.study.set_user_attr(FINAL_EVALUATION, self.worker)
            return True

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """While this worker evaluates and exports the study's best model: heartbeats on the best trial,
        so that `make status` and `make cleanup` elsewhere see the study driven (no trial runs then)."""
        try:
            best = self.study.best_trial
        except ValueError:  # no completed trial: nothing is evaluated
            yield
            return
        with Heartbeat(self.storage, best._trial_id, self.config.heartbeat_interval_s):
            yield
