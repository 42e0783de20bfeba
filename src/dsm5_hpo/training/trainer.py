"""The training loop of one trial: epochs of AdamW steps, validation after each epoch.

Collaborators are injected: the run tracker (metrics), an epoch callback (Optuna's
report/should_prune), and the best-weights sink. The data order of epoch ``e`` depends only
on (seed, e), so the same config and seed give the same metrics run after run on CPU.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from dsm5_hpo.checkpointing.manager import (
    CheckpointInfo,
    CheckpointManager,
    TrainingState,
    capture_rng_state,
    restore_rng_state,
)
from dsm5_hpo.checkpointing.null import NullCheckpointManager
from dsm5_hpo.checkpointing.size import estimate_checkpoint_bytes
from dsm5_hpo.config import TrainConfig
from dsm5_hpo.data.batching import length_grouped_batches, plain_batches
from dsm5_hpo.data.features import WindowFeatures, collate
from dsm5_hpo.errors import TrainingError
from dsm5_hpo.evaluation.prediction import EvaluationData, evaluate_model
from dsm5_hpo.models.losses import LossSettings
from dsm5_hpo.models.multi_task import DualHeadModel, forward_batch, joint_loss
from dsm5_hpo.models.precision import autocast, resolve_device, resolve_precision
from dsm5_hpo.tracking.tracker import NullRunTracker, RunTracker
from dsm5_hpo.training.optimization import build_optimizer, build_schedule, freeze_lowest_layers
from dsm5_hpo.utils.logging import set_log_context
from dsm5_hpo.utils.seeding import torch_generator

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


def loss_settings(config: TrainConfig, labels: Sequence[int] = ()) -> LossSettings:
    """The loss of ``config``; weighted_bce weighs positives by the negatives per positive that an
    epoch trains on (after negative sampling) among the training windows ``labels``."""
    positives = sum(1 for label in labels if label)
    negatives = (len(labels) - positives) * config.negative_sampling
    return LossSettings(
        criteria_loss=config.criteria_loss,
        focal_gamma=config.focal_gamma,
        hybrid_alpha=config.hybrid_alpha,
        label_smoothing=config.label_smoothing,
        pos_weight=negatives / positives if positives and negatives else 1.0,
        criteria_weight=config.loss_weight_criteria,
        evidence_weight=config.loss_weight_evidence,
    )


def epoch_order(
    train: WindowFeatures,
    *,
    seed: int,
    epoch: int,
    negative_sampling: float,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Shuffled window indices of one epoch, keeping a fresh random share of non-matching windows.

    Depends only on (seed, epoch): a resumed or repeated run sees the same batches. ``generator``
    (seeded from them when not given) is advanced, so the caller can keep drawing from it.
    """
    generator = generator or torch_generator(seed * 1000 + epoch)
    order = torch.randperm(len(train), generator=generator)
    if negative_sampling < 1.0:
        keep = torch.rand(len(train), generator=generator) < negative_sampling
        keep |= torch.tensor(train.labels, dtype=torch.bool)
        order = order[keep[order]]
    return [int(i) for i in order]


def epoch_batches(train: WindowFeatures, config: TrainConfig, *, epoch: int) -> list[list[int]]:
    """The micro-batches of one epoch, in training order; a function of (config, epoch) only."""
    generator = torch_generator(config.seed * 1000 + epoch)
    order = epoch_order(
        train, seed=config.seed, epoch=epoch, negative_sampling=config.negative_sampling, generator=generator
    )
    if not config.group_by_length:
        return plain_batches(order, config.batch_size)
    return length_grouped_batches(
        order,
        [len(ids) for ids in train.input_ids],
        batch_size=config.batch_size,
        group_size=config.length_group_size,
        generator=generator,
    )


