"""One trial from start to Optuna's verdict, the same way for every path a trial can take.

New trials of a local study, trials re-attached after a crash (resume), and the trials of a shared
study's workers all run through :func:`run_trial` (as Optuna's own ``_optimize._run_trial`` is one
function), so that what an outcome does is decided in one place:

=====================  ============================================================  ==========
the objective...       Optuna is told                                                 then
=====================  ============================================================  ==========
returns a value        COMPLETE with the value                                        callbacks
raises TrialPruned     PRUNED                                                         callbacks
raises TrainingError   FAIL (the trial's own failure: a non-finite loss, a model      callbacks,
                       that cannot load); the study goes on                           next trial
raises another         FAIL (a bug or an unexpected environment error: a FAIL is      re-raised
Exception              final, a trial left RUNNING would be re-attached and crash
                       again on every resume)
raises ResumableStop   nothing: the trial stays RUNNING, and `make resume` (or         re-raised
                       another worker) continues it from its last checkpoint
raises TrialTakenOver  nothing: another worker owns the trial now                     next trial
=====================  ============================================================  ==========

The heartbeat (shared studies) is a context manager around the objective, with a null version for a
study of one process. The after-trial work (progress and ETA, retention, the summary) is a list of
callbacks with Optuna's callback signature, run once the trial has ended.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.errors import TrainingError, TrialTakenOver

logger = logging.getLogger(__name__)

AfterTrial = Callable[[optuna.Study, FrozenTrial], None]
"""Optuna's callback signature: the study, and the trial that just ended."""
HeartbeatFactory = Callable[[optuna.Trial], contextlib.AbstractContextManager[object]]


class TrialObjective(Protocol):
    def __call__(
        self, trial: optuna.Trial, reported: set[int] | None = None, fence: Callable[[], None] | None = None
    ) -> float: ...


def no_heartbeat(trial: optuna.Trial) -> contextlib.AbstractContextManager[object]:
    """The heartbeat of a study that one process drives (its lock file says it is alive)."""
    return contextlib.nullcontext()


def _no_fence() -> None:
    return None


@contextlib.contextmanager
def long_lived_heap_frozen() -> Iterator[None]:
    """While the trials run, what is alive at their start (the imported libraries, the study's data,
    tokenizer and windows) is out of the cyclic garbage collector's sight (``gc.freeze``): it lives as
    long as the study, and the full collection after each trial (and the automatic ones during training)
    then walks only what the trials made (MiniLM, one core: 0.61-0.68 s after each trial before,
    0.15 s with it). Handed back at the end (``gc.unfreeze``), so that a process running several
    studies (the tests) still collects what one leaves behind."""
    gc.collect()  # garbage made so far is freed now, not frozen for the study's lifetime
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: TrialObjective,
    *,
    reported: set[int] | None = None,
    fence: Callable[[], None] = _no_fence,
    heartbeat: HeartbeatFactory = no_heartbeat,
    callbacks: Sequence[AfterTrial] = (),
) -> FrozenTrial | None:
    """Run ``trial`` and tell Optuna how it ended (table above); the ended trial, or None when it was
    taken over by another worker. ``reported``: steps Optuna holds values for (a re-attached trial);
    ``fence`` raises TrialTakenOver when the trial is no longer this worker's, and is checked before
    telling Optuna too."""

    def tell(value: float | None = None, state: TrialState | None = None) -> None:
        fence()
        try:
            study.tell(trial, value, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
            # Finished by another worker after the fence: Optuna says "Cannot tell a FAIL trial"
            # (ValueError) or, in a closer race, UpdateFinishedTrialError. Any other ValueError is ours.
            if not trial.storage.get_trial(trial._trial_id).state.is_finished():
                raise
            raise TrialTakenOver(f"trial {trial.number} was finished by another worker ({error})") from error

    try:
        with heartbeat(trial):
            try:
                value = objective(trial, reported=reported, fence=fence)
            except optuna.TrialPruned:
                tell(state=TrialState.PRUNED)
            except TrainingError as error:
                logger.error("trial %d failed: %s", trial.number, error)
                tell(state=TrialState.FAIL)
            except Exception:
                tell(state=TrialState.FAIL)
                raise
            else:
                tell(value)
    except TrialTakenOver as taken:
        logger.warning(
            "trial %d stopped on this worker, without writing anything more into its folder or MLflow "
            "run: %s; going on with the next trial",
            trial.number,
            taken,
        )
        return None
    gc.collect()  # as Optuna's gc_after_trial: a trial's model and optimizer go before the next one
    # A copy of this one trial (a callback may change what it is given: Optuna's retry does), not of all
    # of them (study.trials deep-copies every trial: 0.15 s with 1000 trials).
    ended = copy.deepcopy(study.get_trials(deepcopy=False)[trial.number])
    for callback in callbacks:
        callback(study, ended)
    return ended
