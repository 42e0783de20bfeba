"""The shared study database (hpo.storage): one bounded connection pool per worker process, and calls
that ride out a transient outage instead of killing the worker.

Connections. SQLAlchemy gives every engine its own pool, released only when the engine is disposed or
garbage-collected, so an engine per call (``optuna.load_study(storage=url)`` in a loop) leaks
connections at the speed of the loop. A worker builds one :class:`RetryingStorage` for its whole run;
its pool is sized to what one worker uses at once (the main thread, the heartbeat thread, and the
advisory lock held while the main thread asks for a trial): ``POOL_SIZE + MAX_OVERFLOW`` connections at
most, whatever the study's length. One-off readers (status, plots, summaries) use
:func:`opened_storage`, which disposes its pool on exit.

Outages. A connection refused, "too many clients", a restarted server or a connection the server
dropped reach Optuna as ``StorageInternalError`` raised from SQLAlchemy's ``OperationalError``. Those
calls are retried with exponential backoff (``utils.retry``, a WARNING per attempt) for about
hpo.storage_retry_s; the pool is pre-pinged and recycled, so a dead pooled connection is replaced
rather than handed out. When the retries run out the worker stops resumably
(:class:`~dsm5_hpo.errors.StorageUnavailable`, exit 2): its trial stays RUNNING with its checkpoints,
and ``make resume`` (or any other worker, once the heartbeat grace has passed) continues it.

A write retried after the server committed it but before the answer arrived could apply twice; the
window is one round trip, and the writes a worker repeats (heartbeats, attributes, intermediate values)
are idempotent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages import RDBStorage

from dsm5_hpo.config import HPOConfig
from dsm5_hpo.errors import ConfigError, StorageUnavailable
from dsm5_hpo.hpo.heartbeats import beatless_stale_trial_ids, trial_beats
from dsm5_hpo.utils.retry import RetryConfig, call_with_retry

logger = logging.getLogger(__name__)

R = TypeVar("R")

POOL_SIZE = 2
"""Connections a worker keeps open: the main thread's and the heartbeat thread's."""
MAX_OVERFLOW = 2
"""Extra connections for a moment's peak (the advisory lock held while the main thread asks)."""
CONNECTIONS_PER_WORKER = POOL_SIZE + MAX_OVERFLOW
"""The most one worker process holds at once (the README's "k x N connections")."""
POOL_RECYCLE_S = 1800
"""Replace pooled connections older than this: servers and proxies drop idle ones after about an hour."""

_TRANSIENT_MARKERS = (
    "connection refused",
    "too many clients",
    "could not connect",
    "connection failed",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "connection timed out",
    "connection reset",
    "connection is closed",
    "ssl connection has been closed",
    "broken pipe",
    "no connection to the server",
)
_PERMANENT_MARKERS = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(error: BaseException) -> bool:
    """Whether a storage error is the database being away for a while (retry) rather than a wrong URL,
    a wrong password or a bug (fail at once)."""
    from sqlalchemy import exc as sqlalchemy_exc

    text = " ".join(str(e) for e in _chain(error)).lower()
    if any(marker in text for marker in _PERMANENT_MARKERS):
        return False
    for link in _chain(error):
        if isinstance(link, sqlalchemy_exc.DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, sqlalchemy_exc.TimeoutError):  # the pool waited its pool_timeout for a connection
            return True
        if isinstance(
            link, (sqlalchemy_exc.OperationalError, sqlalchemy_exc.InterfaceError, ConnectionError)
        ):
            return any(marker in text for marker in _TRANSIENT_MARKERS) or isinstance(link, ConnectionError)
    return False


def cause_of(error: BaseException) -> str:
    """The driver's own first line (psycopg's "connection failed: ... too many clients"), not Optuna's
    generic "An exception is raised during the commit"."""
    deepest = list(_chain(error))[-1]
    lines = str(deepest).strip().splitlines()
    return lines[0] if lines else type(deepest).__name__


def retry_config(outage_s: float) -> RetryConfig:
    """Backoff 1, 2, 4, ... s (at most 30 s apart) until the waits add up to ``outage_s``."""
    config = RetryConfig(max_attempts=1, base_delay=1.0, max_delay=30.0)
    while sum(config.delays()) < outage_s:  # the delays as utils.retry defines them, one more each time
        config = dataclasses.replace(config, max_attempts=config.max_attempts + 1)
    return config


_RETRIED_METHODS = (
    # Optuna's BaseStorage and BaseHeartbeat API, as RDBStorage implements it (Optuna 5).
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
)