def _optimizer_steps(epoch_batch_counts: Sequence[int], config: TrainConfig) -> int:
    """Exact optimizer steps of a run: each epoch's batches, grouped by accumulation (last group partial)."""
    return sum(math.ceil(batches / config.gradient_accumulation_steps) for batches in epoch_batch_counts)


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
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        autocast(self.device, config.precision)  # refuses fp16 without CUDA before any work is done
        self.precision = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.criteria = tuple(criteria)
        self.metric = metric
        self.max_answer_tokens = max_answer_tokens
        self.tracker: RunTracker = tracker or NullRunTracker()
        self.epoch_callback = epoch_callback
        self.checkpoints: CheckpointStore = checkpoints or NullCheckpointManager()
        self.resumed_from: CheckpointInfo | None = None
        self.progress = sys.stdout.isatty() if progress is None else progress
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
        self.loss = loss_settings(config, per_epoch[0].pair_labels())
        # What train.precision=auto became on this machine: part of what the metrics depend on.
        self.tracker.set_tags({"precision": self.precision, "device": str(self.device)})
        total_steps = _optimizer_steps([len(batches) for batches in epochs], config)
        optimizer = build_optimizer(self.model, config)
        scheduler = build_schedule(optimizer, config, total_steps)
        result = FitResult(best_value=-math.inf, best_epoch=-1, best_metrics={})
        start_epoch, global_step = self._resume(optimizer, scheduler, result)
        # Before an epoch of work is spent (and after the resume point is known, so that it is
        # protected): will a checkpoint fit, after what pruning can free?
        self.checkpoints.preflight(
            estimate_checkpoint_bytes(self.model, optimizer, on_disk=self.checkpoints.on_disk)
        )
        try:
            for epoch in range(start_epoch, config.max_epochs):
                set_log_context(epoch=epoch)
                started = time.perf_counter()
                epoch_loss, global_step = self._train_epoch(
                    per_epoch[epoch], epochs[epoch], epoch, optimizer, scheduler, global_step
                )
                train_seconds = time.perf_counter() - started
                evaluation = evaluate_model(
                    self.model,
                    validation,
                    config,
                    device=self.device,
                    criteria=self.criteria,
                    max_answer_tokens=self.max_answer_tokens,
                    tune_for=self.metric,
                )
                metrics = dict(evaluation.metrics)
                value = metrics.get(self.metric)
                if value is None or not math.isfinite(value):
                    raise TrainingError(f"validation metric {self.metric!r} is undefined after epoch {epoch}")
                logged: dict[str, float | None] = {f"val_{k}": v for k, v in metrics.items()}
                logged.update(
                    {"train_loss_epoch": epoch_loss, "epoch_seconds": train_seconds, "epoch": float(epoch)}
                )
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
                        self._state(epoch, global_step, optimizer, scheduler, result, metrics, value)
                    )
                if self.epoch_callback is not None:
                    self.epoch_callback(epoch, metrics)  # may raise optuna.TrialPruned
        finally:
            # The last save may still be in flight (async checkpointing): the trial is not over
            # until it is committed, and a failure of it is raised here, not lost.
            self.checkpoints.wait()
        set_log_context(epoch=None, step=None)
        return result

    def _state(
        self,
        epoch: int,
        step: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        result: FitResult,
        metrics: dict[str, float | None],
        value: float,
    ) -> TrainingState:
        return TrainingState(
            epoch=epoch,
            step=step,
            # Left where they are: the writer (or the asynchronous snapshot) copies each tensor to
            # host memory once; copying here too would copy a CUDA model's weights twice.
            model_state={k: v.detach() for k, v in self.model.state_dict().items()},
            frozen=frozenset(name for name, p in self.model.named_parameters() if not p.requires_grad),
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict(),
            rng_state=capture_rng_state(),
            best_value=result.best_value,
            best_epoch=result.best_epoch,
            history=list(result.history),
            metrics=metrics,
            metric_name=self.metric,
            metric_value=value,
        )

    def _resume(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        result: FitResult,
    ) -> tuple[int, int]:
        """Restore the latest valid checkpoint; returns (first epoch to run, global step)."""
        loaded = self.checkpoints.load_latest()
        if loaded is None:
            return 0, 0
        state = loaded.state
        self.model.load_state_dict(state.model_state)
        optimizer.load_state_dict(state.optimizer_state)
        scheduler.load_state_dict(state.scheduler_state)
        restore_rng_state(state.rng_state)
        result.history = list(state.history)
        result.epochs_run = state.epoch + 1
        result.best_value, result.best_epoch = state.best_value, state.best_epoch
        if 0 <= state.best_epoch < len(state.history):
            result.best_metrics = dict(state.history[state.best_epoch])
        self.resumed_from = loaded.info
        logger.info("resuming from %s: epoch %d done, step %d", loaded.info.path, state.epoch, state.step)
        if self.epoch_callback is not None:
            # The process may have died between this checkpoint and reporting its epoch: report again
            # (the callback ignores epochs it already reported) so pruning decisions stay the same.
            self.epoch_callback(state.epoch, dict(state.metrics))
        return state.epoch + 1, state.step

    def _train_epoch(
        self,
        train: WindowFeatures,
        batches: list[list[int]],
        epoch: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        global_step: int,
    ) -> tuple[float, int]:
        config = self.config
        self.model.train()
        accumulation = config.gradient_accumulation_steps
        total_loss, n_batches = 0.0, 0
        window_loss = torch.zeros((), device=self.device)
        parts = {
            "criteria": torch.zeros((), device=self.device),
            "evidence": torch.zeros((), device=self.device),
        }
        steps_in_window = 0
        optimizer.zero_grad(set_to_none=True)
        iterator = self._progress(batches, epoch)
        for batch_number, indices in enumerate(iterator):
            batch = {k: v.to(self.device) for k, v in collate(train, indices).items()}
            with autocast(self.device, self.precision):
                output = forward_batch(self.model, batch)
            loss = joint_loss(
                output,
                batch["labels"],
                batch["start_positions"],
                batch["end_positions"],
                settings=self.loss,
                sentence_targets=batch.get("sentence_targets"),
            )
            scaled = loss.total / accumulation
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
            # Detached accumulators on the device: no host sync until a logging step.
            window_loss += loss.total.detach()
            parts["criteria"] += loss.criteria.detach()
            parts["evidence"] += loss.evidence.detach()
            steps_in_window += 1
            last = batch_number == len(batches) - 1
            if (batch_number + 1) % accumulation and not last:
                continue
            self._optimizer_step(optimizer)
            scheduler.step()
            global_step += 1
            if not self._stepped:  # the end of a trial's start-up (benchmarks/devices.py reads this line)
                self._stepped = True
                logger.info("first optimizer step done (step %d)", global_step)
            if global_step % config.log_every_n_steps == 0 or last:
                mean_loss = float(window_loss) / steps_in_window
                if not math.isfinite(mean_loss):
                    raise TrainingError(
                        f"loss became {mean_loss} at step {global_step}; lower train.learning_rate_encoder/"
                        "learning_rate_heads or use train.precision=fp32"
                    )
                set_log_context(step=global_step)
                self.tracker.log_metrics(
                    {
                        "train_loss": mean_loss,
                        "train_loss_criteria": float(parts["criteria"]) / steps_in_window,
                        "train_loss_evidence": float(parts["evidence"]) / steps_in_window,
                        "learning_rate_encoder": float(scheduler.get_last_lr()[0]),
                    },
                    step=global_step,
                )
                total_loss += float(window_loss)
                n_batches += steps_in_window
                window_loss.zero_()
                parts["criteria"].zero_()
                parts["evidence"].zero_()
                steps_in_window = 0
        return total_loss / max(1, n_batches), global_step

    def _optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _progress(self, batches: list[list[int]], epoch: int) -> Iterator[list[int]]:
        if not self.progress:
            return iter(batches)
        from tqdm import tqdm

        # One bar per epoch: "epoch 2/5" with its steps; the study's log line says which trial of how many.
        desc = f"epoch {epoch + 1}/{self.config.max_epochs}"
        return iter(tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True))
