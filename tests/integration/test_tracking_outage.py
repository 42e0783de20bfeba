"""MLflow goes down in the middle of a study: nothing is lost, nothing is logged twice.

A real ``mlflow server`` (SQLite backend, one worker, loopback) runs as a subprocess; the study
runs through the train CLI in another. The server is killed with SIGKILL mid-study and started
again on the same database.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import CONFIG_FILE, REPO_ROOT, TINY_OVERRIDES
from waiting import log_shows, wait_for, wait_for_exit

pytestmark = pytest.mark.integration

MLFLOW = Path(sys.executable).with_name("mlflow")


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--default-artifact-root",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers die with it
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    if not MLFLOW.exists():
        pytest.skip(f"no mlflow command beside {sys.executable}")
    running = MlflowServer(tmp_path / "server")
    running.root.mkdir()
    running.start()
    yield running
    running.kill()


def _command(experiments: Path, cache: Path, uri: str, *, resume: bool = False) -> list[str]:
    base = [sys.executable, "-m", "dsm5_hpo.cli.train"]
    if resume:
        return [*base, "--resume", f"paths.experiments_dir={experiments}"]
    return [
        *base, "--config", str(CONFIG_FILE), *TINY_OVERRIDES, "tracking=mlflow_sqlite", f"tracking.uri={uri}",
        "hpo.n_trials=3", "train.max_epochs=3", f"paths.experiments_dir={experiments}", f"paths.cache_dir={cache}",
    ]  # fmt: skip


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], *, count: int = 1) -> None:
    wait_for(log_shows(log, text, count=count), process, log, what=repr(text), poll_s=0.1)


def _series(client: MlflowClient, experiment_name: str) -> dict[str, dict[str, list[int]]]:
    """run name -> metric key -> steps, for every run of the experiment."""
    (experiment,) = [e for e in client.search_experiments() if e.name == experiment_name]
    result: dict[str, dict[str, list[int]]] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        result[run.info.run_name] = {
            key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics
        }
    return result


def _assert_every_series_complete_once(
    series: dict[str, dict[str, list[int]]], trials: int, epochs: int
) -> None:
    assert sorted(n for n in series if n.startswith("trial-")) == [f"trial-{i}" for i in range(trials)]
    for name, keys in series.items():
        for key, steps in keys.items():
            assert len(steps) == len(set(steps)), f"{name}/{key} has duplicate steps: {steps}"
        if name.startswith("trial-"):
            assert keys["val_joint_score"] == list(range(epochs)), (name, keys["val_joint_score"])
            assert keys["train_loss"], name  # step-level metrics arrived too


def _sync(experiments: Path, uri: str) -> subprocess.CompletedProcess[str]:
    """`make sync`: what the outbox holds, sent to the server."""
    command = [sys.executable, "-m", "dsm5_hpo.cli.sync", "--config", str(CONFIG_FILE), f"tracking.uri={uri}"]
    return subprocess.run(
        [*command, f"paths.experiments_dir={experiments}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _study_losing_its_server(
    server: MlflowServer, tmp_path: Path, model_cache: Path
) -> tuple[Path, Path, subprocess.Popen[bytes]]:
    """A study that has saved its first checkpoint when the server is SIGKILLed, and noticed it."""
    experiments, log = tmp_path / "experiments", tmp_path / "study.log"
    study = _start(_command(experiments, model_cache, server.uri), log)
    _wait_for(log, "saved checkpoint", study)
    server.kill()
    _wait_for(log, "MLflow unreachable", study)
    return experiments, log, study


def test_server_killed_mid_study_then_restarted(
    server: MlflowServer, tmp_path: Path, model_cache: Path
) -> None:
    experiments, log, study = _study_losing_its_server(server, tmp_path, model_cache)
    _wait_for(log, "trial 2 of 3 started", study)  # a whole trial runs, and a new run is created, offline
    server.start()
    assert wait_for_exit(study, log) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "MLflow reachable again" in text
    assert not list((experiments / "tracking_outbox").glob("outbox-*.jsonl")), (
        "the outbox file should be gone"
    )
    _assert_every_series_complete_once(_series(MlflowClient(server.uri), "dsm5_hpo"), trials=3, epochs=3)


def _outbox_metrics(folder: Path) -> list[dict[str, object]]:
    entries = []
    for path in folder.glob("outbox-*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip() and '"op": "metric"' in line:
                entries.append(json.loads(line))
    return entries


def test_training_killed_while_the_server_is_down_is_replayed_by_sync_and_resume(
    server: MlflowServer, tmp_path: Path, model_cache: Path
) -> None:
    experiments, log, study = _study_losing_its_server(server, tmp_path, model_cache)
    _wait_for(log, "saved checkpoint", study, count=3)  # more epochs logged while MLflow is down
    study.send_signal(signal.SIGKILL)
    study.wait()
    outbox = experiments / "tracking_outbox"
    waiting = _outbox_metrics(outbox)
    assert waiting, "metrics logged while the server was down must be in the outbox"

    server.start()
    sync = _sync(experiments, server.uri)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert "sent" in sync.stdout and not list(outbox.glob("outbox-*.jsonl"))
    mapping = json.loads((outbox / "run_ids.json").read_text()) if (outbox / "run_ids.json").exists() else {}
    client = MlflowClient(server.uri)
    for entry in waiting:  # every metric the dead process had only in its outbox is now in MLflow, once
        run_id = mapping.get(str(entry["run"]), str(entry["run"]))
        steps = [m.step for m in client.get_metric_history(run_id, str(entry["key"]))]
        assert steps.count(int(entry["step"])) == 1, (entry, steps)

    resumed = _start(_command(experiments, model_cache, server.uri, resume=True), log)
    assert wait_for_exit(resumed, log) == 0, log.read_text()[-3000:]
    _assert_every_series_complete_once(_series(client, "dsm5_hpo"), trials=3, epochs=3)


def test_a_frozen_server_never_holds_a_trial_start(
    server: MlflowServer, tmp_path: Path, model_cache: Path
) -> None:
    """SIGSTOP: the server accepts connections and never answers, so any MLflow call waits for its 10 s
    timeout. Trials are started, resumed and ended meanwhile without one such call on the training
    thread (before, creating each trial's run did: "MLflow unreachable while creating run"); what they
    logged is in the outbox, and `make sync` sends it once the server answers again."""
    experiments, log = tmp_path / "experiments", tmp_path / "study.log"
    command = [*_command(experiments, model_cache, server.uri), "tracking.drain_timeout_s=2"]
    study = _start(command, log)
    _wait_for(log, "saved checkpoint", study)  # the first trial runs; its run was created while it answered
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGSTOP)
    try:
        assert wait_for_exit(study, log) == 0, log.read_text()[-3000:]
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)
    text = log.read_text()
    assert text.count("COMPLETE (joint_f1=") + text.count("PRUNED") >= 3, text[-3000:]
    assert "while creating run" not in text and "while re-opening run" not in text, text[-3000:]
    assert "could not reach MLflow" in text  # the frozen server took nothing at the end: kept for sync
    sync = _sync(experiments, server.uri)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    _assert_every_series_complete_once(_series(MlflowClient(server.uri), "dsm5_hpo"), trials=3, epochs=3)
