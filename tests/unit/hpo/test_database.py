"""The shared study database (hpo/database.py): which errors are an outage, the retries that ride one
out, the resumable stop when they run out, the bounded pool. In-process, over SQLite, with failures
injected where Optuna's RDBStorage calls the database."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from dsm5_hpo.cli.common import run_cli
from dsm5_hpo.config import HPOConfig
from dsm5_hpo.errors import ConfigError, ResumableStop, StorageUnavailable
from dsm5_hpo.hpo.database import (
    CONNECTIONS_PER_WORKER,
    cause_of,
    is_transient,
    opened_storage,
    retry_config,
)
from dsm5_hpo.hpo.workers import SharedWorker, make_storage


def storage_error(message: str) -> optuna.exceptions.StorageInternalError:
    """What Optuna raises for a driver error: StorageInternalError from SQLAlchemy's OperationalError."""
    driver = Exception(message)
    operational = sqlalchemy.exc.OperationalError("SELECT 1", {}, driver)
    try:
        try:
            raise operational
        except sqlalchemy.exc.OperationalError as error:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit."
            ) from error
    except optuna.exceptions.StorageInternalError as wrapped:
        return wrapped


TOO_MANY = (
    'connection failed: connection to server at "127.0.0.1", port 5: FATAL:  sorry, too many clients already'
)


@pytest.mark.parametrize(
    "message",
    [
        TOO_MANY,
        "connection failed: Connection refused\n\tIs the server running on that host?",
        "server closed the connection unexpectedly",
        "terminating connection due to administrator command",
        "FATAL:  the database system is starting up",
        "SSL connection has been closed unexpectedly",
    ],
)
def test_an_outage_is_transient(message: str) -> None:
    assert is_transient(storage_error(message))


@pytest.mark.parametrize(
    "message",
    [
        'FATAL:  password authentication failed for user "dsm5"',
        'FATAL:  database "optuna" does not exist',
        "syntax error at or near SELEC",
    ],
)
def test_a_wrong_url_password_or_bug_is_not(message: str) -> None:
    assert not is_transient(storage_error(message))
    assert not is_transient(ValueError("connection refused"))  # not a database error at all


def test_the_cause_is_the_drivers_first_line_not_optunas() -> None:
    cause = cause_of(storage_error(TOO_MANY + "\nmore detail"))
    assert "too many clients already" in cause and "\n" not in cause and "commit" not in cause


def test_the_retries_cover_the_configured_outage() -> None:
    config = retry_config(120)
    assert config.delays()[:5] == [1, 2, 4, 8, 16] and max(config.delays()) == 30
    assert sum(config.delays()) >= 120 > sum(config.delays()[:-1])
    assert retry_config(0).max_attempts == 1  # 0: no retry


def shared(tmp_path: Path, **changes: Any) -> HPOConfig:
    return HPOConfig(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        study_name="s",
        n_trials=2,
        heartbeat_interval_s=1,
        heartbeat_grace_s=2,
        **changes,
    )


