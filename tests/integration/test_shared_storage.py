"""Two workers share one study through a real PostgreSQL server and one MLflow server; one worker is
killed mid-trial and the other finishes its trial from the last checkpoint (shared experiments folder).

Skipped, with the reason, where PostgreSQL cannot be run (see tests/postgres_server.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from conftest import CONFIG_FILE, SAMPLE_DIR
from dsm5_hpo.hpo.database import CONNECTIONS_PER_WORKER, opened_storage
from dsm5_hpo.hpo.workers import retried_from, retry_history
from dsm5_hpo.tracking.mlflow_tracker import mlflow_run_id
from postgres_server import PostgresServer, postgres_instance, unavailable_reason
from waiting import wait_for, wait_for_exit

pytestmark = pytest.mark.integration
needs_postgres = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

STUDY_NAME = "two-workers"
N_TRIALS = 6
EPOCHS = 3


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_instance() as server:
        yield server


@pytest.fixture(scope="module")
def postgres_url(postgres: PostgresServer) -> str:
    return postgres.url


class ConnectionPeak:
    """Samples pg_stat_activity every ``interval_s`` in a thread: the peak of all client connections,
    and each application's own peak (a worker names itself ``dsm5_hpo host:pid``)."""

    def __init__(self, server: PostgresServer, interval_s: float = 0.5) -> None:
        self.server, self.interval_s = server, interval_s
        self.total, self.by_application, self.samples = 0, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            counts = self.server.connections()
            self.samples += 1
            self.total = max(self.total, sum(counts.values()))
            for name, count in counts.items():
                self.by_application[name] = max(self.by_application.get(name, 0), count)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One MLflow tracking server for both workers (SQLite backend behind it), as in the compose stack."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("mlflow_server")
    mlflow = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            assert server.poll() is None and time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.5)
    try:
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _worker(
    experiments: Path, cache: Path, url: str, tracking: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    overrides = [
        "model=tiny",
        f"data.local_dir={SAMPLE_DIR}",
        "data.max_posts=24",
        "data.max_length=64",
        "data.doc_stride=16",
        f"train.max_epochs={EPOCHS}",
        "train.eval_batch_size=128",
        f"hpo.n_trials={N_TRIALS}",
        "hpo.pruner=none",
        f"hpo.storage={url}",
        f"hpo.study_name={STUDY_NAME}",
        "hpo.heartbeat_interval_s=1",
        "hpo.heartbeat_grace_s=5",
        *([f"tracking.uri={tracking}"] if tracking else []),
        f"paths.experiments_dir={experiments}",
        f"paths.cache_dir={cache}",
        *extra,
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dsm5_hpo.cli.train", "--config", str(CONFIG_FILE), *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
            },  # two workers on this machine split its cores (README)
        )


def _running_trial_of(
    storage: RDBStorage, worker_pid: int, *, study_name: str = STUDY_NAME
) -> Callable[[], optuna.trial.FrozenTrial | None]:
    """A condition: a trial of that worker is running (with a committed checkpoint). One storage for
    every poll: ``optuna.load_study(storage=url)`` in a loop builds an engine, and a pool, per call."""

    def running() -> optuna.trial.FrozenTrial | None:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            return None
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            mine = str(trial.user_attrs.get("worker", "")).endswith(f":{worker_pid}")
            folder = Path(str(trial.user_attrs.get("trial_dir", ""))) / "checkpoints"
            if mine and list(folder.glob("epoch_0000")):
                return trial
        return None

    return running


