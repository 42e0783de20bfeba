"""The training loop of one trial: epochs of AdamW steps, validation after each epoch.

Collaborators are injected: the run tracker (metrics), the reports (Optuna's report/should_prune,
training/reporting.py), and the best-weights sink. The data order of epoch ``e`` depends only
on (seed, e), so the same config and seed give the same metrics run after run on CPU.

With a DistributedContext of several ranks (train.distributed=ddp) each rank trains on its shard of
the epoch's batches through DistributedDataParallel; rank 0 alone validates, logs, checkpoints and
runs the epoch callback, and its outcome reaches every rank (training/distributed.py).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from dsm5_hpo.checkpointing.manager import CheckpointInfo, CheckpointManager, restore_rng_state
from dsm5_hpo.checkpointing.null import NullCheckpointManager
from dsm5_hpo.checkpointing.size import estimate_checkpoint_bytes
from dsm5_hpo.config import TrainConfig
from dsm5_hpo.data.features import WindowFeatures, collate
from dsm5_hpo.errors import TrainingError
from dsm5_hpo.evaluation.prediction import EvaluationData, evaluate_model
from dsm5_hpo.models.multi_task import DualHeadModel, DualOutput, LossParts, forward_batch, joint_loss
from dsm5_hpo.models.precision import autocast, resolve_device, resolve_precision
from dsm5_hpo.tracking.tracker import NullRunTracker, RunTracker
from dsm5_hpo.training import distributed as ddp
from dsm5_hpo.training import memory
from dsm5_hpo.training.acceleration import COMPILED_LENGTH_MULTIPLE, StepPlan, prepare_forward
from dsm5_hpo.training.distributed import SINGLE_PROCESS, DistributedContext, Shard, on_main_rank
from dsm5_hpo.training.epochs import epoch_batches, loss_settings, optimizer_steps
from dsm5_hpo.training.optimization import build_optimizer, build_schedule, freeze_lowest_layers
from dsm5_hpo.training.reporting import Reports
from dsm5_hpo.training.steps import optimizer_step, progress, training_state
from dsm5_hpo.utils.logging import set_log_context

logger = logging.getLogger(__name__)

CheckpointStore = CheckpointManager | NullCheckpointManager
EpochCallback = Callable[[int, dict[str, float | None]], None]
"""Called with (epoch, validation metrics) after each epoch; may raise to stop the trial."""


@dataclass
class FitResult:
    best_value: float
    best_epoch: int
    best_metrics: dict[str, float | None]
    history: list[dict[str, float | None]] = field(default_factory=list)
    epochs_run: int = 0


class Trainer:
    def __init__(
        self,
        model: DualHeadModel,
        config: TrainConfig,
        *,
        criteria: Sequence[str],
        metric: str,
        max_answer_tokens: int,
        tracker: RunTracker | None = None,
        epoch_callback: EpochCallback | None = None,
        checkpoints: CheckpointStore | None = None,
        progress: bool | None = None,
        distributed: DistributedContext | None = None,
        compile_cache: Path | None = None,
        reports: Reports | None = None,
    ) -> None:
        """``compile_cache``: where train.compile keeps inductor's cache and the auto probe's answers."""
        self.config = config
        self.compile_cache = compile_cache
        self.distributed = distributed or SINGLE_PROCESS
        self.device = self.distributed.device or resolve_device(config.device)
        autocast(self.device, config.precision)  # refuses fp16 without CUDA before any work is done
        self.precision = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.criteria = tuple(criteria)
        self.metric = metric
        self.max_answer_tokens = max_answer_tokens
        # Only rank 0 logs, checkpoints and decides on pruning (the others' would be duplicates, or
        # writers racing on the trial folder): a DDP trial may pass the same collaborators to every rank.
        main = self.distributed.is_main
        self.tracker: RunTracker = (tracker if main else None) or NullRunTracker()
        self.epoch_callback = epoch_callback if main else None
        self.reports = reports or Reports()  # on every rank: the validations inside an epoch are collective
        self.checkpoints: CheckpointStore = (checkpoints if main else None) or NullCheckpointManager()
        self.resumed_from: CheckpointInfo | None = None
        self.progress = main and (sys.stdout.isatty() if progress is None else progress)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        frozen = freeze_lowest_layers(self.model, config.freeze_layers)
        if frozen:
            logger.info(
                "froze the embeddings and the lowest %d encoder layers (%d parameters)",
                config.freeze_layers,
                frozen,
            )
        self.loss = loss_settings(config)
        self._stepped = False
        self.plan = StepPlan(compiled=False, fast_dropout=False, gradient_checkpointing=False)
        # time.perf_counter() when this trainer began its first batch (a trial's set-up ends: model built,
        # resume point read, plan made) and when its first optimizer step was done (its start-up ends).
        self.training_started_at: float | None = None
        self.first_step_at: float | None = None

    def fit(self, train: WindowFeatures | Sequence[WindowFeatures], validation: EvaluationData) -> FitResult:
        """Train from the latest valid checkpoint (or from scratch) to ``max_epochs``.

        ``train`` is the training windows, or one set per epoch (evidence augmentation re-draws
        the texts each epoch; each set depends only on (seed, epoch), like the batches).
        """
        config = self.config
        per_epoch = [train] * config.max_epochs if isinstance(train, WindowFeatures) else list(train)
        if len(per_epoch) != config.max_epochs:
            raise ValueError(f"{len(per_epoch)} sets of training windows for {config.max_epochs} epochs")
        if any(len(windows) == 0 for windows in per_epoch):
            raise TrainingError("the training split has no windows; check data.split and data.max_posts")
        # Epoch orders depend only on (seed, epoch), so the schedule's length is known exactly up front
        # even with negative sampling, and a resumed run sees the same batches.
        epochs = [epoch_batches(per_epoch[e], config, epoch=e) for e in range(config.max_epochs)]
        context = self.distributed
        shards = [ddp.shard_batches(batches, context.rank, context.world_size) for batches in epochs]
        self.loss = loss_settings(config, per_epoch[0].pair_labels())
        # What train.precision=auto became on this machine: part of what the metrics depend on.
        tags = {"precision": self.precision, "device": str(self.device)}
        rss_scope = "trial" if memory.reset_peaks(self.device) else "process"
        # Optimizer steps of one rank (each steps once per accumulation group of its shard).
        total_steps = optimizer_steps([len(shard.batches) for shard in shards], config)
        optimizer = build_optimizer(self.model, config)
        scheduler = build_schedule(optimizer, config, total_steps)
        result = FitResult(best_value=-math.inf, best_epoch=-1, best_metrics={})
        start_epoch, global_step = self._resume(optimizer, scheduler, result)
        # Before an epoch of work is spent (and after the resume point is known, so that it is
        # protected): will a checkpoint fit, after what pruning can free?
        self.checkpoints.preflight(
            estimate_checkpoint_bytes(self.model, optimizer, on_disk=self.checkpoints.on_disk)
        )
        forward = ddp.wrap_model(context, self.model)  # self.model stays the plain module: eval, state dicts
        forward = self._plan(
            forward, per_epoch[start_epoch if start_epoch < config.max_epochs else 0], shards
        )
        tags |= self.plan.tags() | {"rss_peak_scope": rss_scope}
        self.tracker.set_tags(tags | ({"ddp_processes": str(context.world_size)} if context.enabled else {}))
        try:
            for epoch in range(start_epoch, config.max_epochs):
                set_log_context(epoch=epoch)
                ddp.seed_epoch(context, config.seed, epoch)
                started = time.perf_counter()
                if self.training_started_at is None:
                    self.training_started_at = started
                epoch_loss, global_step = self._train_epoch(
                    forward, per_epoch[epoch], shards[epoch], epoch, optimizer, scheduler, global_step
                )
                train_seconds = time.perf_counter() - started
                end_epoch = partial(
                    self._end_epoch,
                    validation,
                    epoch,
                    epoch_loss,
                    train_seconds,
                    result,
                    global_step,
                    optimizer,
                    scheduler,
                )
                # Rank 0 validates, logs, checkpoints and calls back; every rank gets its result or its exception.
                result = on_main_rank(context, end_epoch)
        finally:
            # The last save may still be in flight (async checkpointing): the trial is not over
            # until it is committed, and a failure of it is raised here, not lost.
            self.checkpoints.wait()
        set_log_context(epoch=None, step=None)
        return result

    def _plan(self, forward: torch.nn.Module, train: WindowFeatures, shards: list[Shard]) -> torch.nn.Module:
        """Gradient checkpointing, train.compile and fast dropout (training/acceleration.py), decided before
        the first step; returns the module the steps call (``forward``, or its compiled version)."""
        self.plan, step_module = prepare_forward(
            self.model,
            forward,
            self.config,
            self.device,
            self.precision,
            batches=shards[0].batches[:3],
            probe_step=partial(self._probe_step, train),
            single_process=not self.distributed.enabled,
            cache=self.compile_cache,
        )
        return step_module

    def _probe_step(self, train: WindowFeatures, module: torch.nn.Module, indices: list[int]) -> None:
        """Forward, loss and backward of one batch, as a step runs them (CompileProbe times it)."""
        eager = module is self.model and self.config.fast_dropout and self.device.type == "cpu"
        batch = self._batch(train, indices, COMPILED_LENGTH_MULTIPLE)
        with autocast(self.device, self.precision), StepPlan(False, eager, False).forward_context():
            output = forward_batch(module, batch)
        self._loss(output, batch).total.backward()

    def _batch(self, train: WindowFeatures, indices: list[int], multiple: int) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in collate(train, indices, multiple).items()}

    def _end_epoch(
        self,
        validation: EvaluationData,
        epoch: int,
        epoch_loss: float,
        train_seconds: float,
        result: FitResult,
        global_step: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
    ) -> FitResult:
        """Rank 0's end of an epoch: validate, log, checkpoint, call back; returns the updated result."""
        config = self.config
        started = time.perf_counter()
        evaluation = evaluate_model(
            self.model,
            validation,
            config,
            device=self.device,
            criteria=self.criteria,
            max_answer_tokens=self.max_answer_tokens,
            tune_for=self.metric,
        )
        val_seconds = time.perf_counter() - started
        metrics = dict(evaluation.metrics)
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            raise TrainingError(f"validation metric {self.metric!r} is undefined after epoch {epoch}")
        logged: dict[str, float | None] = {f"val_{k}": v for k, v in metrics.items()}
        logged.update(train_loss_epoch=epoch_loss, epoch_seconds=train_seconds, val_seconds=val_seconds)
        logged["epoch"] = float(epoch)
        logged.update(memory.peak_memory(self.device))  # since the trial started (memory.reset_peaks)
        self.tracker.log_metrics(logged, step=epoch)
        self.tracker.flush()  # the epoch's metrics survive a crash from here on (outbox fsync)
        result.history.append(metrics)
        result.epochs_run = epoch + 1
        logger.info(
            "epoch %d: train loss %.4f, val %s %.4f (%.1f s)",
            epoch,
            epoch_loss,
            self.metric,
            value,
            train_seconds,
        )
        if value > result.best_value:
            result.best_value, result.best_epoch, result.best_metrics = value, epoch, metrics
        if self.checkpoints.should_save(epoch) or epoch == config.max_epochs - 1:
            self.checkpoints.save(
                training_state(
                    self.model,
                    epoch,
                    global_step,
                    optimizer,
                    scheduler,
                    best=(result.best_value, result.best_epoch, result.history),
                    metrics=(self.metric, value, metrics),
                )
            )
            if self.distributed.enabled:
                # The others pass this epoch only once its checkpoint is committed (async or not), so a
                # kill of any rank from here on resumes after it, and a failed save stops every rank now.
                self.checkpoints.wait()
        self._call_back(epoch, metrics, global_step)  # may raise optuna.TrialPruned
        return result

    def _call_back(self, epoch: int, metrics: dict[str, float | None], step: int) -> None:
        if self.epoch_callback is not None:
            self.epoch_callback(epoch, metrics)
        self.reports.end_of_epoch(self, epoch, step, metrics)

    def _resume(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        result: FitResult,
    ) -> tuple[int, int]:
        """Restore the latest valid checkpoint; returns (first epoch to run, global step)."""
        # Rank 0 loads it and hands it to the others: only one process reads, verifies and quarantines
        # in the trial's folder (concurrent quarantining would race), and every rank resumes from the
        # very same state even if the folder changes meanwhile; the price is one pickled copy per rank.
        loaded = on_main_rank(self.distributed, self.checkpoints.load_latest)
        if loaded is None:
            return 0, 0
        state = loaded.state
        self.model.load_state_dict(state.model_state)
        optimizer.load_state_dict(state.optimizer_state)
        scheduler.load_state_dict(state.scheduler_state)
        restore_rng_state(state.rng_state)  # rank 0's; under DDP each epoch reseeds every rank anyway
        result.history = list(state.history)
        result.epochs_run = state.epoch + 1
        result.best_value, result.best_epoch = state.best_value, state.best_epoch
        if 0 <= state.best_epoch < len(state.history):
            result.best_metrics = dict(state.history[state.best_epoch])
        self.resumed_from = loaded.info
        logger.info("resuming from %s: epoch %d done, step %d", loaded.info.path, state.epoch, state.step)
        # The process may have died between this checkpoint and reporting its epoch: report again
        # (the objective ignores steps it already reported) so pruning decisions stay the same.
        on_main_rank(self.distributed, partial(self._call_back, state.epoch, dict(state.metrics), state.step))
        return state.epoch + 1, state.step

    def _train_epoch(
        self,
        model: torch.nn.Module,
        train: WindowFeatures,
        shard: Shard,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        global_step: int,
    ) -> tuple[float, int]:
        """One epoch over this rank's ``shard`` through ``model`` (self.model, or its DDP wrapper)."""
        config, batches = self.config, shard.batches
        model.train()
        accumulation = config.gradient_accumulation_steps
        total_loss, n_batches = 0.0, 0
        window_loss = torch.zeros((), device=self.device)
        parts = {
            "criteria": torch.zeros((), device=self.device),
            "evidence": torch.zeros((), device=self.device),
        }
        steps_in_window = 0
        optimizer.zero_grad(set_to_none=True)
        iterator = progress(batches, epoch, config.max_epochs, enabled=self.progress)
        for batch_number, indices in enumerate(iterator):
            last = batch_number == len(batches) - 1
            step_now = (batch_number + 1) % accumulation == 0 or last
            filler = batch_number >= len(batches) - shard.padding
            batch = self._batch(train, indices, self.plan.length_multiple)
            with ddp.gradient_sync(model, step_now):  # DDP all-reduces once per optimizer step
                with autocast(self.device, self.precision), self.plan.forward_context():
                    output = forward_batch(model, batch)
                loss = self._loss(output, batch)
                scaled = loss.total / accumulation
                if filler:  # still a backward pass (every rank's all-reduce must happen), with zero gradient
                    scaled = scaled * 0.0
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            if not filler:  # detached accumulators on the device: no host sync until a logging step
                window_loss += loss.total.detach()
                parts["criteria"] += loss.criteria.detach()
                parts["evidence"] += loss.evidence.detach()
                steps_in_window += 1
            if not step_now:
                continue
            optimizer_step(self.model, optimizer, self.scaler, config.max_grad_norm)
            scheduler.step()
            global_step += 1
            if not self._stepped:  # the end of a trial's start-up (benchmarks/devices.py reads this line)
                self._stepped = True
                self.first_step_at = time.perf_counter()
                logger.info("first optimizer step done (step %d)", global_step)
            if global_step % config.log_every_n_steps == 0 or last:
                # Summed over the ranks: every rank sees the same loss, so a non-finite one stops them all.
                count = torch.tensor(float(steps_in_window), device=self.device)
                sums = torch.stack([window_loss, parts["criteria"], parts["evidence"], count])
                window_sum, criteria_sum, evidence_sum, steps = ddp.sum_over_ranks(
                    self.distributed, sums
                ).tolist()
                mean_loss = window_sum / steps
                if not math.isfinite(mean_loss):
                    raise TrainingError(
                        f"loss became {mean_loss} at step {global_step}; lower train.learning_rate_encoder/"
                        "learning_rate_heads or use train.precision=fp32"
                    )
                set_log_context(step=global_step)
                self.tracker.log_metrics(
                    {
                        "train_loss": mean_loss,
                        "train_loss_criteria": criteria_sum / steps,
                        "train_loss_evidence": evidence_sum / steps,
                        "learning_rate_encoder": float(scheduler.get_last_lr()[0]),
                    },
                    step=global_step,
                )
                total_loss += window_sum
                n_batches += int(steps)
                window_loss.zero_()
                parts["criteria"].zero_()
                parts["evidence"].zero_()
                steps_in_window = 0
            if self.reports.due(global_step, last):  # hpo.report_every_n_steps: validate inside the epoch
                self.reports.inside_epoch(self, model, epoch, global_step)
        return total_loss / max(1, n_batches), global_step

    def _loss(self, output: DualOutput, batch: dict[str, torch.Tensor]) -> LossParts:
        return joint_loss(
            output,
            batch["labels"],
            batch["start_positions"],
            batch["end_positions"],
            settings=self.loss,
            sentence_targets=batch.get("sentence_targets"),
        )
