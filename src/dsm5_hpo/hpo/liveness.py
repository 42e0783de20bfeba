"""Whether a study is being driven right now, for `make status` and `make cleanup`.

A study of one process holds its lock file (hpo/lock.py) while it runs. A shared study has no lock:
its workers may be on other machines, so its liveness is read from the heartbeats they record in the
study database (hpo/heartbeats.py), a worker being alive when it beat within hpo.heartbeat_grace_s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsm5_hpo.hpo.database import opened_storage
from dsm5_hpo.hpo.heartbeats import live_workers, trial_beats
from dsm5_hpo.hpo.lock import lock_owner

logger = logging.getLogger(__name__)

DEFAULT_GRACE_S = 120.0
"""hpo.heartbeat_grace_s of a record that does not say (it is the config's default)."""


def _grace_s(record: Mapping[str, Any]) -> float:
    hpo = (record.get("config") or {}).get("hpo") or {}
    try:
        return float(hpo.get("heartbeat_grace_s", DEFAULT_GRACE_S))
    except (TypeError, ValueError):
        return DEFAULT_GRACE_S


def study_driver(study_dir: Path, record: Mapping[str, Any]) -> str | None:
    """Who drives the study now, in words ('process 12 on this host', '2 workers: a:1, b:7'), or None
    when no one does. A shared study whose database cannot be read counts as driven: what cannot be
    checked is left alone."""
    if not record.get("shared"):
        return lock_owner(study_dir)
    url, name = str(record.get("optuna_storage", "")), str(record.get("study_name", ""))
    grace_s = _grace_s(record)
    try:
        with opened_storage(url) as storage:
            workers = live_workers(trial_beats(storage, storage.get_study_id_from_name(name)), grace_s)
    except Exception as error:  # noqa: BLE001 - the database is away or the study is not there yet
        logger.debug("cannot read the heartbeats of %s in %s: %s", name, url, error)
        return f"unknown: its database {url.split('@')[-1]} cannot be read ({type(error).__name__})"
    if not workers:
        return None
    return f"{len(workers)} worker{'s' if len(workers) > 1 else ''} beating within {grace_s:.0f} s: {', '.join(workers)}"
