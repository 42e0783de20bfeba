"""The inside of a trial run in its own process (hpo.trial_isolation=process): the child's side.

The study process (hpo/isolation.py) has asked Optuna for the trial and sampled its parameters; this
process re-attaches the same trial from the Optuna storage (``optuna.trial.Trial(study, trial_id)``
returns the stored parameters, so nothing is sampled twice), reads the study's tokenized windows from
the feature cache, and runs the same :class:`~dsm5_hpo.hpo.objective.Objective` an in-process trial
runs: its folder, trial.json, checkpoints, MLflow run (through an outbox file of its own) and Optuna
reports are written from here. What it sends back is only how the trial ended (:class:`TrialOutcome`);
the study process tells Optuna.

Pinned to its device before anything touches CUDA (the forkserver imported torch but never initialized
CUDA, so ``CUDA_VISIBLE_DEVICES`` set here still decides what this process sees). SIGINT and SIGTERM
stop the trial resumably, as in-process; a study process that dies (SIGKILL) is noticed within a
second and this process stops the same way, so a resumed study never races an orphan in its folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal

import optuna
import torch

from dsm5_hpo.checkpointing.study_retention import prune_study_for_space
from dsm5_hpo.config import StudyConfig, study_config_from_mapping
from dsm5_hpo.errors import ConfigError, Interrupted, ResumableStop, TrialTakenOver
from dsm5_hpo.hpo.database import opened_storage
from dsm5_hpo.hpo.devices import DeviceSlot
from dsm5_hpo.hpo.objective import Objective, seeded_model, training_data
from dsm5_hpo.hpo.pruners import make_pruner
from dsm5_hpo.hpo.sampling import make_sampler
from dsm5_hpo.hpo.search_space import suggest_params
from dsm5_hpo.hpo.trial_folders import trial_folders
from dsm5_hpo.hpo.trial_inputs import InputsByModel, ModelUnavailable, TrialInputs, prepare_inputs
from dsm5_hpo.hpo.workers import TrialLease, make_storage
from dsm5_hpo.storage.monitor import StorageMonitor
from dsm5_hpo.storage.space_guard import SpaceGuard
from dsm5_hpo.tracking.factory import build_tracker
from dsm5_hpo.tracking.tracker import RunSpec
from dsm5_hpo.training.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    distributed_process,
    rank_environment,
)
from dsm5_hpo.training.reporting import Reports
from dsm5_hpo.training.trainer import Trainer
from dsm5_hpo.utils.logging import log_context, setup_logging
from dsm5_hpo.utils.processes import pid_alive

logger = logging.getLogger(__name__)

PARENT_POLL_S = 1.0
"""How often the trial process checks that the study process is alive."""
ORPHAN_GRACE_S = 60.0
"""After the study process died: how long this process has to stop resumably before it kills itself."""

OutcomeKind = Literal["value", "pruned", "failed", "stop", "taken_over"]


@dataclass(frozen=True)
class TrialTask:
    """Everything a trial process needs, picklable: ids and paths, never live objects."""

    config: dict[str, Any]
    """The study's config (StudyConfig.to_dict()); the trial's own params are in the Optuna trial."""
    study_id: str
    storage: str
    """The Optuna storage URL (the study's own SQLite file, or the shared database)."""
    study_name: str
    study_run_id: str
    """The study's MLflow run, parent of the trial's run."""
    trial_id: int
    trial_number: int
    reported: tuple[int, ...]
    """Steps Optuna already holds values for (a re-attached trial)."""
    slot: DeviceSlot
    parent_pid: int
    checkpointing: bool = True
    progress: bool | None = None
    concurrent: int = 1
    """Trials of this study writing at once (hpo.devices), for the disk guard's reserve."""
    log_level: str = "INFO"
    rank: int = 0
    """This process's rank in a DDP trial (train.distributed=ddp); rank 0 runs the objective."""
    master_port: int = 0
    """A DDP trial's rendezvous port on this host (the study process picked a free one)."""
    epoch_hook: Callable[[int, int], None] | None = None
    """Objective.epoch_hook in the trial process (fault injection for tests: a segfault, a memory limit);
    a module-level function, pickled by reference."""


@dataclass(frozen=True)
class TrialOutcome:
    """How the trial ended, as the study process needs it to tell Optuna."""

    kind: OutcomeKind
    value: float | None = None
    message: str = ""
    stop: dict[str, Any] = field(default_factory=dict)
    """For kind='stop': the ResumableStop's class name, state, exit_code, summary and hint."""
    peak_rss_bytes: int = 0
    cuda_peak_bytes: int | None = None


def pin(slot: DeviceSlot) -> None:
    """This process on its slot: one GPU (or none) visible, its share of the CPU cores."""
    if slot.name.startswith("cuda") and torch.cuda._is_in_bad_fork():  # its forkserver had touched CUDA
        raise ConfigError(
            "this trial process was forked from one that had initialized CUDA and cannot use the GPU; "
            "set hpo.trial_start_method=spawn"
        )
    if slot.cuda_visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible
    if slot.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(slot.threads)
        torch.set_num_threads(slot.threads)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted once; a second signal while the trial saves and stops is ignored
    (Ctrl-C reaches this process and the study process, which passes SIGTERM on too)."""
    stopping = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stopping.is_set():
            logger.info("%s: already stopping", signal.Signals(signum).name)
            return
        stopping.set()
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def watch_parent(
    parent_pid: int,
    *,
    alive: Callable[[int], bool] | None = None,
    stop: Callable[[], None] | None = None,
    kill: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    grace_s: float = ORPHAN_GRACE_S,
) -> None:
    """Until the study process dies; then stop this trial resumably (SIGTERM to itself), and kill it
    if it has not stopped ``grace_s`` later. Runs on a daemon thread; its collaborators are injected."""
    alive = alive or pid_alive
    stop = stop or (lambda: os.kill(os.getpid(), signal.SIGTERM))
    kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))
    while alive(parent_pid):
        sleep(PARENT_POLL_S)
    logger.error(
        "the study process %d died; stopping this trial where it is (`make resume` continues it)", parent_pid
    )
    stop()
    waited = 0.0
    while waited < grace_s:
        sleep(PARENT_POLL_S)
        waited += PARENT_POLL_S
    kill()


def trial_main(task: TrialTask, conn: Connection | None) -> None:
    """The trial process's entry: run the trial, send its outcome (rank 0), exit (130 when interrupted)."""
    setup_logging(task.log_level)
    if task.slot.ranks > 1:
        os.environ.update(rank_environment(task.rank, task.slot.ranks, task.master_port))
    try:
        pin(task.slot)
    except ConfigError as error:
        if conn is not None:
            conn.send(TrialOutcome("failed", message=str(error)))
            conn.close()
        return
    threading.Thread(
        target=watch_parent, args=(task.parent_pid,), name="dsm5-parent-watch", daemon=True
    ).start()
    with interrupts_raise():
        outcome = run_task(task) if task.rank == 0 else run_peer(task)
        if conn is not None:
            conn.send(outcome)
            conn.close()
    sys.exit(130 if outcome.stop.get("type") == "Interrupted" else 0)


def _process_group(
    task: TrialTask, config: StudyConfig
) -> contextlib.AbstractContextManager[DistributedContext]:
    """The trial's process group (DDP), joined by every rank; a single process has none."""
    if task.slot.ranks == 1:
        return contextlib.nullcontext(SINGLE_PROCESS)
    return distributed_process(config.train.device)


def _storage(task: TrialTask, config: StudyConfig) -> contextlib.AbstractContextManager[Any]:
    """The study's Optuna storage for this process: the shared database (retried, as a worker's), or
    the study's own SQLite file, closed when the trial ends."""
    if config.hpo.shared:
        return contextlib.nullcontext(make_storage(config.hpo))
    return opened_storage(task.storage)


def run_peer(task: TrialTask) -> TrialOutcome:
    """A rank other than 0 of a DDP trial: train its shard, with rank 0's decisions (validation,
    pruning, checkpoints, tracking are rank 0's). Its outcome is rank 0's, which the study reads."""
    config = study_config_from_mapping(task.config)
    try:
        with (
            log_context(study=task.study_id, trial=task.trial_number),
            _storage(task, config) as storage,
            _process_group(task, config) as context,
        ):
            study = optuna.load_study(study_name=task.study_name, storage=storage)
            trial = optuna.trial.Trial(study, task.trial_id)
            trial_config = config.with_params(suggest_params(trial, config.hpo.search_space))
            inputs = _trial_inputs(config, trial).study
            trainer = Trainer(
                seeded_model(inputs, trial_config),
                trial_config.train,
                criteria=inputs.data.criteria,
                metric=config.hpo.metric,
                max_answer_tokens=trial_config.data.max_answer_tokens,
                progress=False,
                distributed=context,
                # Validates with rank 0 inside each epoch (a collective): the same steps, no callback.
                reports=Reports(config.hpo.report_every_n_steps),
            )
            trainer.fit(*training_data(inputs, trial_config))
            return TrialOutcome("value")
    except ResumableStop as stop:
        return TrialOutcome("stop", message=str(stop), stop={"type": type(stop).__name__})
    except Exception as error:  # noqa: BLE001 - rank 0 says how the trial ended (a prune included)
        return TrialOutcome("failed", message=f"{type(error).__name__}: {error}")


def run_task(task: TrialTask) -> TrialOutcome:
    """Run the trial; every ending becomes a TrialOutcome (nothing escapes but the process's death)."""
    config = study_config_from_mapping(task.config)
    tracker = build_tracker(config)
    try:
        with log_context(study=task.study_id, trial=task.trial_number):
            return _measured(_run(task, config, tracker))
    finally:
        # The trial has ended: a signal now must not lose its outcome (the study process stops anyway).
        with contextlib.suppress(Interrupted):
            tracker.close(config.tracking.drain_timeout_s)


def _measured(outcome: TrialOutcome) -> TrialOutcome:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None
    return TrialOutcome(
        outcome.kind, outcome.value, outcome.message, outcome.stop, peak_rss_bytes=peak, cuda_peak_bytes=cuda
    )


def _run(task: TrialTask, config: StudyConfig, tracker: Any) -> TrialOutcome:
    shared = config.hpo.shared
    try:
        with _storage(task, config) as storage, _process_group(task, config) as context:
            study = optuna.load_study(
                study_name=task.study_name,
                storage=storage,
                sampler=make_sampler(config),
                pruner=make_pruner(config),
            )
            trial = optuna.trial.Trial(study, task.trial_id)
            policy = config.retention_policy
            space = SpaceGuard(
                StorageMonitor(
                    config.paths.experiments,
                    interval_s=policy.disk_check_interval_s,
                    warn_percent=policy.disk_space_threshold_percent,
                    critical_percent=policy.disk_space_threshold_percent / 2,
                ),
                config.paths.experiments,
                threshold_percent=policy.disk_space_threshold_percent,
                study_id=task.study_id,
                prune_study=lambda step: prune_study_for_space(trial_folders(study.trials), policy, step),
                escalate=not policy.keep_all,
                concurrent=task.concurrent,
            )
            study_run = tracker.resume_run(task.study_run_id, RunSpec(f"study-{task.study_id[:8]}"))
            objective = Objective(
                config=config,
                inputs=_trial_inputs(config, trial),
                study_id=task.study_id,
                tracker=tracker,
                study_run=study_run,
                progress=task.progress,
                checkpointing=task.checkpointing,
                space=space,
                device=task.slot.name,
                distributed=context,
                epoch_hook=task.epoch_hook,
            )
            fence = TrialLease(storage, trial).check if shared else None
            value = objective(trial, reported=set(task.reported), fence=fence)
            return TrialOutcome("value", value=value)
    except optuna.TrialPruned as pruned:
        return TrialOutcome("pruned", message=str(pruned))
    except TrialTakenOver as taken:
        return TrialOutcome("taken_over", message=str(taken))
    except ResumableStop as stop:
        return TrialOutcome(
            "stop",
            message=str(stop),
            stop={
                "type": type(stop).__name__,
                "state": stop.state,
                "exit_code": stop.exit_code,
                "summary": stop.summary,
                "hint": stop.hint,
            },
        )
    except Exception as error:
        logger.exception("trial %d failed in its process", task.trial_number)
        said = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return TrialOutcome("failed", message=said)


_REMEMBERED: dict[tuple[Any, Any, int], TrialInputs] = {}
"""Inputs read before this process was forked (hpo/trial_preload.py), by what they depend on: the
encoder, the data settings and the seed (the splits)."""


def remember_inputs(config: StudyConfig, inputs: TrialInputs) -> None:
    """Keep ``inputs`` for the trial processes forked from this one (the forkserver)."""
    _REMEMBERED[(config.model, config.data, config.train.seed)] = inputs


def _trial_inputs(config: StudyConfig, trial: optuna.Trial) -> InputsByModel:
    """The windows of the trial's own encoder and input format: those the forkserver read for the
    study, else from the feature cache the study filled."""
    trial_config = config.with_params(suggest_params(trial, config.hpo.search_space))
    remembered = _REMEMBERED.get((trial_config.model, trial_config.data, trial_config.train.seed))
    if remembered is not None:
        return InputsByModel(trial_config, remembered)
    try:
        inputs = prepare_inputs(trial_config)
    except ConfigError as error:
        raise ModelUnavailable(f"encoder {trial_config.model.name} is not available: {error}") from error
    return InputsByModel(trial_config, inputs)
