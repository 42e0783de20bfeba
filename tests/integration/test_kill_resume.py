"""SIGKILL the train CLI at random moments, resume each time: the study ends as if never interrupted."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from checkpoint_helpers import blob_names, weights_blob
from conftest import CONFIG_FILE, REPO_ROOT, TINY_OVERRIDES
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.cli import train
from dsm5_hpo.hpo.lock import lock_owner
from waiting import ProcessEnded, log_shows, wait_for, wait_for_exit

pytestmark = pytest.mark.integration

STUDY_OVERRIDES = (
    *TINY_OVERRIDES,
    "tracking=mlflow_sqlite",
    "hpo.n_trials=4",
    "train.max_epochs=4",
    "hpo.pruner=median",
    "hpo.pruner_startup_trials=1",
    "hpo.pruner_warmup_epochs=1",
)
KILLS = 10


METHODS = {
    "full": ((), KILLS),
    # Adapters and heads in the blob store, the frozen base stored once: fewer kills keep it cheap.
    "lora": (("train.finetuning=lora", "train.learning_rate_encoder=1e-3"), 3),
}


def _command(experiments: Path, cache: Path, *, resume: bool, extra: tuple[str, ...] = ()) -> list[str]:
    base = [sys.executable, "-m", "dsm5_hpo.cli.train"]
    if resume:
        return [*base, "--resume", f"paths.experiments_dir={experiments}"]
    overrides = [*STUDY_OVERRIDES, *extra, f"paths.experiments_dir={experiments}", f"paths.cache_dir={cache}"]
    return [*base, "--config", str(CONFIG_FILE), *overrides]


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _run_to_end(command: list[str], log: Path) -> None:
    process = _start(command, log)
    assert wait_for_exit(process, log) == 0, log.read_text()[-3000:]


def _wait_for(log: Path, offset: int, markers: tuple[str, ...], process: subprocess.Popen[bytes]) -> None:
    """Wait until this run's part of the log shows one of ``markers`` (or the process ends: a run may
    finish the study before it)."""
    shows = [log_shows(log, marker, offset=offset) for marker in markers]
    with contextlib.suppress(ProcessEnded):
        wait_for(lambda: any(s() for s in shows), process, log, what=" or ".join(markers), poll_s=0.05)


def _summary(experiments: Path) -> dict[str, Any]:
    (study_dir,) = experiments.glob("study_*")
    record = json.loads((study_dir / "study.json").read_text())
    study = optuna.load_study(study_name=record["study_name"], storage=record["optuna_storage"])
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "intermediate": dict(sorted(t.intermediate_values.items())),
        }
        for t in sorted(study.trials, key=lambda t: t.number)
    ]
    report = json.loads((study_dir / "evaluation_report.json").read_text())
    return {"record": record, "trials": trials, "report": report, "best": study.best_trial.number}


def _assert_close(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-6, f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("method", list(METHODS))
def test_random_sigkills_then_resume_equal_an_uninterrupted_run(
    tmp_path: Path, model_cache: Path, method: str
) -> None:
    extra, kill_count = METHODS[method]
    reference = tmp_path / "reference"
    _run_to_end(_command(reference, model_cache, resume=False, extra=extra), tmp_path / "reference.log")
    expected = _summary(reference)

    interrupted, log = tmp_path / "interrupted", tmp_path / "interrupted.log"
    rng = random.Random(20261128)
    kills, resume = 0, False
    while kills < kill_count:
        seen = log.stat().st_size if log.exists() else 0
        process = _start(_command(interrupted, model_cache, resume=resume, extra=extra), log)
        moment = rng.random()
        if moment < 0.25:  # during start-up: imports, data preparation, study bookkeeping
            delay = rng.uniform(0.5, 4.0)
        elif moment < 0.6:  # once the trial's training loop has started: steps, validation, saves, trial ends
            _wait_for(log, seen, ("no valid checkpoint", "resuming from"), process)
            delay = rng.uniform(0.1, 2.0)
        else:  # once this run has committed a checkpoint (whatever the machine's speed): the next
            # epoch, the next background save, the end of the trial, the start of the next one
            _wait_for(log, seen, ("saved checkpoint",), process)
            delay = rng.uniform(0.0, 1.5)
        try:
            code = process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            resume = resume or any(interrupted.glob("study_*/study.json"))
            continue
        pytest.fail(f"the study ended (exit {code}) after only {kills} kills:\n{log.read_text()[-3000:]}")
    _run_to_end(_command(interrupted, model_cache, resume=True), log)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "resuming from" in text  # at least one trial continued from a checkpoint, not from epoch 0

    actual = _summary(interrupted)
    assert actual["best"] == expected["best"]
    assert len(actual["trials"]) == len(expected["trials"]) == 4
    for got, want in zip(actual["trials"], expected["trials"], strict=True):
        _assert_close(got, want, f"trial {want['number']}")
    _assert_close(actual["report"]["test_metrics"], expected["report"]["test_metrics"], "test_metrics")
    assert actual["record"]["state"] == "COMPLETE"
    assert all(lock_owner(study_dir) is None for study_dir in interrupted.glob("study_*"))  # lock released
    if method == "lora":  # the resumed trials ran LoRA, and every kept checkpoint's blobs are whole
        for config in interrupted.glob("trial_*/config.yaml"):
            assert "finetuning: lora" in config.read_text()
        for checkpoint in interrupted.glob("trial_*/checkpoints/epoch_*"):
            for blob in blob_names(checkpoint):
                BlobStore(interrupted / "blobs").verify(blob)

    client = MlflowClient(tracking_uri=f"sqlite:///{interrupted / 'mlflow_db' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dsm5_hpo")
    runs = client.search_runs([experiment.experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(trial_runs) == 4  # the resumed trial kept its run; no extra runs
    for run in runs:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"duplicate steps in {key} of run {run.info.run_name}"
    print(f"{kills} kills; {text.count('resuming from')} resumes from a checkpoint")


# The kill test once per pruner, cheap (the full one above runs the median): 3 trials of 3 epochs, two
# kills aimed where a pruner keeps state: just after a trial was told to stop (before Optuna marks it
# PRUNED, successive halving has moved it up a rung), then after a checkpoint or inside an epoch. The
# uninterrupted run and the last resume run in-process (an interpreter start-up less each). The metric
# varies on the tiny model (joint_f1 is 0 there, and nothing would be pruned).
PRUNER_OVERRIDES = (
    *TINY_OVERRIDES,
    "hpo.n_trials=3",
    "train.max_epochs=3",
    "hpo.metric=criteria_auroc",
    "hpo.pruner_warmup_epochs=0",
)
PRUNERS = {
    # Rungs at 10, 30, 90 optimizer steps (~31 a epoch): trials are stopped inside an epoch.
    "successive_halving": ("hpo.pruner=successive_halving", "hpo.report_every_n_steps=10"),
    "hyperband": ("hpo.pruner=hyperband",),  # brackets of first rungs at epoch index 1 and 3
}


def _pruner_command(experiments: Path, cache: Path, pruner: str, *, resume: bool) -> list[str]:
    if resume:
        return [
            sys.executable,
            "-m",
            "dsm5_hpo.cli.train",
            "--resume",
            f"paths.experiments_dir={experiments}",
        ]
    overrides = [*PRUNER_OVERRIDES, *PRUNERS[pruner], f"paths.experiments_dir={experiments}"]
    return [
        sys.executable,
        "-m",
        "dsm5_hpo.cli.train",
        "--config",
        str(CONFIG_FILE),
        *overrides,
        f"paths.cache_dir={cache}",
    ]


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_two_sigkills_with_each_pruner_resume_to_the_uninterrupted_decisions(
    tmp_path: Path, model_cache: Path, pruner: str
) -> None:
    reference = tmp_path / "reference"
    with contextlib.redirect_stdout(io.StringIO()):  # in-process: an interpreter start-up less
        assert train.main(_pruner_command(reference, model_cache, pruner, resume=False)[3:]) == 0
    expected = _summary(reference)
    states = [t["state"] for t in expected["trials"]]
    assert "PRUNED" in states and states.count("COMPLETE") + states.count("PRUNED") == 3, states
    if pruner == "successive_halving":  # reports inside the epochs, and a trial stopped half-way through one
        assert any(len(t["intermediate"]) > 3 for t in expected["trials"])
        logs = " ".join(p.read_text() for p in reference.glob("trial_*/logs/trial.jsonl"))
        assert "pruned at step" in logs

    interrupted, log = tmp_path / "interrupted", tmp_path / "interrupted.log"
    rng = random.Random(20261206)
    for markers, delay in (
        (("pruned at step", "pruned after epoch"), 0.0),  # between the decision and Optuna's PRUNED
        (
            ("saved checkpoint", "step 20 (epoch"),
            rng.uniform(0.0, 0.5),
        ),  # after a checkpoint, or inside an epoch
    ):
        seen = log.stat().st_size if log.exists() else 0
        resume = any(interrupted.glob("study_*/study.json"))
        process = _start(_pruner_command(interrupted, model_cache, pruner, resume=resume), log)
        _wait_for(log, seen, markers, process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = process.wait(timeout=delay) if delay else process.poll()
            if code is not None:
                pytest.fail(f"the study ended (exit {code}) before its kill:\n{log.read_text()[-3000:]}")
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    with contextlib.redirect_stdout(io.StringIO()):  # the last resume in-process too
        assert train.main(["--resume", f"paths.experiments_dir={interrupted}"]) == 0

    actual = _summary(interrupted)
    assert actual["best"] == expected["best"]
    for got, want in zip(actual["trials"], expected["trials"], strict=True):
        _assert_close(got, want, f"trial {want['number']}")
    _assert_close(actual["report"]["test_metrics"], expected["report"]["test_metrics"], "test_metrics")
    assert actual["record"]["state"] == "COMPLETE"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_leaves_the_study_resumable(
    tmp_path: Path, model_cache: Path, sig: signal.Signals
) -> None:
    experiments, log = tmp_path / "exp", tmp_path / "run.log"
    process = _start(_command(experiments, model_cache, resume=False), log)
    # Wait until training has produced a checkpoint, then interrupt in the middle of the study.
    wait_for(
        lambda: list(experiments.glob("trial_*/checkpoints/epoch_*")), process, log, what="a first checkpoint"
    )
    process.send_signal(sig)
    assert wait_for_exit(process, log) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "make resume" in text and "Traceback" not in text
    (study_dir,) = experiments.glob("study_*")
    record = json.loads((study_dir / "study.json").read_text())
    assert record["state"] == "INTERRUPTED"
    # The trial the signal stopped stays RUNNING with its checkpoints, for the resume to continue.
    study = optuna.load_study(study_name=record["study_name"], storage=record["optuna_storage"])
    (stopped,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    checkpoints = Path(stopped.user_attrs["trial_dir"]) / "checkpoints"
    assert list(checkpoints.glob("epoch_*")), "the stopped trial kept no checkpoint"
    offset = log.stat().st_size
    _run_to_end(_command(experiments, model_cache, resume=True), log)
    resumed = log.read_text()[offset:]
    assert f"trial {stopped.number} was running when the study stopped: continuing it" in resumed
    assert f"resuming from {checkpoints}/epoch_" in resumed, "the stopped trial started again from scratch"
    summary = _summary(experiments)
    assert [t["state"] for t in summary["trials"]].count("FAIL") == 0  # the interrupted trial was continued
    assert summary["trials"][stopped.number]["state"] in ("COMPLETE", "PRUNED")
    assert len(summary["trials"]) == 4


# One trial of 4 epochs, and two resume points kept, so that the one before the damaged checkpoint can
# be resumed from.
CORRUPTED_OVERRIDES = (
    *(o for o in STUDY_OVERRIDES if not o.startswith(("hpo.n_trials=", "train.max_epochs=", "tracking="))),
    "hpo.n_trials=1",
    "train.max_epochs=4",
    "retention_policy.keep_last_n=2",
)


def _corrupted_command(experiments: Path, cache: Path, *, mlflow: bool = False) -> list[str]:
    # MLflow's end-of-study work (plots logged as artifacts, losses read back) costs ~6 s a run: checked in
    # one of the four cases; the others run without a tracker (the trained numbers do not depend on it).
    tracking = "tracking=mlflow_sqlite" if mlflow else "tracking=none"
    overrides = [
        *CORRUPTED_OVERRIDES,
        tracking,
        f"paths.experiments_dir={experiments}",
        f"paths.cache_dir={cache}",
    ]
    return [sys.executable, "-m", "dsm5_hpo.cli.train", "--config", str(CONFIG_FILE), *overrides]


def _committed(experiments: Path) -> list[Path]:
    return sorted(
        p for p in experiments.glob("trial_*/checkpoints/epoch_*") if (p / "metadata.json").exists()
    )


def _flip_a_weight_byte(checkpoint: Path) -> str:
    weights = weights_blob(checkpoint)  # the weights are blobs of experiments/blobs/
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x01  # in the tensor's data, past the header: the file still parses
    weights.write_bytes(bytes(data))
    return str(weights)


def _truncate_the_training_state(checkpoint: Path) -> str:
    state = checkpoint / "training_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    return "training_state.pt"


def _delete_the_metadata(checkpoint: Path) -> str:
    (checkpoint / "metadata.json").unlink()
    return "metadata.json"


def _edit_a_metadata_value(checkpoint: Path) -> str:
    path = checkpoint / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["metric_value"] = 0.999  # a better score than it had: a resume must not trust it
    path.write_text(json.dumps(metadata, indent=2))
    return "metadata.json"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    experiments = tmp_path_factory.mktemp("uninterrupted") / "exp"
    # In-process (as the resumes below): an interpreter start-up less for each run.
    assert train.main(_corrupted_command(experiments, model_cache)[3:]) == 0
    return _summary(experiments)


@pytest.mark.parametrize(
    "damage",
    [_flip_a_weight_byte, _truncate_the_training_state, _delete_the_metadata, _edit_a_metadata_value],
)
def test_a_damaged_newest_checkpoint_is_quarantined_and_resume_equals_an_uninterrupted_run(
    tmp_path: Path, model_cache: Path, uninterrupted: dict[str, Any], damage: Callable[[Path], str]
) -> None:
    experiments, log = tmp_path / "exp", tmp_path / "run.log"
    mlflow = damage is _flip_a_weight_byte
    process = _start(_corrupted_command(experiments, model_cache, mlflow=mlflow), log)
    # SIGKILL once the trial has committed its second checkpoint.
    wait_for(lambda: len(_committed(experiments)) >= 2, process, log, what="a second checkpoint", poll_s=0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    *earlier, newest = _committed(experiments)
    previous, folder = earlier[-1], newest.parent
    damaged_file = damage(newest)
    trial_log = folder.parent / "logs" / "trial.jsonl"
    offset = trial_log.stat().st_size

    assert train.main(["--resume", f"paths.experiments_dir={experiments}"]) == 0
    resumed = [json.loads(line) for line in trial_log.read_text()[offset:].splitlines()]
    errors = [
        r["message"] for r in resumed if r["level"] == "ERROR" and f"checkpoint {newest} " in r["message"]
    ]
    assert errors and damaged_file in errors[0], resumed[-10:]
    assert list((folder / "quarantine").glob(f"{newest.name}-*")), (
        "the damaged checkpoint was not quarantined"
    )
    assert any(r["message"].startswith(f"resuming from {previous}:") for r in resumed), resumed[-10:]
    actual = _summary(experiments)
    for got, want in zip(actual["trials"], uninterrupted["trials"], strict=True):
        _assert_close(got, want, f"trial {want['number']}")
    _assert_close(actual["report"]["test_metrics"], uninterrupted["report"]["test_metrics"], "test_metrics")
    if not mlflow:
        return
    client = MlflowClient(tracking_uri=f"sqlite:///{experiments / 'mlflow_db' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dsm5_hpo").experiment_id])
    assert len(runs) == 2  # the study's run and its trial's: the resumed trial kept its run
    for run in runs:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"duplicate steps in {key} of run {run.info.run_name}"
