"""hpo/trial_callbacks.py: the summary is written off the trials' path, one refresh at a time, the
newest trials last, and the study's end waits for it."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from dsm5_hpo.hpo.records import StudyRecord
from dsm5_hpo.hpo.trial_callbacks import SummaryAfterTrial


class SlowWriter:
    """A summary writer that holds each write until the test lets it go."""

    def __init__(self) -> None:
        self.written: list[tuple[str, int]] = []
        self.started = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.running = 0
        self.overlapped = False

    def __call__(self, study_dir: Path, record: Mapping[str, Any], trials: Sequence[FrozenTrial]) -> None:
        self.running += 1
        self.overlapped |= self.running > 1
        self.started.release()
        assert self.go.acquire(timeout=10)
        self.written.append((str(record["state"]), len(trials)))
        self.running -= 1


def record() -> StudyRecord:
    return StudyRecord(
        study_id="s",
        state="RUNNING",
        created_at="2026-12-06T00:00:00+00:00",
        optuna_storage="sqlite:///x",
        study_name="s",
        shared=False,
        config={},
        synthetic_data=True,
    )


def test_trials_ending_during_a_write_make_one_more_write_with_all_of_them(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, writer, study_record = optuna.create_study(), SlowWriter(), record()
    summary = SummaryAfterTrial(tmp_path, study_record, write=writer)

    def end_a_trial() -> None:
        trial = study.ask()
        study.tell(trial, 1.0)
        summary(study, study.get_trials(deepcopy=False)[-1])  # returns at once, the write goes on

    end_a_trial()
    assert writer.started.acquire(timeout=10)  # trial 1's summary is being written ...
    end_a_trial()  # ... while trials 2 and 3 end: one more write, with all three
    study_record.state = "COMPLETE"  # what the record says when the request is made is what is written
    end_a_trial()
    writer.go.release()
    assert writer.started.acquire(timeout=10)
    writer.go.release()
    summary.close()  # the study's end: every ended trial is in the file
    assert writer.written == [("RUNNING", 1), ("COMPLETE", 3)] and not writer.overlapped
    summary.close()  # nothing in flight: returns at once
