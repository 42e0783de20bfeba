"""Each trial in a process of its own (hpo.trial_isolation=process): the study process's side.

:class:`IsolatedObjective` has the objective's signature, so the one trial runner (hpo/trial_runner.py)
runs it like the in-process objective: it samples the trial's parameters here (the study's sampler,
in the same order as in-process, so a seed gives the same trials), starts the trial's process
(hpo/trial_process.py) on its device, waits, and turns what the process sent back into what the
runner expects: a value, ``TrialPruned``, a ``ResumableStop``, or :class:`TrialProcessFailed` when the
trial raised or its process died (a signal, the OOM killer, a CUDA out-of-memory). A dead process's
reason (signal name or exit code, and the last ERROR of the trial's log) goes into trial.json, the
trial's Optuna attrs and its MLflow run; :class:`RetryKilledTrial` queues a killed trial again (at most
hpo.max_trial_retries times) to continue from its last checkpoint.

SIGINT/SIGTERM of the study process reach the trial process as SIGTERM: it stops where it is, as an
in-process trial does, and the study exits 130, resumable. Memory: the trial's model, optimizer and
CUDA context go with its process; the study process records its own memory before and after each trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import optuna
import torch

from dsm5_hpo.config import StudyConfig
from dsm5_hpo.errors import Interrupted, StoppedInTrialProcess, TrialProcessFailed, TrialTakenOver
from dsm5_hpo.hpo.devices import DeviceSlot
from dsm5_hpo.hpo.records import read_trial_record, write_trial_record
from dsm5_hpo.hpo.search_space import suggest_params
from dsm5_hpo.hpo.trial_failures import KILLED_ATTR, describe_exit, last_log_error
from dsm5_hpo.hpo.trial_folders import trial_dir_of
from dsm5_hpo.hpo.trial_process import TrialOutcome, TrialTask, trial_main
from dsm5_hpo.layout import TrialPaths
from dsm5_hpo.tracking.tracker import RunSpec, Tracker

logger = logging.getLogger(__name__)

WARM_STUDY_ENV = "DSM5_HPO_WARM_STUDY"
"""The study folder whose windows the forkserver reads once (hpo/trial_preload.py reads it)."""
DEVICE_ATTR = "device"
"""Trial user attr: the device the trial (its last attempt) ran on."""
POLL_S = 0.2
STOP_WAIT_S = 120.0
"""After passing SIGTERM on: how long the trial process may take to stop before it is killed."""
EXIT_WAIT_S = 30.0
"""After its outcome: how long the trial process may take to exit (CUDA teardown) before it is killed."""


def free_port() -> int:
    """A TCP port free on this host now, for a DDP trial's rendezvous (its rank 0 binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def current_rss() -> int:
    """This process's resident memory in bytes (Linux /proc; elsewhere its peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cuda_allocated() -> int | None:
    """CUDA memory this process holds (None where it never used CUDA: asking would create a context)."""
    return torch.cuda.memory_allocated() if torch.cuda.is_initialized() else None


def trial_context(method: str, study_dir: Path | None = None) -> BaseContext:
    """The multiprocessing context trial processes start from. A forkserver imports the trial code
    (torch, transformers, MLflow) and reads ``study_dir``'s windows once (hpo/trial_preload.py), so a
    trial starts in a fraction of a second instead of seconds; it is started here, in the background,
    so that its imports overlap the study's own start."""
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        if study_dir is not None:  # the server inherits this process's environment when it starts
            os.environ[WARM_STUDY_ENV] = str(study_dir)
        context.set_forkserver_preload(["dsm5_hpo.hpo.trial_preload"])
        threading.Thread(
            target=multiprocessing.forkserver.ensure_running, name="dsm5-forkserver", daemon=True
        ).start()
    return context


