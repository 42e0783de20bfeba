"""How a trial run in its own process failed, and what is done about it: the exit status in words,
the last ERROR its log holds, and Optuna's retry of a trial whose process was killed."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.hpo.workers import retry_history
from dsm5_hpo.layout import TrialPaths

logger = logging.getLogger(__name__)

KILLED_ATTR = "process_killed"
"""Trial user attr: why the trial's process died (set for the retry callback; None once retried)."""


def describe_exit(exitcode: int | None) -> str:
    """'killed by SIGSEGV' / 'exited with code 3' for a process's exit status."""
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {
            "SIGKILL": " (the kernel's OOM killer, or kill -9)",
            "SIGSEGV": " (a crash in native code: a driver, a kernel, a library)",
            "SIGABRT": " (an abort in native code, often CUDA)",
        }.get(name, "")
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode}"


def last_log_error(trial_dir: Path | None) -> str | None:
    """The last ERROR line of the trial's JSON log: what a dead trial process said last."""
    if trial_dir is None:
        return None
    try:
        lines = TrialPaths(trial_dir).log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("level") in ("ERROR", "CRITICAL"):
                return str(entry.get("message", ""))[:500]
    return None


class RetryKilledTrial:
    """After a trial whose process died: Optuna's own retry (same params and user attrs, so the same
    folder and MLflow run, and its reported steps), at most ``max_retry`` times; a trial that kills
    its process every time (it runs out of memory, it crashes a driver) then fails for good."""

    def __init__(self, max_retry: int) -> None:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8, and the documented way to retry
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Optuna 5's name for its retry (RetryFailedTrialCallback is deprecated): the same copy of a trial
            self._retry = RetryHeartbeatStaleTrialCallback(
                max_retry=max_retry, inherit_intermediate_values=True
            )
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL or not trial.user_attrs.get(KILLED_ATTR):
            return
        attempts = len(retry_history(trial)) + 1
        if attempts > self.max_retry:
            logger.error(
                "trial %d's process died, the %d%s time for this trial: it fails for good "
                "(hpo.max_trial_retries=%d)",
                trial.number,
                attempts,
                {1: "st", 2: "nd", 3: "rd"}.get(attempts, "th"),
                self.max_retry,
            )
            return
        self._retry(study, trial)
        logger.warning(
            "trial %d's process died: queued again (retry %d of at most %d), to continue from its last "
            "checkpoint",
            trial.number,
            attempts,
            self.max_retry,
        )
