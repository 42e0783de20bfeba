"""Heads and pooling: shapes, what padding may not change, and what each kind is made of."""

from __future__ import annotations

import pytest
import torch

from dsm5_hpo.models.heads import CriteriaHead, EvidenceHead
from dsm5_hpo.models.heads.evidence import MASKED_LOGIT
from dsm5_hpo.models.heads.pooling import POOLINGS, Pooling
from dsm5_hpo.models.heads.sentence import SentenceEvidenceHead, best_sentence_logit, pool_sentences

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


def test_max_pooling_is_the_elementwise_max_over_the_real_tokens(
    states: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]],
) -> None:
    hidden, mask, _ = states
    assert torch.equal(Pooling("max", H)(hidden, mask)[2], hidden[2, :2].max(dim=0).values)


def test_sentence_pooling_averages_each_sentence_s_tokens() -> None:
    hidden = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)
    token_sentence = torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, -1, -1, -1]])
    pooled, exists = pool_sentences(hidden, token_sentence)
    assert pooled.shape == (2, 2, 2)
    assert torch.equal(pooled[0, 0], hidden[0, 1:3].mean(dim=0)) and torch.equal(pooled[0, 1], hidden[0, 3])
    assert exists.tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_sentence_head_masks_missing_sentences_and_its_best_is_the_window_logit(kind: str) -> None:
    torch.manual_seed(0)
    head = SentenceEvidenceHead(H, 0.0, kind=kind, width=6, outputs=3)
    token_sentence = torch.tensor([[0, 0, 1, 2, 2], [0, 1, 1, -1, -1], [0, -1, -1, -1, -1]])
    logits = head(torch.randn(B, T, H), token_sentence)
    assert logits.shape == (B, 3, 3)
    assert bool((logits[1, 2] == MASKED_LOGIT).all()) and bool((logits[2, 1:] == MASKED_LOGIT).all())
    assert torch.equal(best_sentence_logit(logits)[2], logits[2, 0])
    coupled = SentenceEvidenceHead(H, 0.0, kind=kind, coupled=True)
    with pytest.raises(ValueError, match="pooled"):
        coupled(torch.randn(B, T, H), token_sentence)
    assert coupled(torch.randn(B, T, H), token_sentence, torch.randn(B, H)).shape == (B, 3, 1)


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
        Pooling("median", H)
    with pytest.raises(ValueError, match="criteria head"):
        CriteriaHead(H, 0.0, kind="deep")
    with pytest.raises(ValueError, match="evidence head"):
        EvidenceHead(H, 0.0, kind="crf")
