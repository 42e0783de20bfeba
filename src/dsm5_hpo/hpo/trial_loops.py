"""How a study process runs its trials: in this process, one after another, or one at a time per
device (hpo.devices), each in a process of its own.

In-process (hpo.trial_isolation=none, one device): :func:`run_in_process`, on the main thread, where
the signals arrive as Interrupted inside the trial itself.

Per device: each slot is a thread of the study process that runs one trial process at a time on its device
(hpo/isolation.py), so the study stays one process that knows every trial's end at once: no
heartbeats or dead-worker detection are needed on one host, and the final evaluation and summary are
the study's, once. Asking Optuna for a trial, sampling its parameters and the after-trial callbacks
(progress, retention, the summary) take one lock: the sampler and the study cap are not thread-safe.

Exactly hpo.n_trials: the count and the ask happen under that lock; a killed trial's retry (queued by
:class:`~dsm5_hpo.hpo.isolation.RetryKilledTrial`) replaces its original in the count. A resumed study
first re-attaches the trials that were running, one per slot.

SIGINT/SIGTERM reach the main thread, which waits here: every slot's trial process is told to stop
(resumably), the threads end, and the first stop is raised again.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.config import HPOConfig, StudyConfig
from dsm5_hpo.errors import Interrupted
from dsm5_hpo.hpo.devices import DeviceSlot, resolve_devices
from dsm5_hpo.hpo.isolation import IsolatedObjective, trial_context
from dsm5_hpo.hpo.trial_runner import AfterTrial, TrialObjective, run_trial
from dsm5_hpo.hpo.workers import SharedWorker, trials_that_count, worker_id
from dsm5_hpo.tracking.tracker import Tracker

logger = logging.getLogger(__name__)

JOIN_POLL_S = 0.2


def started_count(trials: Sequence[FrozenTrial]) -> int:
    """Trials toward hpo.n_trials that have started (a queued retry counts once it runs, in place of
    its original; a queued first run, the config's own trial, counts once it starts too)."""
    return sum(1 for t in trials_that_count(trials) if t.state != TrialState.WAITING)


def run_in_process(
    study: optuna.Study,
    objective: TrialObjective,
    callbacks: Sequence[AfterTrial],
    *,
    n_trials: int,
    deadline: float | None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Trials a dead process left RUNNING first (in trial-number order), then new ones up to n_trials."""
    for frozen in sorted(study.get_trials(states=(TrialState.RUNNING,)), key=lambda t: t.number):
        logger.info("trial %d was running when the study stopped: continuing it", frozen.number)
        trial = optuna.trial.Trial(study, frozen._trial_id)
        run_trial(study, trial, objective, reported=set(frozen.intermediate_values), callbacks=callbacks)
    # A queued trial (the config's own) is one of the n_trials to run, not one done. Like Optuna's
    # optimize(timeout=...), no trial starts past the deadline; a running one finishes.
    while started_count(study.get_trials(deepcopy=False)) < n_trials:
        if deadline is not None and clock() >= deadline:
            logger.info("hpo.timeout_s reached: no further trial starts; `make resume` runs the rest")
            break
        run_trial(study, study.ask(), objective, callbacks=callbacks)


class DevicePool:
    """Runs a study's trials on ``objectives`` (one per device slot) until it has ``n_trials``."""

    def __init__(
        self,
        study: optuna.Study,
        objectives: Sequence[IsolatedObjective],
        callbacks: Sequence[AfterTrial],
        *,
        n_trials: int,
        lock: threading.Lock,
        stop: threading.Event,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study = study
        self.objectives = objectives
        self.callbacks = locked(callbacks, lock)
        self.n_trials = n_trials
        self.lock = lock
        self.stop = stop
        self.deadline = deadline
        self.clock = clock
        # Trials a dead study process left RUNNING continue first, in trial-number order.
        self._reattach = sorted(
            study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), key=lambda t: t.number
        )
        self._timed_out = False

    def _next(self) -> tuple[optuna.Trial, set[int] | None] | None:
        with self.lock:
            if self.stop.is_set():
                return None
            if self._reattach:
                frozen = self._reattach.pop(0)
                logger.info("trial %d was running when the study stopped: continuing it", frozen.number)
                return optuna.trial.Trial(self.study, frozen._trial_id), set(frozen.intermediate_values)
            # Like Optuna's optimize(timeout=...), no trial starts past the deadline; a running one finishes.
            if self.deadline is not None and self.clock() >= self.deadline:
                if not self._timed_out:
                    logger.info("hpo.timeout_s reached: no further trial starts; `make resume` runs the rest")
                    self._timed_out = True
                return None
            if started_count(self.study.get_trials(deepcopy=False)) >= self.n_trials:
                return None
            return self.study.ask(), None

    def _slot(self, objective: IsolatedObjective) -> None:
        while (work := self._next()) is not None:
            trial, reported = work
            run_trial(self.study, trial, objective, reported=reported, callbacks=self.callbacks)

    def run(self) -> None:
        run_in_threads(
            [
                (objective.slot.name, functools.partial(self._slot, objective))
                for objective in self.objectives
            ],
            self.stop,
        )


def locked(callbacks: Sequence[AfterTrial], lock: threading.Lock) -> list[AfterTrial]:
    """The callbacks, each run under ``lock`` (the slots' trials end on their own threads)."""

    def wrap(callback: AfterTrial) -> AfterTrial:
        def call(study: optuna.Study, trial: FrozenTrial) -> None:
            with lock:
                callback(study, trial)

        return call

    return [wrap(callback) for callback in callbacks]


def stoppable_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A shared worker's wait that ends the worker (resumably) once the study stops."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted("stopped with the study")

    return sleep


def run_in_threads(loops: Sequence[tuple[str, Callable[[], None]]], stop: threading.Event) -> None:
    """Run each slot's loop on a thread of its own until all end. Signals reach the main thread, which
    waits here: it sets ``stop`` (every slot stops its trial process, resumably) and raises the first
    stop once the threads have ended; a slot's error stops the others the same way and is raised."""
    errors: list[BaseException] = []

    def guarded(loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as error:  # noqa: BLE001 - carried to the main thread, which raises it
            errors.append(error)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(loop,), name=f"dsm5-slot-{name}") for name, loop in loops
    ]
    for thread in threads:
        thread.start()
    interrupted: Interrupted | None = None
    while any(thread.is_alive() for thread in threads):
        try:
            for thread in threads:
                thread.join(JOIN_POLL_S)
        except Interrupted as signal_stop:
            if interrupted is None:
                interrupted = signal_stop
                logger.warning("%s: stopping every running trial where it is", signal_stop)
            stop.set()
    if interrupted is not None:
        raise interrupted
    if errors:
        raise errors[0]


def host_slots(config: StudyConfig) -> list[DeviceSlot]:
    """hpo.devices on this host: the GPUs torch sees, the cores this process may use."""
    return resolve_devices(
        config,
        cuda_count=torch.cuda.device_count(),
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def isolated_objectives(
    config: StudyConfig,
    slots: Sequence[DeviceSlot],
    *,
    study_id: str,
    storage: str,
    study_name: str,
    study_run_id: str,
    tracker: Tracker,
    checkpointing: bool,
    progress: bool | None,
    lock: threading.Lock,
    stop: threading.Event,
    study_dir: Path | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
) -> list[IsolatedObjective]:
    """One objective per slot, sharing the sampling lock, the stop event and the process context."""
    context = trial_context(config.hpo.trial_start_method, study_dir)
    return [
        IsolatedObjective(
            config=config,
            study_id=study_id,
            storage=storage,
            study_name=study_name,
            study_run_id=study_run_id,
            tracker=tracker,
            slot=slot,
            context=context,
            checkpointing=checkpointing,
            progress=progress,
            concurrent=len(slots),
            sampling=lock,
            stop=stop,
            epoch_hook=epoch_hook,
        )
        for slot in slots
    ]


def drive_trials(
    study: optuna.Study,
    config: HPOConfig,
    objective: TrialObjective | None,
    isolated: Sequence[IsolatedObjective],
    callbacks: Sequence[AfterTrial],
    *,
    shared_storage: RDBStorage | None,
    deadline: float | None,
    lock: threading.Lock,
    stop: threading.Event,
    sleep: Callable[[float], None],
) -> SharedWorker | None:
    """Run the study's trials: in this process (``objective``) or in processes of their own, one slot
    per device (``isolated``); as this process's own study, or as worker(s) of a shared one. Returns the
    shared study's worker that may claim its final evaluation (None: the study is this process's)."""
    if shared_storage is not None:
        slots: Sequence[TrialObjective] = list(isolated) if isolated else [_given(objective)]
        several = len(slots) > 1
        workers = [
            SharedWorker(
                study,
                shared_storage,
                config,
                each,
                locked(callbacks, lock) if several else callbacks,
                sleep=stoppable_sleep(stop) if several else sleep,
                worker=f"{worker_id()}/{each.slot.name}"
                if several and isinstance(each, IsolatedObjective)
                else None,
            )
            for each in slots
        ]
        if several:
            run_in_threads([(w.worker, functools.partial(w.run_trials, deadline)) for w in workers], stop)
        else:
            workers[0].run_trials(deadline=deadline)
        return workers[0]
    if isolated:
        DevicePool(
            study, isolated, callbacks, n_trials=config.n_trials, lock=lock, stop=stop, deadline=deadline
        ).run()
    else:
        run_in_process(study, _given(objective), callbacks, n_trials=config.n_trials, deadline=deadline)
    return None


def _given(objective: TrialObjective | None) -> TrialObjective:
    if objective is None:
        raise ValueError("drive_trials needs the in-process objective when no slot runs trials in processes")
    return objective
