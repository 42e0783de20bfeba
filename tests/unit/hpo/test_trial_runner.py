"""hpo/trial_runner.py: one verdict per outcome of the objective, on every path a trial takes."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.errors import Interrupted, TrainingError, TrialTakenOver
from dsm5_hpo.hpo.trial_runner import long_lived_heap_frozen, run_trial


def objective_raising(error: BaseException | None, value: float = 0.5) -> Callable[..., float]:
    def objective(trial: optuna.Trial, reported: set[int] | None = None, fence: Any = None) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        if error is not None:
            raise error
        return value

    return objective


class Recorder:
    def __init__(self) -> None:
        self.ended: list[tuple[int, TrialState]] = []
        self.beats: list[str] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.ended.append((trial.number, trial.state))

    @contextlib.contextmanager
    def heartbeat(self, trial: optuna.Trial) -> Iterator[None]:
        self.beats.append("start")
        try:
            yield
        finally:
            self.beats.append("stop")


def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (None, TrialState.COMPLETE),
        (optuna.TrialPruned(), TrialState.PRUNED),
        (TrainingError("nan"), TrialState.FAIL),
    ],
)
def test_a_trial_that_ends_is_told_and_the_callbacks_run(
    error: BaseException | None, state: TrialState
) -> None:
    s, recorder = study(), Recorder()
    ended = run_trial(
        s, s.ask(), objective_raising(error), heartbeat=recorder.heartbeat, callbacks=[recorder]
    )
    assert ended is not None and ended.state == state and s.trials[0].state == state
    assert recorder.ended == [(0, state)] and recorder.beats == ["start", "stop"]
    if state == TrialState.COMPLETE:
        assert s.trials[0].value == 0.5


def test_an_unexpected_error_fails_the_trial_for_good_and_is_raised() -> None:
    s, recorder = study(), Recorder()
    with pytest.raises(KeyError):
        run_trial(
            s, s.ask(), objective_raising(KeyError("bug")), heartbeat=recorder.heartbeat, callbacks=[recorder]
        )
    # FAIL, not RUNNING: a resume would re-attach a RUNNING trial and crash on it again every time.
    assert (
        s.trials[0].state == TrialState.FAIL and recorder.ended == [] and recorder.beats == ["start", "stop"]
    )


def test_a_resumable_stop_leaves_the_trial_running_for_resume() -> None:
    s, recorder = study(), Recorder()
    with pytest.raises(Interrupted):
        run_trial(s, s.ask(), objective_raising(Interrupted("SIGTERM")), callbacks=[recorder])
    assert s.trials[0].state == TrialState.RUNNING and recorder.ended == []


def test_a_trial_taken_over_is_left_to_its_new_worker() -> None:
    s, recorder = study(), Recorder()
    ended = run_trial(s, s.ask(), objective_raising(TrialTakenOver("another worker")), callbacks=[recorder])
    assert ended is None and s.trials[0].state == TrialState.RUNNING and recorder.ended == []


def test_the_fence_is_checked_before_the_verdict_is_told() -> None:
    s = study()
    calls: list[str] = []

    def fence() -> None:
        calls.append("fence")
        if len(calls) > 0:
            raise TrialTakenOver("lost the lease")

    ended = run_trial(s, s.ask(), objective_raising(None), fence=fence)
    assert ended is None and calls == ["fence"] and s.trials[0].state == TrialState.RUNNING


def test_a_trial_finished_elsewhere_meanwhile_counts_as_taken_over() -> None:
    s = study()
    trial = s.ask()

    def objective(trial: optuna.Trial, reported: set[int] | None = None, fence: Any = None) -> float:
        s.tell(trial.number, state=TrialState.FAIL)  # another worker failed it between fence and tell
        return 1.0

    assert run_trial(s, trial, objective) is None
    assert s.trials[0].state == TrialState.FAIL


def test_a_re_attached_trial_gets_its_reported_epochs() -> None:
    s = study()
    seen: list[set[int] | None] = []

    def objective(trial: optuna.Trial, reported: set[int] | None = None, fence: Any = None) -> float:
        seen.append(reported)
        return 1.0

    run_trial(s, s.ask(), objective, reported={0, 1})
    assert seen == [{0, 1}]


def test_callbacks_get_their_own_copy_of_the_ended_trial() -> None:
    s = study()

    def meddle(study: optuna.Study, trial: FrozenTrial) -> None:  # as Optuna's retry does to its trial
        trial.system_attrs.setdefault("retry_history", []).append(trial.number)
        trial.user_attrs["seen"] = True

    run_trial(s, s.ask(), objective_raising(None), callbacks=[meddle])
    stored = s.get_trials(deepcopy=False)[0]
    assert "retry_history" not in stored.system_attrs and "seen" not in stored.user_attrs


def test_the_heap_alive_when_the_trials_start_is_frozen_until_they_end() -> None:
    import gc

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    freed: list[int] = []
    garbage = Cycle()
    weakref.finalize(garbage, freed.append, 1)
    del garbage  # cyclic garbage from before the trials: collected, not frozen for the study's lifetime
    before = gc.get_freeze_count()
    with long_lived_heap_frozen():
        assert freed == [1] and gc.get_freeze_count() > before
    assert gc.get_freeze_count() == before
