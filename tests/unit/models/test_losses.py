"""dsm5_hpo.models.losses: each criteria loss against its formula, smoothing, and the joint weights."""

from __future__ import annotations

import math

import pytest
import torch

from dsm5_hpo.models.losses import LossSettings, criteria_loss, evidence_loss

LOGITS = torch.tensor([2.0, -1.0, 0.5, -3.0])
LABELS = torch.tensor([1.0, 1.0, 0.0, 0.0])


def manual_bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_bce_is_the_mean_binary_cross_entropy() -> None:
    expected = sum(manual_bce(float(x), float(y)) for x, y in zip(LOGITS, LABELS, strict=True)) / 4
    assert criteria_loss(LOGITS, LABELS, LossSettings()).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_bce_scales_only_the_positive_terms() -> None:
    settings = LossSettings(criteria_loss="weighted_bce", pos_weight=3.0)
    terms = [
        manual_bce(float(x), float(y)) * (3.0 if y else 1.0) for x, y in zip(LOGITS, LABELS, strict=True)
    ]
    assert criteria_loss(LOGITS, LABELS, settings).item() == pytest.approx(sum(terms) / 4, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 5.0])
def test_focal_loss_down_weights_confident_correct_pairs(gamma: float) -> None:
    settings = LossSettings(criteria_loss="focal", focal_gamma=gamma)
    terms = []
    for x, y in zip(LOGITS.tolist(), LABELS.tolist(), strict=True):
        p = 1 / (1 + math.exp(-x))
        p_t = p if y else 1 - p
        terms.append((1 - p_t) ** gamma * -math.log(p_t))
    assert criteria_loss(LOGITS, LABELS, settings).item() == pytest.approx(sum(terms) / 4, rel=1e-5)
    if gamma == 0.0:
        assert criteria_loss(LOGITS, LABELS, settings).item() == pytest.approx(
            criteria_loss(LOGITS, LABELS, LossSettings()).item(), rel=1e-6
        )


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_hybrid_mixes_bce_and_focal(alpha: float) -> None:
    bce = criteria_loss(LOGITS, LABELS, LossSettings()).item()
    focal = criteria_loss(LOGITS, LABELS, LossSettings(criteria_loss="focal", focal_gamma=2.0)).item()
    hybrid = criteria_loss(LOGITS, LABELS, LossSettings(criteria_loss="hybrid", hybrid_alpha=alpha)).item()
    assert hybrid == pytest.approx(alpha * bce + (1 - alpha) * focal, rel=1e-5)


def test_label_smoothing_moves_the_targets_inward() -> None:
    smoothed = criteria_loss(LOGITS, LABELS, LossSettings(label_smoothing=0.2)).item()
    targets = [0.9, 0.9, 0.1, 0.1]
    expected = sum(manual_bce(float(x), t) for x, t in zip(LOGITS, targets, strict=True)) / 4
    assert smoothed == pytest.approx(expected, rel=1e-5)
    # A perfectly confident model is no longer at zero loss.
    confident = torch.tensor([50.0, -50.0])
    assert criteria_loss(confident, torch.tensor([1.0, 0.0]), LossSettings(label_smoothing=0.2)).item() > 1.0


def test_evidence_loss_is_the_mean_of_start_and_end_cross_entropy() -> None:
    start = torch.tensor([[2.0, 0.0, -1.0]])
    end = torch.tensor([[0.0, 3.0, 0.0]])
    positions = torch.tensor([1])
    expected = (
        torch.nn.functional.cross_entropy(start, positions)
        + torch.nn.functional.cross_entropy(end, positions)
    ) / 2
    assert evidence_loss(start, end, positions, positions).item() == pytest.approx(expected.item())
    assert evidence_loss(start, end, positions, positions, 0.1).item() != pytest.approx(expected.item())


def test_an_unknown_criteria_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown criteria loss"):
        criteria_loss(LOGITS, LABELS, LossSettings(criteria_loss="hinge"))
