"""Trial heartbeats in a shared study: recording them, and reading who is alive from them.

Optuna keeps one heartbeat row per trial (``trial_heartbeats``) and marks a RUNNING trial stale when
its row is older than the grace period. What it does not see, and this module does:

- a RUNNING trial with **no row at all** (its worker died between taking the trial and its first
  beat, which are two transactions): stale once it started longer ago than the grace period;
- **liveness** for `make status` and `make cleanup`: a shared study has no lock file, so whether a
  worker drives it is read from the heartbeats recorded within the grace period.

Optuna has no public call for reading heartbeats; the queries below read its tables through its own
ORM models (Optuna 5.0, pinned in the lock; the unit tests run them against SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState

from dsm5_hpo.errors import StorageUnavailable

logger = logging.getLogger(__name__)

WORKER = "worker"
"""Trial user attr: the worker (host:pid) that runs the trial, or ran it last."""


@dataclass(frozen=True)
class TrialBeat:
    """One trial's heartbeat as the database sees it now."""

    trial_id: int
    number: int
    state: TrialState
    worker: str | None
    beat_age_s: float | None
    """Seconds since its last heartbeat; None when it never beat."""
    start_age_s: float | None
    """Seconds since it started (the taking worker's clock); None when it has not started."""

    @property
    def before_first_beat(self) -> bool:
        """Taken by a worker (RUNNING, started) that has not recorded a heartbeat for it yet."""
        return self.state == TrialState.RUNNING and self.beat_age_s is None and self.start_age_s is not None


def trial_beats(storage: RDBStorage, study_id: int) -> list[TrialBeat]:
    """Every started trial of the study with the age of its last heartbeat, in one read."""
    session: Any = storage.scoped_session()  # Optuna's ORM models carry no type information
    try:
        # The database's clock for the heartbeats (Optuna writes them with now() there); the start time
        # is written by the worker's Python in UTC, so it is compared with this host's UTC clock.
        db_now = session.execute(sqlalchemy.func.now()).scalar()
        host_now = datetime.now(UTC).replace(tzinfo=None)
        assert db_now is not None
        db_now = db_now.replace(tzinfo=None)  # as Optuna does: PostgreSQL answers tz-aware, SQLite not
        rows = (
            session.query(
                models.TrialModel.trial_id,
                models.TrialModel.number,
                models.TrialModel.state,
                models.TrialModel._datetime_start_utc,  # naive UTC (Optuna 5)
                models.TrialHeartbeatModel.heartbeat,
            )
            .outerjoin(
                models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id
            )
            .filter(models.TrialModel.study_id == study_id, models.TrialModel.state != TrialState.WAITING)
            .all()
        )
        workers = dict(
            session.query(models.TrialUserAttributeModel.trial_id, models.TrialUserAttributeModel.value_json)
            .join(models.TrialModel, models.TrialModel.trial_id == models.TrialUserAttributeModel.trial_id)
            .filter(models.TrialModel.study_id == study_id, models.TrialUserAttributeModel.key == WORKER)
            .all()
        )
    finally:
        session.close()

    def age(now: datetime, then: datetime | None) -> float | None:
        return None if then is None else max(0.0, (now - then.replace(tzinfo=None)).total_seconds())

    return [
        TrialBeat(
            trial_id=trial_id,
            number=number,
            state=state,
            worker=str(json.loads(workers[trial_id])) if trial_id in workers else None,
            beat_age_s=age(db_now, heartbeat),
            start_age_s=age(host_now, started),
        )
        for trial_id, number, state, started, heartbeat in rows
    ]


def beatless_stale_trial_ids(beats: list[TrialBeat], grace_s: float) -> list[int]:
    """RUNNING trials that never beat and started longer ago than the grace period: their worker died
    between taking the trial and its first heartbeat."""
    return [
        beat.trial_id
        for beat in beats
        if beat.before_first_beat and beat.start_age_s is not None and beat.start_age_s > grace_s
    ]


def live_workers(beats: list[TrialBeat], grace_s: float) -> list[str]:
    """The workers that showed life within the grace period: a recent heartbeat (a running trial, or the
    final evaluation, which beats on the best trial), or a trial taken so recently it has not beaten yet."""
    alive = {
        beat.worker or f"the worker of trial {beat.number}"
        for beat in beats
        if (beat.beat_age_s is not None and beat.beat_age_s <= grace_s)
        or (beat.before_first_beat and beat.start_age_s is not None and beat.start_age_s <= grace_s)
    }
    return sorted(alive)


class Heartbeat:
    """Records the trial's heartbeat every interval until the block ends (a daemon thread)."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval_s: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dsm5-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self._storage.record_heartbeat(self._trial_id)
            except (Exception, StorageUnavailable) as error:  # noqa: BLE001 - the next beat tries again;
                # the trial goes on, and the main thread stops the worker if the database stays away
                logger.warning("cannot record the heartbeat of trial id %d: %s", self._trial_id, error)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
