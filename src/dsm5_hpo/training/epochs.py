"""What each epoch of a trial trains on: the loss settings, the window order, the micro-batches, and
the optimizer steps of the whole run. All of it depends only on (config, epoch), so a resumed or
repeated run, and every rank of a DDP trial, sees the same batches."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dsm5_hpo.config import TrainConfig
from dsm5_hpo.data.batching import length_grouped_batches, plain_batches
from dsm5_hpo.data.features import WindowFeatures
from dsm5_hpo.models.losses import LossSettings
from dsm5_hpo.utils.seeding import torch_generator


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


def optimizer_steps(epoch_batch_counts: Sequence[int], config: TrainConfig) -> int:
    """Exact optimizer steps of a run: each epoch's batches, grouped by accumulation (last group partial)."""
    return sum(math.ceil(batches / config.gradient_accumulation_steps) for batches in epoch_batch_counts)
