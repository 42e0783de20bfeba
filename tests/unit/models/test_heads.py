"""Heads and pooling: shapes, what padding may not change, and what each kind is made of."""

from __future__ import annotations

import pytest
import torch

from dsm5_hpo.models.heads import CriteriaHead, EvidenceHead
from dsm5_hpo.models.heads.evidence import MASKED_LOGIT
from dsm5_hpo.models.heads.pooling import POOLINGS, Pooling

H, B, T = 8, 3, 5


@pytest.fixture
def states() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    layers = [torch.randn(B, T, H) for _ in range(4)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    return layers[-1], mask, layers


@pytest.mark.parametrize("kind", POOLINGS)
def test_pooling_ignores_padding(
    kind: str, states: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]
) -> None:
    hidden, mask, layers = states
    pooling = Pooling(kind, H, layers=2)
    pooled = pooling(hidden, mask, layers)
    assert pooled.shape == (B, H)
    # Changing what sits in padded positions changes nothing.
    noisy_layers = [layer.clone() for layer in layers]
    for layer in noisy_layers:
        layer[mask == 0] = 1000.0
    assert torch.allclose(pooling(noisy_layers[-1], mask, noisy_layers), pooled)


def test_cls_and_mean_pooling_are_what_they_say(
    states: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]],
) -> None:
    hidden, mask, _ = states
    assert torch.equal(Pooling("cls", H)(hidden, mask), hidden[:, 0])
    assert torch.allclose(Pooling("mean", H)(hidden, mask)[1], hidden[1, :3].mean(dim=0))


def test_layer_mix_starts_as_the_mean_of_the_last_layers(
    states: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]],
) -> None:
    hidden, mask, layers = states
    pooled = Pooling("layer_mix", H, layers=2)(hidden, mask, layers)
    expected = Pooling("mean", H)((layers[-1] + layers[-2]) / 2, mask)
    assert torch.allclose(pooled, expected, atol=1e-6)
    with pytest.raises(ValueError, match="last 2 layers"):
        Pooling("layer_mix", H, layers=2)(hidden, mask, None)


@pytest.mark.parametrize("kind", ["linear", "mlp", "mlp_residual", "gated"])
def test_criteria_heads_give_one_logit_per_window(kind: str) -> None:
    head = CriteriaHead(H, 0.0, kind=kind, width=6)
    assert head(torch.randn(B, H)).shape == (B,)
    names = {name.split(".")[0] for name, _ in head.named_parameters()}
    expected = {
        "linear": {"classifier"},
        "mlp": {"hidden", "classifier"},
        "mlp_residual": {"hidden", "back", "norm", "classifier"},
        "gated": {"value", "gate", "classifier"},
    }
    assert names == expected[kind]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("coupled", [False, True])
def test_evidence_heads_mask_everything_outside_the_post(kind: str, coupled: bool) -> None:
    head = EvidenceHead(H, 0.0, kind=kind, width=6, coupled=coupled)
    answer_mask = torch.zeros(B, T, dtype=torch.bool)
    answer_mask[:, 0] = True
    answer_mask[:, 2:4] = True
    pooled = torch.randn(B, H) if coupled else None
    start, end = head(torch.randn(B, T, H), answer_mask, pooled)
    assert start.shape == end.shape == (B, T)
    assert (start[~answer_mask] == MASKED_LOGIT).all() and (end[~answer_mask] == MASKED_LOGIT).all()
    assert (start[answer_mask] != MASKED_LOGIT).all()


def test_a_coupled_head_reads_the_pooled_representation() -> None:
    torch.manual_seed(1)
    head = EvidenceHead(H, 0.0, coupled=True)
    hidden, mask = torch.randn(1, T, H), torch.ones(1, T, dtype=torch.bool)
    first, _ = head(hidden, mask, torch.zeros(1, H))
    second, _ = head(hidden, mask, torch.ones(1, H))
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="pooled"):
        head(hidden, mask, None)


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="pooling"):
        Pooling("max", H)
    with pytest.raises(ValueError, match="criteria head"):
        CriteriaHead(H, 0.0, kind="deep")
    with pytest.raises(ValueError, match="evidence head"):
        EvidenceHead(H, 0.0, kind="crf")