@needs_postgres
def test_two_workers_share_a_study_and_one_finishes_the_trial_of_the_other_that_was_killed(
    postgres: PostgresServer, mlflow_uri: str, tmp_path: Path
) -> None:
    experiments, cache = tmp_path / "experiments", tmp_path / "cache"
    logs = (tmp_path / "worker1.log", tmp_path / "worker2.log")
    started = time.monotonic()
    with opened_storage(postgres.url) as storage, ConnectionPeak(postgres) as peak:
        first = _worker(experiments, cache, postgres.url, mlflow_uri, logs[0])
        time.sleep(1.0)
        second = _worker(experiments, cache, postgres.url, mlflow_uri, logs[1])
        try:
            # Kill the first worker once a trial of its own is running and has a committed checkpoint.
            killed = wait_for(
                _running_trial_of(storage, first.pid), first, logs[0], what="a trial with a checkpoint"
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=60)
            assert wait_for_exit(second, logs[1]) == 0, logs[1].read_text()[-4000:]
        finally:
            for process in (first, second):
                if process.poll() is None:
                    process.kill()
    elapsed = time.monotonic() - started
    # Bounded connections: each worker holds at most its pool, whatever the study's length, and the
    # whole run (two workers, this test's one reader) stays far from the server's 50.
    workers = {name: count for name, count in peak.by_application.items() if name.startswith("dsm5_hpo ")}
    assert peak.samples > 10 and len(workers) == 2, peak.by_application
    assert max(workers.values()) <= CONNECTIONS_PER_WORKER, peak.by_application
    assert peak.total <= 2 * CONNECTIONS_PER_WORKER + 2, (peak.total, peak.by_application)

    study = optuna.load_study(study_name=STUDY_NAME, storage=postgres.url)
    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # Exactly n_trials completed, each with its own params and its own trial folder: none ran twice.
    assert len(complete) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == N_TRIALS
    assert len({t.user_attrs["trial_uuid"] for t in complete}) == N_TRIALS
    # The killed trial: marked FAIL once its heartbeat stopped, queued again with the same params and
    # folder, and finished by the second worker from its checkpoint.
    failed = study.trials[killed.number]
    assert failed.state == TrialState.FAIL
    (retry,) = [t for t in trials if retried_from(t) == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["trial_uuid"] == killed.user_attrs["trial_uuid"]
    assert retry.user_attrs["worker"].endswith(f":{second.pid}")
    trial_dir = Path(retry.user_attrs["trial_dir"])
    assert json.loads((trial_dir / "trial.json").read_text())["resumed"] is True
    log = (trial_dir / "logs" / "trial.jsonl").read_text()
    assert "resuming from" in log and "epoch_0000" in log
    assert sorted(retry.intermediate_values) == list(range(EPOCHS))

    # One test evaluation, by the surviving worker.
    (study_dir,) = experiments.glob("study_*")
    assert study.user_attrs["final_evaluation"].endswith(f":{second.pid}")
    report = json.loads((study_dir / "evaluation_report.json").read_text())
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert report["best_trial_id"] == best.user_attrs["trial_uuid"]
    record = json.loads((study_dir / "study.json").read_text())
    assert record["state"] == "COMPLETE" and record["shared"] is True
    assert "evaluating it on the test split" not in (tmp_path / "worker1.log").read_text()

    # MLflow (one server): every completed trial's run finished with every epoch, no step twice.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    for trial in complete:
        run = client.get_run(mlflow_run_id(client, trial.user_attrs["mlflow_run_id"]))
        assert run.info.status == "FINISHED", (trial.number, run.info.status)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_joint_score")]
        assert sorted(steps) == list(range(EPOCHS)), (trial.number, steps)
    study_runs = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.study_id = '{record['study_id']}' and tags.role = 'study'",
    )
    assert len(study_runs) == 1  # the workers share one study run

    print(
        f"\n2 workers, {N_TRIALS} trials of {EPOCHS} epochs, one worker killed: {elapsed:.1f} s; peak "
        f"connections {peak.total} (per worker {sorted(workers.values())}, {peak.samples} samples)"
    )