class Outage:
    """Makes one RDBStorage method fail with a transient error ``times`` times, then work again."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, method: str, times: int, message: str = TOO_MANY
    ) -> None:
        self.calls = 0
        original = getattr(RDBStorage, method)

        def failing(storage: RDBStorage, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= times:
                raise storage_error(message)
            return original(storage, *args, **kwargs)

        monkeypatch.setattr(RDBStorage, method, failing)


def test_a_short_outage_is_retried_with_backoff_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []
    storage = make_storage(shared(tmp_path), sleep=waits.append)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    outage = Outage(monkeypatch, "set_trial_intermediate_value", times=3)
    with caplog.at_level(logging.WARNING):
        trial.report(0.5, 0)
    assert outage.calls == 4 and waits == [1, 2, 4]
    assert storage.get_trial(trial._trial_id).intermediate_values == {0: 0.5}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("too many clients" in w for w in warnings)
    assert "set_trial_intermediate_value" in warnings[0] and "attempt 1/" in warnings[0]


def test_a_long_outage_stops_the_worker_resumably_naming_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The objective reports while the database is away for good: no FAIL is told (the worker could
    not anyway), the trial stays RUNNING for `make resume` or another worker, the error says why."""
    config = shared(tmp_path, storage_retry_s=10)
    storage = make_storage(config, sleep=lambda s: None)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")

    def objective(trial: optuna.Trial, reported: set[int] | None = None, fence: object = None) -> float:
        Outage(monkeypatch, "set_trial_intermediate_value", times=10**6)
        trial.report(0.1, 0)
        return 0.1

    worker = SharedWorker(study, storage, config, objective, [], sleep=lambda s: None)
    with pytest.raises(StorageUnavailable) as info:
        worker.run_trials()
    monkeypatch.undo()
    assert isinstance(info.value, ResumableStop) and info.value.exit_code == 2
    message = str(info.value)
    assert config.storage in message and "too many clients already" in message and "5 attempts" in message
    assert "hpo.storage_retry_s" in message
    (trial,) = optuna.load_study(study_name="s", storage=config.storage).trials
    assert trial.state == TrialState.RUNNING  # not FAIL: resumable


def test_a_permanent_error_is_raised_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    storage = make_storage(shared(tmp_path), sleep=waits.append)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    Outage(monkeypatch, "set_trial_user_attr", times=1, message='relation "trials" does not exist')
    with pytest.raises(optuna.exceptions.StorageInternalError):
        trial.set_user_attr("k", 1)
    assert waits == []


def test_the_cli_prints_one_line_and_exits_2() -> None:
    def main() -> int:
        raise StorageUnavailable("the study database postgresql://u@h/db is unreachable (too many clients)")

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert run_cli(main, log_stream=io.StringIO()) == 2
    (line,) = stderr.getvalue().strip().splitlines()
    assert line.startswith("error: the study database postgresql://u@h/db is unreachable")
    assert line.endswith("then continue with `make resume`") and "Traceback" not in stderr.getvalue()


def test_an_unreachable_server_at_start_is_a_config_error_after_its_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    config = HPOConfig(storage="postgresql://dsm5@127.0.0.1:9/optuna", study_name="s", storage_retry_s=3)
    with pytest.raises(ConfigError, match=r"hpo.storage.*127.0.0.1:9/optuna.*(refused|connect)"):
        make_storage(config, sleep=waits.append)
    assert waits == [1, 2]  # the server may be restarting: the worker waited for it as it would later


def test_the_worker_pool_is_bounded_and_checks_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine options a PostgreSQL worker gets (no server needed: the engine connects lazily)."""
    config = HPOConfig(storage="postgresql://dsm5@127.0.0.1:9/optuna", study_name="s", storage_retry_s=0)
    built: dict[str, Any] = {}
    original = RDBStorage.__init__

    def capture(
        self: RDBStorage, url: str, engine_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        built.update(engine_kwargs or {})
        raise storage_error("connection failed: Connection refused")

    monkeypatch.setattr(RDBStorage, "__init__", capture)
    with pytest.raises(ConfigError):
        make_storage(config)
    monkeypatch.setattr(RDBStorage, "__init__", original)
    assert built["pool_size"] + built["max_overflow"] == CONNECTIONS_PER_WORKER <= 5
    assert built["pool_pre_ping"] is True and 0 < built["pool_recycle"] <= 3600


def test_a_one_off_read_closes_its_connections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=url)
    with opened_storage(url) as storage:
        assert optuna.load_study(study_name="s", storage=storage).trials == []
        pool = storage.engine.pool
    assert pool.checkedout() == 0


@pytest.mark.parametrize(("key", "value"), [("storage_retry_s", -1.0), ("sampler_startup_trials", -1)])
def test_a_negative_retry_budget_or_startup_count_names_its_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"config key 'hpo.{key}': must be >= 0"):
        HPOConfig(**{key: value})
