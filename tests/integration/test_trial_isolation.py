"""Trials in processes of their own (hpo.trial_isolation=process) and one trial per device
(hpo.devices=cpu:N): a trial that crashes, raises or runs out of memory fails alone, with its reason,
and the study completes its other trials; N CPU slots run exactly hpo.n_trials with one report."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import fault_hooks
from conftest import CONFIG_FILE, REPO_ROOT, TINY_OVERRIDES, compose_tiny
from dsm5_hpo.hpo.study import StudyRunner
from dsm5_hpo.hpo.trial_failures import KILLED_ATTR
from dsm5_hpo.hpo.workers import retry_history
from dsm5_hpo.tracking.tracker import NullTracker
from integration_helpers import run_study
from waiting import wait_for, wait_for_exit

pytestmark = pytest.mark.integration


def _study(study_dir: Path) -> optuna.Study:
    record = json.loads((study_dir / "study.json").read_text())
    return optuna.load_study(study_name=record["study_name"], storage=record["optuna_storage"])


def _trial_json(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return json.loads((Path(str(trial.user_attrs["trial_dir"])) / "trial.json").read_text())


def test_a_trial_that_segfaults_raises_or_runs_out_of_memory_fails_alone_with_its_reason(
    tmp_path: Path, model_cache: Path
) -> None:
    config = compose_tiny(
        tmp_path / "experiments",
        model_cache,
        "hpo.trial_isolation=process",
        "hpo.n_trials=4",
        "hpo.max_trial_retries=1",
        "train.max_epochs=2",
        "train.async_checkpointing=false",  # epoch 0's checkpoint is committed when the fault hits
    )
    outcome = StudyRunner(config, NullTracker(), epoch_hook=fault_hooks.by_trial_number).run()
    trials = _study(outcome.study_dir).trials
    states = {t.number: t.state for t in trials}
    # 0 completes; 1 segfaults and is retried as 2 (queued, so next), which completes; 3 raises; 4 hits
    # its memory limit. Four trials count: the retry stands in for its original.
    assert states == {
        0: TrialState.COMPLETE,
        1: TrialState.FAIL,
        2: TrialState.COMPLETE,
        3: TrialState.FAIL,
        4: TrialState.FAIL,
    }
    crashed, retry, raised, starved = (trials[n] for n in (1, 2, 3, 4))
    assert "killed by SIGSEGV" in str(crashed.user_attrs["error"])
    assert crashed.user_attrs[KILLED_ATTR]
    assert retry_history(retry) == [1]
    assert retry.user_attrs["trial_dir"] == crashed.user_attrs["trial_dir"]  # continues in its folder
    assert _trial_json(retry)["resumed"] and _trial_json(retry)["state"] == "COMPLETE"
    (attempt,) = _trial_json(retry)["attempts"]  # the crashed attempt's record, kept by its retry
    assert attempt["state"] == "FAILED" and "killed by SIGSEGV" in attempt["error"]
    log = (Path(str(retry.user_attrs["trial_dir"])) / "logs" / "trial.jsonl").read_text()
    assert "resuming from" in log and "epoch 0 done" in log  # from the checkpoint the crash left
    assert retry.user_attrs[KILLED_ATTR] is None and retry.user_attrs["error"] is None
    assert "RuntimeError: injected failure of trial 3" in str(raised.user_attrs["error"])
    assert "RuntimeError: injected failure of trial 3" in _trial_json(raised)["error"]
    assert not raised.user_attrs.get(KILLED_ATTR)  # an exception is the trial's own: not retried
    assert "MemoryError" in str(starved.user_attrs["error"]) or "killed by" in str(
        starved.user_attrs["error"]
    )
    assert _trial_json(starved)["state"] == "FAILED"
    assert outcome.best_trial_id is not None and (outcome.study_dir / "evaluation_report.json").is_file()
    for trial in (trials[0], retry):
        facts = _trial_json(trial)["process"]
        assert facts["exit"] == "exited with code 0" and facts["peak_rss_bytes"] > 0
        assert _trial_json(trial)["device"] == "cpu"


def test_two_cpu_slots_run_exactly_n_trials_with_one_report_and_each_trial_s_device(
    tmp_path: Path, model_cache: Path
) -> None:
    finished = run_study(
        tmp_path / "experiments", model_cache, "hpo.devices=cpu:2", "hpo.n_trials=6", "train.max_epochs=1"
    )
    trials = _study(finished.study_dir).trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    devices = [_trial_json(t)["device"] for t in trials]
    assert set(devices) == {"cpu:0", "cpu:1"}, devices
    assert [t.user_attrs["device"] for t in trials] == devices
    assert len(list(finished.experiments.glob("study_*/evaluation_report.json"))) == 1
    assert finished.study["best_trial_id"] in {t.user_attrs["trial_uuid"] for t in trials}
    # Two trials overlapped in time: the slots ran at once, not one after the other.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def _train(experiments: Path, cache: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "dsm5_hpo.cli.train", *args]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill_9"])
def test_a_stopped_or_killed_study_process_stops_its_trial_process_resumably_and_the_resume_continues(
    tmp_path: Path, model_cache: Path, sig: signal.Signals
) -> None:
    experiments, log = tmp_path / "exp", tmp_path / "run.log"
    overrides = [
        *TINY_OVERRIDES,
        "hpo.n_trials=1",
        "train.max_epochs=3",
        "hpo.trial_isolation=process",
        f"paths.experiments_dir={experiments}",
        f"paths.cache_dir={model_cache}",
    ]
    study = _train(experiments, model_cache, log, "--config", str(CONFIG_FILE), *overrides)
    found = wait_for(
        lambda: re.search(r"runs in process (\d+)", log.read_text()) if log.exists() else None,
        study,
        log,
        what="the trial's process",
    )
    child = int(found.group(1))
    wait_for(lambda: list(experiments.glob("trial_*/checkpoints/epoch_*")), study, log, what="a checkpoint")
    study.send_signal(sig)
    # SIGTERM: the study process passes it on and exits 130 once its trial stopped. SIGKILL: no handler
    # runs, the trial process is on its own and must notice.
    assert study.wait(timeout=120) == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "the trial process outlived its study process by 30 s"
    text = log.read_text()
    if sig == signal.SIGTERM:
        assert "stopping trial process" in text and "make resume" in text and "Traceback" not in text
    else:
        assert "died; stopping this trial where it is" in text
    (trial_json,) = experiments.glob("trial_*/trial.json")
    assert json.loads(trial_json.read_text())["state"] == "INTERRUPTED"  # it stopped, it was not killed
    offset = log.stat().st_size
    resumed = _train(experiments, model_cache, log, "--resume", f"paths.experiments_dir={experiments}")
    assert wait_for_exit(resumed, log) == 0, log.read_text()[-3000:]
    assert "resuming from" in log.read_text()[offset:]
    record = json.loads(trial_json.read_text())
    assert record["state"] == "COMPLETE" and record["attempts"][0]["state"] == "INTERRUPTED"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent (the forkserver) has not reaped it yet.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def test_two_cpu_slots_are_two_workers_of_a_shared_study(tmp_path: Path, model_cache: Path) -> None:
    finished = run_study(
        tmp_path / "experiments",
        model_cache,
        f"hpo.storage=sqlite:///{tmp_path / 'shared.db'}",
        "hpo.study_name=two_slots",
        "hpo.devices=cpu:2",
        "hpo.n_trials=4",
        "train.max_epochs=1",
    )
    study = optuna.load_study(study_name="two_slots", storage=f"sqlite:///{tmp_path / 'shared.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    workers = {str(t.user_attrs["worker"]).rsplit("/", 1)[-1] for t in study.trials}
    assert workers == {"cpu:0", "cpu:1"}
    assert (finished.study_dir / "evaluation_report.json").is_file()


def test_a_ddp_study_trains_each_trial_in_two_gloo_ranks_on_two_cpu_slots(
    tmp_path: Path, model_cache: Path
) -> None:
    """The study's wiring of train.distributed=ddp; that 2 ranks reach the metrics of 1 process with the
    same global batch (and resume after SIGKILL) is tests/integration/test_ddp_training.py's."""
    finished = run_study(
        tmp_path / "ddp",
        model_cache,
        "hpo.n_trials=2",
        "train.max_epochs=2",
        "train.distributed=ddp",
        "hpo.devices=cpu:2",
    )
    trials = _study(finished.study_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert {_trial_json(t)["device"] for t in trials} == {"cpu:0,1"}
    assert {_trial_json(t)["process"]["ranks"] for t in trials} == {2}
    history = json.loads(
        (Path(str(trials[0].user_attrs["trial_dir"])) / "validation_report.json").read_text()
    )
    assert len(history["history"]) == 2  # rank 0 validated every epoch
