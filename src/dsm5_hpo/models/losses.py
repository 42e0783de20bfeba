"""The criteria-matching loss family and the joint loss of both tasks.

Pure tensor functions. Criteria losses take logits (batch,) and 0/1 labels (batch,):

- ``bce``: binary cross-entropy
- ``weighted_bce``: BCE with the positives weighted by ``pos_weight`` (negatives/positives of the
  windows trained on), so the rare matching pairs count as much as the many others
- ``focal``: (1 - p_t)^gamma x BCE, which fades out the pairs the model already gets right
- ``hybrid``: alpha x BCE + (1 - alpha) x focal

Label smoothing moves the criteria targets to eps/2 and 1 - eps/2 and smooths the evidence
cross-entropy by eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CRITERIA_LOSSES = ("bce", "weighted_bce", "focal", "hybrid")


@dataclass(frozen=True)
class LossSettings:
    criteria_loss: str = "bce"
    focal_gamma: float = 2.0
    hybrid_alpha: float = 0.5
    label_smoothing: float = 0.0
    pos_weight: float = 1.0
    """Weight of positive pairs in weighted_bce (ignored by the others)."""
    criteria_weight: float = 1.0
    evidence_weight: float = 1.0


def criteria_loss(logits: torch.Tensor, labels: torch.Tensor, settings: LossSettings) -> torch.Tensor:
    """Mean criteria loss of a batch."""
    kind = settings.criteria_loss
    if kind not in CRITERIA_LOSSES:
        raise ValueError(f"unknown criteria loss {kind!r}; one of {', '.join(CRITERIA_LOSSES)}")
    logits, labels = logits.float(), labels.float()
    eps = settings.label_smoothing
    targets = labels * (1.0 - eps) + eps / 2 if eps else labels
    if kind == "weighted_bce":
        weight = torch.tensor(settings.pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if kind == "bce":
        return bce.mean()
    # p_t = exp(-BCE): the probability the model gives the (possibly smoothed) target.
    focal = (1.0 - torch.exp(-bce)).clamp(min=0.0).pow(settings.focal_gamma) * bce
    if kind == "focal":
        return focal.mean()
    alpha = settings.hybrid_alpha
    return (alpha * bce + (1.0 - alpha) * focal).mean()


def evidence_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean of the start and end cross-entropies; position 0 ([CLS]) is the null answer."""
    return (
        F.cross_entropy(start_logits, start_positions, label_smoothing=label_smoothing)
        + F.cross_entropy(end_logits, end_positions, label_smoothing=label_smoothing)
    ) / 2


def sentence_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean BCE of the sentence logits (batch, sentences, outputs) whose target (same shape) is 0 or
    1; -1 (unknown, or no such sentence) is left out. 0 when no target is known."""
    known = targets >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0  # keeps the graph (and the device) of a normal loss
    goal = targets[known].float()
    if label_smoothing:
        goal = goal * (1.0 - label_smoothing) + label_smoothing / 2
    return F.binary_cross_entropy_with_logits(logits[known].float(), goal)
