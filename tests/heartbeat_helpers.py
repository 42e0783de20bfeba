"""Heartbeats of a shared study made older without waiting (the tests' stand-in for a silent worker)."""

from __future__ import annotations

from datetime import timedelta

from optuna.storages import RDBStorage
from optuna.storages._rdb import models


def backdate(storage: RDBStorage, trial_id: int, seconds: float) -> None:
    """Make the trial's heartbeat and start ``seconds`` older: a worker silent that long."""
    session = storage.scoped_session()
    try:
        beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session)
        if beat is not None:
            beat.heartbeat = beat.heartbeat - timedelta(seconds=seconds)
        trial = session.get(models.TrialModel, trial_id)
        trial.datetime_start = trial.datetime_start - timedelta(seconds=seconds)
        session.commit()
    finally:
        session.close()