@dataclass(kw_only=True)
class IsolatedObjective:
    """The objective of trials run in processes of their own, one device slot."""

    config: StudyConfig
    study_id: str
    storage: str
    study_name: str
    study_run_id: str
    tracker: Tracker
    """The study process's tracker: records a dead trial's failure in its MLflow run."""
    slot: DeviceSlot
    context: BaseContext
    checkpointing: bool = True
    progress: bool | None = None
    concurrent: int = 1
    sampling: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext)
    """Held while sampling (a sampler is not thread-safe: several device slots share one)."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set by the study (another thread got the signal): stop the trial process resumably."""
    epoch_hook: Callable[[int, int], None] | None = None
    """Objective.epoch_hook, in the trial's process (fault injection for tests)."""

    def __call__(
        self, trial: optuna.Trial, reported: set[int] | None = None, fence: Callable[[], None] | None = None
    ) -> float:
        if self.stop.is_set():  # the study is stopping: this trial stays RUNNING, for the resume
            raise Interrupted("stopped with the study")
        with self.sampling:
            suggest_params(trial, self.config.hpo.search_space)  # stored in Optuna: the process reads them
        if trial.user_attrs.get(KILLED_ATTR):  # a retry: its original's death is not its own
            trial.set_user_attr(KILLED_ATTR, None)
            trial.set_user_attr("error", None)
        trial.set_user_attr(DEVICE_ATTR, self.slot.name)
        task = TrialTask(
            config=self.config.to_dict(),
            study_id=self.study_id,
            storage=self.storage,
            study_name=self.study_name,
            study_run_id=self.study_run_id,
            trial_id=trial._trial_id,
            trial_number=trial.number,
            reported=tuple(sorted(reported or ())),
            slot=self.slot,
            parent_pid=os.getpid(),
            checkpointing=self.checkpointing,
            progress=self.progress,
            concurrent=self.concurrent,
            log_level=logging.getLevelName(logging.getLogger("dsm5_hpo").getEffectiveLevel()),
            epoch_hook=self.epoch_hook,
        )
        before = {"study_rss_bytes_before": current_rss(), "study_cuda_bytes_before": cuda_allocated()}
        receiver, sender = self.context.Pipe(duplex=False)
        if self.slot.ranks > 1:  # a DDP trial: rank 0 (this pipe) and its peers meet on a free port
            task = dataclasses.replace(task, master_port=free_port())
        process = self.context.Process(  # type: ignore[attr-defined]
            target=trial_main, args=(task, sender), name=f"dsm5-trial-{trial.number}", daemon=False
        )
        peers = [
            self.context.Process(  # type: ignore[attr-defined]
                target=trial_main,
                args=(dataclasses.replace(task, rank=rank), None),
                name=f"dsm5-trial-{trial.number}-rank{rank}",
                daemon=False,
            )
            for rank in range(1, self.slot.ranks)
        ]
        started = time.monotonic()
        process.start()
        sender.close()  # ours: the trial's end of the pipe lives in its process now
        for peer in peers:
            peer.start()
        logger.info(
            "trial %d runs in process %d%s on %s",
            trial.number,
            process.pid,
            f" and {', '.join(str(p.pid) for p in peers)}" if peers else "",
            self.slot.name,
        )
        try:
            outcome, interrupted = self._wait(process, receiver, peers)
        finally:
            receiver.close()
        for each in (process, *peers):
            each.join(EXIT_WAIT_S)
            if each.is_alive():
                logger.warning(
                    "trial %d: process %d did not exit after its outcome; killing it", trial.number, each.pid
                )
                each.kill()
                each.join()
        dead_peer = next((p for p in peers if p.exitcode not in (0, 130)), None)
        if outcome is None and dead_peer is not None and process.exitcode in (0, 130, None, -signal.SIGKILL):
            process = dead_peer  # the rank that died first is the trial's reason
        facts = {
            "pid": process.pid,
            "ranks": self.slot.ranks,
            "exit": describe_exit(process.exitcode),
            "seconds": round(time.monotonic() - started, 3),
            **before,
            "study_rss_bytes_after": current_rss(),
            "study_cuda_bytes_after": cuda_allocated(),
        }
        if outcome is not None:
            facts["peak_rss_bytes"] = outcome.peak_rss_bytes
            facts["cuda_peak_bytes"] = outcome.cuda_peak_bytes
        self._record(trial, facts)
        if interrupted is not None and (outcome is None or outcome.kind == "stop"):
            raise Interrupted(interrupted)  # the trial stays RUNNING: `make resume` continues it
        # Ended before the signal reached it: told as it ended; the study stops before the next trial.
        return self._verdict(trial, outcome, process.exitcode, facts)

    def _wait(
        self,
        process: multiprocessing.process.BaseProcess,
        receiver: Any,
        peers: Sequence[multiprocessing.process.BaseProcess] = (),
    ) -> tuple[TrialOutcome | None, str | None]:
        """The trial's outcome (None: it died without one) and, when the study is stopping, the signal.
        A DDP peer that dies takes the trial with it: the other ranks are killed (they would wait for it
        in their next collective)."""
        interrupted: str | None = None
        deadline: float | None = None
        while True:
            dead = next((p for p in peers if p.exitcode is not None and p.exitcode not in (0, 130)), None)
            if dead is not None and interrupted is None:
                logger.error(
                    "trial process %d (a DDP rank) %s: stopping its trial",
                    dead.pid,
                    describe_exit(dead.exitcode),
                )
                for each in (process, *peers):
                    if each.is_alive():
                        each.kill()
                return None, interrupted
            try:
                if receiver.poll(POLL_S):
                    try:
                        outcome: TrialOutcome = receiver.recv()
                    except EOFError:  # closed without a word: the process died
                        return None, interrupted
                    if outcome.kind == "stop" and outcome.stop.get("type") == "Interrupted":
                        interrupted = interrupted or outcome.message
                    return outcome, interrupted
                if not process.is_alive():
                    return (receiver.recv() if receiver.poll(0) else None), interrupted
                if self.stop.is_set() and interrupted is None:
                    interrupted = "stopped with the study"
                    deadline = self._pass_on(process, *peers)
                if deadline is not None and time.monotonic() > deadline:
                    logger.error(
                        "trial process %d did not stop in %.0f s; killing it", process.pid, STOP_WAIT_S
                    )
                    for each in (process, *peers):
                        each.kill()
                    deadline = None
            except Interrupted as signal_name:  # this process got SIGINT/SIGTERM (the main thread)
                self.stop.set()  # no further trial starts, whichever way this one ends
                if interrupted is None:
                    interrupted = str(signal_name)
                    deadline = self._pass_on(process, *peers)

    @staticmethod
    def _pass_on(*processes: multiprocessing.process.BaseProcess) -> float:
        logger.warning(
            "stopping trial process %s where it is (resumable)", ", ".join(str(p.pid) for p in processes)
        )
        for process in processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        return time.monotonic() + STOP_WAIT_S

    def _verdict(
        self, trial: optuna.Trial, outcome: TrialOutcome | None, exitcode: int | None, facts: dict[str, Any]
    ) -> float:
        if outcome is None:
            trial_dir = trial_dir_of(trial.storage.get_trial(trial._trial_id))
            said = last_log_error(trial_dir)
            reason = f"trial process {describe_exit(exitcode)}" + (
                f"; its log's last ERROR: {said}" if said else ""
            )
            # A signal (a crash, the OOM killer) may not happen again: retried. An exit code is Python
            # dying on its own (an error before the trial could say how it ended): it would again.
            killed = exitcode is None or exitcode < 0
            self._record_death(trial, trial_dir, reason, killed=killed)
            raise TrialProcessFailed(reason, killed=killed)
        if outcome.kind == "value" and outcome.value is not None:
            return outcome.value
        if outcome.kind == "pruned":
            raise optuna.TrialPruned(outcome.message)
        if outcome.kind == "taken_over":
            raise TrialTakenOver(outcome.message)
        if outcome.kind == "stop":
            stop = outcome.stop
            raise StoppedInTrialProcess(
                outcome.message,
                state=stop["state"],
                exit_code=int(stop["exit_code"]),
                summary=str(stop["summary"]),
                hint=str(stop["hint"]),
            )
        raise TrialProcessFailed(outcome.message or "the trial process sent no result")

    def _record(self, trial: optuna.Trial, facts: dict[str, Any]) -> None:
        """The process's facts into the trial's Optuna attrs and trial.json (after its own last write)."""
        with contextlib.suppress(Exception):
            trial.set_user_attr("process", facts)
        trial_dir = trial_dir_of(trial.storage.get_trial(trial._trial_id))
        if trial_dir is None or not TrialPaths(trial_dir).record.is_file():
            return
        try:
            record = read_trial_record(trial_dir)
            record.process = facts
            write_trial_record(trial_dir, record)
        except Exception as error:  # noqa: BLE001 - a report detail; the trial's outcome matters more
            logger.warning("cannot add the process facts to trial %d's trial.json: %s", trial.number, error)

    def _record_death(
        self, trial: optuna.Trial, trial_dir: Path | None, reason: str, *, killed: bool
    ) -> None:
        """Where people look (trial.json, Optuna attrs, MLflow), as the objective records an error."""
        trial.set_user_attr("error", reason[:2000])  # the trial runner logs it, as any trial's failure
        if killed:  # what RetryKilledTrial queues again
            trial.set_user_attr(KILLED_ATTR, reason[:500])
        if trial_dir is not None and TrialPaths(trial_dir).record.is_file():
            with contextlib.suppress(Exception):
                record = read_trial_record(trial_dir)
                record.state, record.error = "FAILED", reason
                record.finished_at = datetime.now(UTC).isoformat()
                write_trial_record(trial_dir, record)
        run_id = trial.storage.get_trial(trial._trial_id).user_attrs.get("mlflow_run_id")
        if run_id:
            with contextlib.suppress(Exception):
                run = self.tracker.resume_run(str(run_id), RunSpec(f"trial-{trial.number}"))
                run.set_tags({"error": reason[:5000], "optuna_state": "FAILED"})
                run.finish("FAILED")
