"""Expected failures, each with the exit code the CLI returns for it.

An expected error carries a message that names the cause and the fix; the CLI prints it
on one line without a traceback. Anything else is a bug or a training failure (exit 1).
"""

from __future__ import annotations

from typing import Literal

StopState = Literal["STOPPED", "INTERRUPTED", "STORAGE_UNAVAILABLE", "STORAGE_EXHAUSTED"]
"""What study.json and trial.json record for a study or trial stopped by a ResumableStop."""


class PipelineError(Exception):
    """Base of every expected failure; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class TrainingError(PipelineError):
    """Training itself failed (non-finite loss, every trial failed, ...)."""

    exit_code = 1


class ConfigError(PipelineError):
    """A config value is missing, of the wrong type or out of range; also a missing model."""

    exit_code = 2


class DataError(PipelineError):
    """Input data is missing or does not match the RedSM5 schema."""

    exit_code = 3


class StorageError(PipelineError):
    """The disk is full or a file we wrote cannot be read back."""

    exit_code = 4


class TrackingError(PipelineError):
    """The experiment tracker cannot be reached or refused our data."""

    exit_code = 5


class ResumableStop(BaseException):  # a stop, not an error: no "Error" suffix
    """Stop the job where it is and leave the study resumable (``make resume`` continues it).

    A BaseException on purpose: Optuna marks a trial FAIL on any Exception (and on
    KeyboardInterrupt), which would end it for good; this one passes through, so the trial stays
    RUNNING in Optuna's storage and ``--resume`` continues it from its last checkpoint. For the
    same reason no ``except Exception`` on the way (housekeeping, retries) can swallow it.
    """

    exit_code = 1
    state: StopState = "STOPPED"
    """What trial.json and study.json record for the stopped trial and study."""
    summary = "stopped"
    """How the study's log says it stopped."""
    hint = "continue with `make resume`"
    """What the CLI prints after the message: how to continue."""


class Interrupted(ResumableStop):
    """SIGINT or SIGTERM: stop where we are and leave the study resumable."""

    exit_code = 130
    state: StopState = "INTERRUPTED"


class StorageUnavailable(ResumableStop):
    """The shared study database stayed unreachable after its retries (hpo.storage_retry_s).

    Resumable: the running trial stays RUNNING in the database with its checkpoints; ``make resume``
    (or another worker, after the heartbeat grace) continues it. Exit 2, as the storage URL is config.
    """

    exit_code = 2
    state: StopState = "STORAGE_UNAVAILABLE"
    summary = "stopped: the study database is unreachable"
    hint = "then continue with `make resume`"


class TrialTakenOver(BaseException):  # a stop of one trial, not an error
    """This worker's trial of a shared study was given to another worker.

    Its heartbeats stopped for longer than hpo.heartbeat_grace_s (the process was paused, the machine
    slept, the network was away), so another worker marked it failed and runs its retry in the same
    folder. The worker stops the trial without writing anything more into that folder or its MLflow run,
    and goes on with the next trial. A BaseException, as ResumableStop, so that no ``except Exception``
    on the way records it as the trial's failure.
    """


class TrialProcessFailed(TrainingError):
    """A trial run in its own process (hpo.trial_isolation=process) ended without a result: it raised,
    or its process died (a signal, an out-of-memory kill). The trial fails with this reason and the
    study goes on; ``killed`` (the process died) makes it eligible for a retry (hpo.max_trial_retries)."""

    def __init__(self, reason: str, *, killed: bool = False) -> None:
        super().__init__(reason)
        self.killed = killed


class StoppedInTrialProcess(ResumableStop):
    """A ResumableStop raised in a trial's own process (a full disk, an unreachable database), carried
    to the study process with its state, exit code and hint, so the study stops as it would in-process."""

    def __init__(self, message: str, *, state: StopState, exit_code: int, summary: str, hint: str) -> None:
        super().__init__(message)
        self.state = state
        self.exit_code = exit_code
        self.summary = summary
        self.hint = hint