@needs_postgres
def test_a_worker_rides_out_a_postgresql_restart_mid_training(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """The server is stopped for 10 s while the worker trains, then started again: the worker retries
    (WARNING lines), goes on, and the study ends with n_trials, every epoch once in MLflow."""
    experiments, cache, log = tmp_path / "experiments", tmp_path / "cache", tmp_path / "worker.log"
    name, trials, epochs = "restart", 2, 6
    worker = _worker(
        experiments,
        cache,
        postgres.url,
        "",
        log,
        "tracking=mlflow_sqlite",
        f"hpo.study_name={name}",
        f"hpo.n_trials={trials}",
        f"train.max_epochs={epochs}",
        "hpo.heartbeat_grace_s=120",  # longer than the outage: the trial is not taken for dead
    )
    try:
        with opened_storage(postgres.url) as storage:
            running = wait_for(
                _running_trial_of(storage, worker.pid, study_name=name), worker, log, what="a checkpoint"
            )
        postgres.stop()
        try:
            time.sleep(10)
        finally:
            postgres.start()
        assert wait_for_exit(worker, log) == 0, log.read_text()[-4000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        if not _accepts(postgres):
            postgres.start()
    text = log.read_text()
    assert "study database" in text and "retrying in" in text, text[-3000:]  # it did meet the outage
    assert "Traceback" not in text
    study = optuna.load_study(study_name=name, storage=postgres.url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * trials
    assert study.trials[running.number].intermediate_values.keys() == set(range(epochs))
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{experiments / 'mlflow_db' / 'mlflow.db'}")
    for trial in study.trials:
        history = client.get_metric_history(
            mlflow_run_id(client, trial.user_attrs["mlflow_run_id"]), "val_joint_score"
        )
        assert sorted(m.step for m in history) == list(range(epochs)), trial.number


def _trial_with_checkpoint(
    storage: RDBStorage,
    study_name: str,
    worker_pid: int,
    wanted: Callable[[optuna.trial.FrozenTrial], bool] = lambda t: True,
    epoch: int = 0,
) -> Callable[[], optuna.trial.FrozenTrial | None]:
    """A condition: a RUNNING trial of that worker that ``wanted`` accepts, whose folder holds a
    committed checkpoint of ``epoch`` (or a later one)."""

    def found() -> optuna.trial.FrozenTrial | None:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            return None
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            folder = Path(str(trial.user_attrs.get("trial_dir", ""))) / "checkpoints"
            # Committed checkpoints only: not a folder mid-rename (epoch_0000.weights-only, say).
            epochs = [int(p.name[6:]) for p in folder.glob("epoch_*") if re.fullmatch(r"epoch_\d{4}", p.name)]
            mine = str(trial.user_attrs.get("worker", "")).endswith(f":{worker_pid}")
            if mine and wanted(trial) and epochs and max(epochs) >= epoch:
                return trial
        return None

    return found


@needs_postgres
def test_a_trial_that_kills_its_worker_twice_fails_for_good_and_the_study_ends(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """hpo.max_trial_retries=1: trial 0's worker is killed, its retry's worker is killed too; the third
    worker does not queue it a second time, and the study ends on the other trial."""
    experiments, cache = tmp_path / "experiments", tmp_path / "cache"
    name = "retry-cap"
    extra = ("tracking=mlflow_sqlite", f"hpo.study_name={name}", "hpo.n_trials=2", "hpo.max_trial_retries=1")
    logs = [tmp_path / f"worker{i}.log" for i in (1, 2, 3)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with opened_storage(postgres.url) as storage:
            first = _worker(experiments, cache, postgres.url, "", logs[0], *extra)
            processes.append(first)
            doomed = wait_for(
                _trial_with_checkpoint(storage, name, first.pid), first, logs[0], what="a checkpoint"
            )
            second = _worker(experiments, cache, postgres.url, "", logs[1], *extra)
            processes.append(second)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=60)
            # The second worker runs the other trial, then takes trial 0's retry after the grace period.
            retry = wait_for(
                _trial_with_checkpoint(
                    storage, name, second.pid, lambda t: retry_history(t) == [doomed.number]
                ),
                second,
                logs[1],
                what="the retry of the killed trial, with a checkpoint",
            )
            second.send_signal(signal.SIGKILL)
            second.wait(timeout=60)
            third = _worker(experiments, cache, postgres.url, "", logs[2], *extra)
            processes.append(third)
            assert wait_for_exit(third, logs[2]) == 0, logs[2].read_text()[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    trials = optuna.load_study(study_name=name, storage=postgres.url).trials
    assert trials[doomed.number].state == TrialState.FAIL and trials[retry.number].state == TrialState.FAIL
    assert not [t for t in trials if retry_history(t)[:1] == [doomed.number] and t.number != retry.number]
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 1 and len(trials) == 3
    assert "fails for good (hpo.max_trial_retries=1)" in logs[2].read_text()
    (study_dir,) = experiments.glob("study_*")
    assert json.loads((study_dir / "study.json").read_text())["state"] == "COMPLETE"


@needs_postgres
def test_a_paused_worker_whose_trial_was_taken_over_stops_it_without_writing(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """SIGSTOP past the grace period: the other worker runs the trial's retry in the same folder; after
    SIGCONT the paused worker notices at its next checkpoint and stops the trial without writing."""
    experiments, cache = tmp_path / "experiments", tmp_path / "cache"
    name, epochs = "paused", 10
    extra = (
        "tracking=mlflow_sqlite",
        f"hpo.study_name={name}",
        "hpo.n_trials=1",
        f"train.max_epochs={epochs}",
    )
    logs = (tmp_path / "paused.log", tmp_path / "other.log")
    paused = _worker(experiments, cache, postgres.url, "", logs[0], *extra)
    other: subprocess.Popen[bytes] | None = None
    try:
        with opened_storage(postgres.url) as storage:
            taken = wait_for(
                _trial_with_checkpoint(storage, name, paused.pid), paused, logs[0], what="a checkpoint"
            )
            paused.send_signal(signal.SIGSTOP)
            other = _worker(experiments, cache, postgres.url, "", logs[1], *extra)
            # The retry runs on the other worker and has written a checkpoint of its own into the folder.
            folder = Path(taken.user_attrs["trial_dir"]) / "checkpoints"
            newest = max(
                int(p.name[6:]) for p in folder.glob("epoch_*") if re.fullmatch(r"epoch_\d{4}", p.name)
            )
            retry = wait_for(
                _trial_with_checkpoint(
                    storage, name, other.pid, lambda t: retried_from(t) == taken.number, newest + 1
                ),
                other,
                logs[1],
                what="the retry with a checkpoint of its own",
            )
            before = len(logs[0].read_text())
            paused.send_signal(signal.SIGCONT)
            assert wait_for_exit(other, logs[1]) == 0, logs[1].read_text()[-4000:]
            assert wait_for_exit(paused, logs[0]) == 0, logs[0].read_text()[-4000:]
    finally:
        for process in (paused, other):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
    after = logs[0].read_text()[before:]
    assert f"trial {taken.number} stopped on this worker, without writing anything more" in after, after[
        -3000:
    ]
    assert "saved checkpoint" not in after, "the paused worker wrote a checkpoint into the retry's folder"
    assert "Traceback" not in after
    trials = optuna.load_study(study_name=name, storage=postgres.url).trials
    assert trials[taken.number].state == TrialState.FAIL and "error" not in trials[taken.number].user_attrs
    finished = trials[retry.number]
    assert finished.state == TrialState.COMPLETE and sorted(finished.intermediate_values) == list(
        range(epochs)
    )
    record = json.loads((Path(taken.user_attrs["trial_dir"]) / "trial.json").read_text())
    assert record["number"] == retry.number and record["state"] == "COMPLETE"


def _accepts(server: PostgresServer) -> bool:
    try:
        server.connections()
    except Exception:  # noqa: BLE001 - any failure: it is not accepting
        return False
    return True


def test_a_password_in_the_storage_url_is_refused_with_the_fix() -> None:
    from dsm5_hpo.config import HPOConfig
    from dsm5_hpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hpo.storage.*PGPASSWORD or ~/.pgpass"):
        HPOConfig(storage="postgresql://dsm5:secret@db:5432/optuna")
    with pytest.raises(ConfigError, match=r"hpo.storage.*must be a database URL"):
        HPOConfig(storage="redis://db:6379")
    with pytest.raises(ConfigError, match=r"hpo.heartbeat_grace_s"):
        HPOConfig(storage="postgresql://dsm5@db/optuna", heartbeat_interval_s=10, heartbeat_grace_s=5)


def test_an_unreachable_storage_is_a_config_error_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsm5_hpo.cli.train",
            "--config",
            str(CONFIG_FILE),
            "model=tiny",
            f"data.local_dir={SAMPLE_DIR}",
            "data.max_posts=24",
            "tracking=none",
            "hpo.storage=postgresql://dsm5@127.0.0.1:9/optuna",  # port 9 (discard): nothing listens
            "hpo.storage_retry_s=3",  # refused is transient: retried this long (1 + 2 s), then the error
            f"paths.experiments_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot open the shared study storage postgresql://dsm5@127.0.0.1:9/optuna" in done.stderr


def test_a_worker_joining_a_finished_shared_study_leaves_the_evaluation_to_the_first(
    tmp_path: Path, model_cache: Path
) -> None:
    """In-process, over a shared SQLite storage: the same study id, one evaluation, a second worker
    (started later on the same machine) finds nothing left and evaluates nothing."""
    import contextlib
    import io

    from conftest import TINY_OVERRIDES
    from dsm5_hpo.cli import train
    from dsm5_hpo.hpo.workers import shared_study_id

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    overrides = [
        *TINY_OVERRIDES,
        f"hpo.storage={storage}",
        "hpo.study_name=joined",
        f"paths.experiments_dir={tmp_path / 'experiments'}",
        f"paths.cache_dir={model_cache}",
    ]
    outputs = []
    for _ in range(2):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert train.main(["--config", str(CONFIG_FILE), *overrides]) == 0, buffer.getvalue()
        outputs.append(buffer.getvalue())
    (study_dir,) = (tmp_path / "experiments").glob("study_*")
    assert study_dir.name == f"study_{shared_study_id(storage, 'joined')}"
    assert "test joint_f1" in outputs[0] and "report:" in outputs[0]
    assert "test joint_f1" not in outputs[1]  # the second worker did not evaluate again
    study = optuna.load_study(study_name="joined", storage=storage)
    assert len(study.trials) == 2 and study.user_attrs["final_evaluation"]
    record = json.loads((study_dir / "study.json").read_text())
    assert record["state"] == "COMPLETE" and record["report"]  # the first worker's report is kept
    assert (study_dir / "logs").is_dir() and list((study_dir / "logs").glob("worker_*.jsonl"))


def test_a_dead_workers_trial_whose_folder_is_elsewhere_is_started_again(
    tmp_path: Path, model_cache: Path
) -> None:
    """The dead worker ran on another machine (its trial folder is not visible here): the trial is
    queued again and run from epoch 0 by this worker, and the study still ends with n_trials."""
    import contextlib
    import io

    from conftest import TINY_OVERRIDES
    from dsm5_hpo.cli import train
    from dsm5_hpo.cli.common import compose_config
    from dsm5_hpo.hpo.search_space import suggest_params
    from dsm5_hpo.hpo.workers import make_storage

    storage_url = f"sqlite:///{tmp_path / 'shared.db'}"
    overrides = [
        *TINY_OVERRIDES,
        f"hpo.storage={storage_url}",
        "hpo.study_name=elsewhere",
        "hpo.heartbeat_interval_s=1",
        "hpo.heartbeat_grace_s=2",
        f"paths.experiments_dir={tmp_path / 'experiments'}",
        f"paths.cache_dir={model_cache}",
    ]
    config = compose_config(CONFIG_FILE, overrides)
    storage = make_storage(config.hpo)
    study = optuna.create_study(study_name="elsewhere", storage=storage, direction="maximize")
    dead = study.ask()
    suggest_params(dead, config.hpo.search_space)
    elsewhere = tmp_path / "other_machine" / "trial_dead"  # never created here
    dead.set_user_attr("trial_uuid", "dead")
    dead.set_user_attr("trial_dir", str(elsewhere))
    dead.set_user_attr("worker", "other-host:1")
    dead.report(0.5, 0)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3.0)  # past the grace period: that worker is gone

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert train.main(["--config", str(CONFIG_FILE), *overrides]) == 0, buffer.getvalue()
    trials = optuna.load_study(study_name="elsewhere", storage=storage_url).trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 2
    (retry,) = [t for t in trials if retried_from(t) == dead.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == dead.params
    log = (elsewhere / "logs" / "trial.jsonl").read_text()
    assert "resuming from" not in log  # no checkpoint to continue from: trained again from epoch 0
    assert sorted(retry.intermediate_values) == [0, 1]
    assert json.loads((elsewhere / "trial.json").read_text())["state"] == "COMPLETE"
