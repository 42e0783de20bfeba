"""The study process's side of trials in their own processes, without starting one: exit reasons, the
last ERROR of a trial's log, the retry of a killed trial, the count toward n_trials, the watch on the
study process, and the trial process's signal handling."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dsm5_hpo.errors import Interrupted
from dsm5_hpo.hpo.trial_failures import KILLED_ATTR, RetryKilledTrial, describe_exit, last_log_error
from dsm5_hpo.hpo.trial_loops import started_count
from dsm5_hpo.hpo.trial_process import interrupts_raise, watch_parent
from dsm5_hpo.hpo.workers import retry_history


def test_exit_reasons_name_the_signal_and_its_usual_cause() -> None:
    assert describe_exit(-signal.SIGSEGV).startswith("killed by SIGSEGV (a crash in native code")
    assert "OOM killer" in describe_exit(-signal.SIGKILL)
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(None) == "did not exit"


def test_the_last_error_of_a_trial_log_is_found_past_later_lines_and_garbage(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [
        {"level": "ERROR", "message": "first"},
        {"level": "INFO", "message": "x"},
        {"level": "ERROR", "message": "CUDA out of memory"},
        {"level": "INFO", "message": "y"},
    ]
    (logs / "trial.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n{torn")
    assert last_log_error(tmp_path) == "CUDA out of memory"
    assert last_log_error(tmp_path / "nowhere") is None and last_log_error(None) is None


def _failed(study: optuna.Study, *, killed: bool) -> optuna.trial.FrozenTrial:
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("trial_dir", "/exp/trial_a")
    if killed:
        trial.set_user_attr(KILLED_ATTR, "trial process killed by SIGKILL")
    study.tell(trial, state=TrialState.FAIL)
    return study.trials[trial.number]


def test_a_killed_trial_is_queued_again_at_most_max_retry_times_and_an_exception_never() -> None:
    study = optuna.create_study()
    retry = RetryKilledTrial(max_retry=1)
    retry(study, _failed(study, killed=False))
    assert len(study.trials) == 1  # its own exception: not retried
    first = _failed(study, killed=True)
    retry(study, first)
    queued = study.trials[-1]
    assert queued.state == TrialState.WAITING and retry_history(queued) == [first.number]
    assert queued.params == first.params and queued.user_attrs["trial_dir"] == "/exp/trial_a"
    again = study.ask()  # the retry runs, and dies too
    assert again.number == queued.number
    study.tell(again, state=TrialState.FAIL)
    retry(study, study.trials[again.number])
    assert len(study.trials) == 3  # max_retry reached: fails for good


def test_a_queued_retry_stands_in_for_its_original_in_the_count() -> None:
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    RetryKilledTrial(max_retry=2)(study, _failed(study, killed=True))
    trials = study.get_trials(deepcopy=False)
    assert started_count(trials) == 1  # the killed original no longer counts; its retry has not started
    study.tell(study.ask(), 2.0)
    assert started_count(study.get_trials(deepcopy=False)) == 2


def test_the_watch_stops_the_trial_when_the_study_process_dies_then_kills_it_if_it_lingers() -> None:
    answers, calls = iter([True, True, False]), []
    watch_parent(
        1234,
        alive=lambda pid: next(answers),
        stop=lambda: calls.append("stop"),
        kill=lambda: calls.append("kill"),
        sleep=lambda s: calls.append(f"sleep {s:g}"),
        grace_s=2.0,
    )
    assert calls == ["sleep 1", "sleep 1", "stop", "sleep 1", "sleep 1", "kill"]


def test_a_signal_raises_interrupted_once_and_a_second_one_while_stopping_is_ignored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with interrupts_raise():
        with pytest.raises(Interrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line
        os.kill(os.getpid(), signal.SIGINT)  # already stopping: logged, not raised
    assert signal.getsignal(signal.SIGTERM) is before
