"""A trial's timing (hpo/trial_timing.py): the trainer's epoch timings through the run, set-up, start-up
and teardown from the attempt's instants, earlier attempts added up."""

from __future__ import annotations

from dsm5_hpo.hpo.trial_timing import AttemptClock, TimedRun, TrialTiming
from dsm5_hpo.tracking.tracker import NullRunTracker


def test_the_run_passes_everything_through_and_counts_the_epoch_timings() -> None:
    run, timing = NullRunTracker("r1"), TrialTiming()
    timed = TimedRun(run, timing)
    timed.log_metrics({"train_loss": 0.5}, step=10)  # a step's metrics: no timing in them
    timed.log_metrics({"epoch_seconds": 12.0, "val_seconds": 1.5, "val_joint_f1": 0.3}, step=0)
    timed.log_metrics({"epoch_seconds": 11.0, "val_seconds": None}, step=1)
    timed.set_tags({"precision": "bf16"})
    timed.finish("FINISHED")
    assert (timing.training_s, timing.evaluation_s) == (23.0, 1.5)
    assert timed.run_id == "r1" and run.tags == {"precision": "bf16"} and run.status == "FINISHED"
    assert ("epoch_seconds", 12.0, 0) in run.metrics and ("train_loss", 0.5, 10) in run.metrics


def test_set_up_start_up_and_teardown_come_from_the_attempt_instants() -> None:
    clock = AttemptClock(100.0, TrialTiming())
    clock.training_start(100.125)
    clock.first_step(101.25)
    clock.epoch_end(130.0)
    clock.epoch_end(160.0)
    timing = clock.end(161.5, after_epoch=True)
    assert (timing.setup_s, timing.startup_s, timing.teardown_s) == (0.125, 1.25, 1.5)


def test_an_attempt_that_never_stepped_or_ended_mid_epoch_has_no_start_up_or_teardown() -> None:
    clock = AttemptClock(100.0, TrialTiming())
    clock.training_start(None)  # failed before its first batch
    clock.first_step(None)
    assert clock.end(103.0, after_epoch=False) == TrialTiming()
    stopped = AttemptClock(0.0, TrialTiming())
    stopped.first_step(2.0)
    stopped.epoch_end(30.0)
    assert stopped.end(45.0, after_epoch=False).teardown_s is None  # stopped in its second epoch


def test_a_resumed_attempt_adds_to_what_the_earlier_ones_stored() -> None:
    earlier = {
        "training_s": 20.0,
        "evaluation_s": 2.0,
        "startup_s": 1.0,
        "teardown_s": None,
    }  # no setup_s: older
    clock = AttemptClock(0.0, TrialTiming.from_dict(earlier))
    assert clock.timing.startup_s is None  # this attempt's own, once it steps
    clock.training_start(0.25)
    TimedRun(NullRunTracker(), clock.timing).log_metrics({"epoch_seconds": 5.0, "val_seconds": 0.5}, step=2)
    clock.first_step(0.75)
    clock.epoch_end(6.0)
    stored = clock.end(6.25, after_epoch=True).as_dict()
    assert stored == {
        "training_s": 25.0,
        "evaluation_s": 2.5,
        "setup_s": 0.25,
        "startup_s": 0.75,
        "teardown_s": 0.25,
    }
    assert TrialTiming.from_dict(stored).as_dict() == stored


def test_unreadable_stored_timings_count_as_nothing() -> None:
    assert TrialTiming.from_dict(None) == TrialTiming() == TrialTiming.from_dict("fast")
    odd = TrialTiming.from_dict({"training_s": "1", "evaluation_s": float("nan"), "startup_s": True})
    assert odd == TrialTiming()
    assert TrialTiming.from_dict({"training_s": -3}).training_s == 0.0
