"""When a trial reports its validation score (to the pruner, through the objective's callback), and
the validations inside an epoch that hpo.report_every_n_steps asks for.

``every_n_steps = 0`` (the default): one report per epoch, at the Optuna step = the epoch index, as
the trainer always did. ``N > 0``: the trainer also validates after every N-th optimizer step of an
epoch (not its last: the end of the epoch validates anyway) and reports it, and every report's Optuna
step is the trial's global optimizer step, the end of an epoch's at that epoch's last step, so the
steps only grow. Checkpoints stay per epoch: a trial resumed from epoch e re-trains epoch e+1 exactly
and reaches the same steps again (the objective does not report a step twice).

A validation inside an epoch changes nothing of the training: the model is evaluated under inference
mode with dropout off (no random draw, no gradient), put back in train mode, and the loss window being
accumulated for train.log_every_n_steps is left as it is. Under DDP rank 0 validates and decides, and
its outcome (a prune) reaches every rank at the same step, as at the end of an epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch

from dsm5_hpo.errors import TrainingError
from dsm5_hpo.evaluation.prediction import EvaluationData, evaluate_model
from dsm5_hpo.training.distributed import on_main_rank
from dsm5_hpo.utils.logging import set_log_context

if TYPE_CHECKING:
    from dsm5_hpo.training.trainer import Trainer

logger = logging.getLogger(__name__)

STEP_METRIC = "val_step_{metric}"
"""Tracker key of the optimized metric at each report by global optimizer step (N > 0): the series
Optuna holds as the trial's intermediate values (val_<metric> stays per epoch)."""


@dataclass(frozen=True)
class ReportPoint:
    epoch: int
    """The epoch being trained (0-based); an end-of-epoch report belongs to its epoch."""
    step: int
    """The Optuna step: the epoch index (every_n_steps = 0) or the global optimizer step."""
    end_of_epoch: bool


ReportCallback = Callable[[ReportPoint, dict[str, float | None]], None]
"""Called with the report's point and the validation metrics; may raise (optuna.TrialPruned) to stop."""


@dataclass(frozen=True)
class Reports:
    every_n_steps: int = 0
    """hpo.report_every_n_steps: 0 = per epoch only."""
    callback: ReportCallback | None = None
    """Rank 0's (the objective's report and prune); None on the other ranks and outside a study."""
    validation: EvaluationData | None = None
    """What a validation inside an epoch evaluates (the split fit() validates on)."""

    def __post_init__(self) -> None:
        if self.every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {self.every_n_steps}")

    def due(self, global_step: int, last: bool) -> bool:
        """After optimizer step ``global_step``: validate now, inside the epoch?"""
        return self.every_n_steps > 0 and not last and global_step % self.every_n_steps == 0

    def point(self, epoch: int, global_step: int, end_of_epoch: bool) -> ReportPoint:
        return ReportPoint(epoch, global_step if self.every_n_steps else epoch, end_of_epoch)

    def inside_epoch(self, trainer: Trainer, model: torch.nn.Module, epoch: int, global_step: int) -> None:
        """Rank 0 validates and reports; every rank returns, or raises what rank 0 raised (a prune)."""
        try:
            on_main_rank(trainer.distributed, partial(self._validate, trainer, epoch, global_step))
        finally:
            model.train()  # evaluation switched dropout off; the epoch goes on (or ends) as it was

    def end_of_epoch(
        self, trainer: Trainer, epoch: int, global_step: int, metrics: dict[str, float | None]
    ) -> None:
        """Rank 0, after the epoch's validation, checkpoint and epoch callback."""
        point = self.point(epoch, global_step, end_of_epoch=True)
        if self.every_n_steps:
            trainer.tracker.log_metrics(
                {STEP_METRIC.format(metric=trainer.metric): metrics.get(trainer.metric)}, step=point.step
            )
        if self.callback is not None:
            self.callback(point, metrics)

    def _validate(self, trainer: Trainer, epoch: int, global_step: int) -> None:
        if self.validation is None:
            raise TrainingError("hpo.report_every_n_steps > 0 but the trainer was given no validation split")
        set_log_context(step=global_step)
        evaluation = evaluate_model(
            trainer.model,
            self.validation,
            trainer.config,
            device=trainer.device,
            criteria=trainer.criteria,
            max_answer_tokens=trainer.max_answer_tokens,
            tune_for=trainer.metric,
        )
        metrics = dict(evaluation.metrics)
        value = metrics.get(trainer.metric)
        if value is None or not math.isfinite(value):
            raise TrainingError(f"validation metric {trainer.metric!r} is undefined at step {global_step}")
        trainer.tracker.log_metrics({STEP_METRIC.format(metric=trainer.metric): value}, step=global_step)
        logger.info("step %d (epoch %d): val %s %.4f", global_step, epoch, trainer.metric, value)
        if self.callback is not None:
            self.callback(self.point(epoch, global_step, end_of_epoch=False), metrics)