class RetryingStorage(RDBStorage):
    """Optuna's RDBStorage whose calls retry transient database errors (see the module docstring).

    Optuna wraps it in its own cache as any RDBStorage, so studies, trials, heartbeats and
    ``fail_stale_trials`` all go through the retries.
    """

    retry: RetryConfig = RetryConfig()
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def _retried(self, method: Callable[[], R], name: str) -> R:
        try:
            return call_with_retry(
                method,
                config=self.retry,
                retry_on=(Exception,),
                retry_if=is_transient,
                describe_error=cause_of,
                sleep=self.sleep,
                description=f"study database {self.url}: {name}",
            )
        except Exception as error:
            if not is_transient(error):
                raise
            raise StorageUnavailable(
                f"the study database {self.url} is unreachable ({cause_of(error)}) after "
                f"{self.retry.max_attempts} attempts over {sum(self.retry.delays()):.0f} s; the running trial "
                "keeps its checkpoints: start the database (or raise hpo.storage_retry_s),"
            ) from error

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials (a heartbeat older than the grace period) and those that never beat: a
        worker killed between taking a trial and its first heartbeat (two transactions) leaves one,
        which Optuna alone would leave RUNNING forever, and every other worker waiting for it."""

        def stale() -> list[int]:
            stale_ids = list(getattr(RDBStorage, "_get_stale_trial_ids")(self, study_id))  # noqa: B009 - looked up at each call
            grace_s = float(self.grace_period or 2 * (self.heartbeat_interval or 1))
            beatless = beatless_stale_trial_ids(trial_beats(self, study_id), grace_s)
            return stale_ids + [trial_id for trial_id in beatless if trial_id not in stale_ids]

        return self._retried(stale, "_get_stale_trial_ids")


def _retrying(name: str) -> Callable[..., Any]:
    original = getattr(RDBStorage, name)

    @functools.wraps(original)
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        # Looked up at each call, not bound once: a test injects failures into RDBStorage itself.
        return self._retried(lambda: getattr(RDBStorage, name)(self, *args, **kwargs), name)

    return method


for _name in _RETRIED_METHODS:  # one wrapper per storage call: the list is Optuna's storage API
    setattr(RetryingStorage, _name, _retrying(_name))


def open_storage(
    config: HPOConfig,
    *,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RetryingStorage:
    """The worker's one storage for its whole run (a bounded pool; see the module docstring)."""
    sqlite = config.storage.startswith("sqlite")
    engine_kwargs: dict[str, Any] = (
        {}
        if sqlite  # SQLite: a file, no server to lose; SQLAlchemy picks its own pool for it
        else {
            "pool_size": POOL_SIZE,
            "max_overflow": MAX_OVERFLOW,
            "pool_pre_ping": True,
            "pool_recycle": POOL_RECYCLE_S,
            "pool_timeout": 60,
            # Who holds a connection, in pg_stat_activity: the worker, by host and process.
            "connect_args": {"application_name": f"dsm5_hpo {socket.gethostname()}:{os.getpid()}"[:63]},
        }
    )
    retry = retry_config(config.storage_retry_s)

    def build() -> RetryingStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9, and documented
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RetryingStorage(
                config.storage,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=max(1, round(config.heartbeat_interval_s)),
                grace_period=max(2, round(config.heartbeat_grace_s)),
                heartbeat_stale_trial_callback=stale_trial_callback,
            )

    try:
        # A worker started while the server restarts waits for it as a running worker would.
        storage = call_with_retry(
            build,
            config=retry,
            retry_if=is_transient,
            describe_error=cause_of,
            sleep=sleep,
            description=f"opening the study database {config.storage}",
        )
    except Exception as error:  # SQLAlchemy/driver errors: server down, wrong database, no driver
        raise ConfigError(
            f"config key 'hpo.storage': cannot open the shared study storage {config.storage} "
            f"({cause_of(error)}); check that the database server runs and accepts this user (password "
            "in PGPASSWORD or ~/.pgpass)"
        ) from error
    storage.retry = retry
    storage.sleep = sleep
    return storage


@contextlib.contextmanager
def opened_storage(url: str) -> Iterator[RDBStorage]:
    """A storage for one read (status, plots, summaries): its connections are closed on exit, not
    whenever the garbage collector gets to them. Two at most: Optuna's schema check on a new
    database holds one connection while it opens a session on another."""
    storage = RDBStorage(
        url, engine_kwargs={} if url.startswith("sqlite") else {"pool_size": 1, "max_overflow": 1}
    )
    try:
        yield storage
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _advisory_key(study_name: str) -> int:
    digest = hashlib.sha256(f"dsm5_hpo/{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def storage_lock(storage: RDBStorage, url: str, study_name: str) -> Iterator[None]:
    """Exclusive across every worker of the study for the duration of the block."""
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1] + ".dsm5.lock")
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    from sqlalchemy import text

    key = _advisory_key(study_name)
    retried = storage._retried if isinstance(storage, RetryingStorage) else lambda method, name: method()
    # A session-level advisory lock on a pooled connection of its own, returned to the pool on every
    # path. A worker killed while holding it loses its connection, and PostgreSQL releases the lock
    # with it; so does a server restart, after which the unlock below has nothing left to release.
    connection = retried(lambda: _locked_connection(storage, key), "advisory lock")
    try:
        yield
    finally:
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
        except Exception as error:  # noqa: BLE001 - the session, and the lock with it, is gone already
            logger.warning(
                "releasing the study lock failed (%s): the server released it with the connection",
                cause_of(error),
            )
            connection.invalidate()
        finally:
            connection.close()


def _locked_connection(storage: RDBStorage, key: int) -> Any:
    from sqlalchemy import text

    connection = storage.engine.connect()
    try:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
    except BaseException:
        connection.close()
        raise
    return connection
