"""DualHeadModel on the tiny encoder: shapes, masking, joint loss and gradient flow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import compose_tiny
from dsm5_hpo.data.features import WindowFeatures, collate
from dsm5_hpo.models.heads import CriteriaHead, EvidenceHead
from dsm5_hpo.models.heads.evidence import MASKED_LOGIT
from dsm5_hpo.models.heads.pooling import Pooling
from dsm5_hpo.models.loading import load_encoder, resolve_model
from dsm5_hpo.models.losses import LossSettings
from dsm5_hpo.models.multi_task import DualHeadModel, DualOutput, joint_loss


@pytest.fixture(scope="module")
def encoder_path(model_cache: Path) -> Path:
    config = compose_tiny(model_cache / "unused_experiments", model_cache)
    return resolve_model(config.model, cache_dir=model_cache).path


@pytest.fixture
def model(encoder_path: Path) -> DualHeadModel:
    torch.manual_seed(0)
    return DualHeadModel(load_encoder(encoder_path), dropout=0.1)


def _features(lengths: list[int], question_tokens: int = 3) -> WindowFeatures:
    """Windows of different lengths: [CLS] q q q [SEP] post... [SEP]; post tokens carry offsets."""
    generator = torch.Generator().manual_seed(1)
    features = WindowFeatures([], [], [], [], [], [], [], pad_token_id=0)
    for n, length in enumerate(lengths):
        ids = [101, *torch.randint(1000, 5000, (length - 2,), generator=generator).tolist(), 102]
        context_start = 1 + question_tokens + 1
        offsets = [
            (5 * (i - context_start), 5 * (i - context_start) + 4)
            if context_start <= i < length - 1
            else None
            for i in range(length)
        ]
        features.input_ids.append(ids)
        features.token_type_ids.append([0] * context_start + [1] * (length - context_start))
        features.context_offsets.append(offsets)
        start = 0 if n % 2 else context_start + 1
        features.start_positions.append(start)
        features.end_positions.append(0 if n % 2 else start + 2)
        features.labels.append(n % 2)
        features.example_index.append(n)
    return features


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    features = _features([20, 12, 16])
    return collate(features, list(range(len(features))))


def _forward(model: DualHeadModel, batch: dict[str, torch.Tensor]) -> DualOutput:
    return model(batch["input_ids"], batch["attention_mask"], batch["answer_mask"], batch["token_type_ids"])


def test_forward_shapes_and_dtypes(model: DualHeadModel, batch: dict[str, torch.Tensor]) -> None:
    output = _forward(model, batch)
    size, width = batch["input_ids"].shape
    assert (size, width) == (3, 20)
    assert output.criteria_logits.shape == (size,)
    assert output.start_logits.shape == (size, width)
    assert output.end_logits.shape == (size, width)
    for tensor in (output.criteria_logits, output.start_logits, output.end_logits):
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()


def test_span_logits_are_masked_outside_the_answer_positions(
    model: DualHeadModel, batch: dict[str, torch.Tensor]
) -> None:
    output = _forward(model, batch)
    mask = batch["answer_mask"]
    assert mask[:, 0].all()  # [CLS] = the null answer is always allowed
    assert (~mask).any() and mask[:, 1:].any()
    for logits in (output.start_logits, output.end_logits):
        assert (logits[~mask] == MASKED_LOGIT).all()
        assert MASKED_LOGIT <= -1e4
        assert (logits[mask] > MASKED_LOGIT / 10).all()
        # a softmax over the window puts (practically) no mass on masked positions
        probabilities = logits.softmax(dim=-1)
        assert probabilities[~mask].max() < 1e-30


def test_padding_positions_are_masked(model: DualHeadModel, batch: dict[str, torch.Tensor]) -> None:
    output = _forward(model, batch)
    padding = batch["attention_mask"] == 0
    assert padding.any()
    assert (output.start_logits[padding] == MASKED_LOGIT).all()
    assert (output.end_logits[padding] == MASKED_LOGIT).all()


def test_token_type_ids_reach_the_encoder(model: DualHeadModel, batch: dict[str, torch.Tensor]) -> None:
    model.eval()
    with torch.no_grad():
        with_types = _forward(model, batch)
        without = model(batch["input_ids"], batch["attention_mask"], batch["answer_mask"])
    assert model.encoder.config.type_vocab_size > 1
    assert not torch.allclose(with_types.criteria_logits, without.criteria_logits)


def test_eval_mode_is_deterministic(model: DualHeadModel, batch: dict[str, torch.Tensor]) -> None:
    model.eval()
    with torch.no_grad():
        first, second = _forward(model, batch), _forward(model, batch)
    assert torch.equal(first.criteria_logits, second.criteria_logits)
    assert torch.equal(first.start_logits, second.start_logits)


def test_joint_loss_is_finite_and_matches_its_definition(
    model: DualHeadModel, batch: dict[str, torch.Tensor]
) -> None:
    output = _forward(model, batch)
    parts = joint_loss(
        output,
        batch["labels"],
        batch["start_positions"],
        batch["end_positions"],
        settings=LossSettings(criteria_weight=0.3, evidence_weight=2.0),
    )
    for value in (parts.total, parts.criteria, parts.evidence):
        assert value.ndim == 0
        assert math.isfinite(float(value.detach()))
    expected_criteria = torch.nn.functional.binary_cross_entropy_with_logits(
        output.criteria_logits, batch["labels"]
    )
    expected_evidence = (
        torch.nn.functional.cross_entropy(output.start_logits, batch["start_positions"])
        + torch.nn.functional.cross_entropy(output.end_logits, batch["end_positions"])
    ) / 2
    assert parts.criteria.item() == pytest.approx(expected_criteria.item())
    assert parts.evidence.item() == pytest.approx(expected_evidence.item())
    assert parts.total.item() == pytest.approx(
        0.3 * expected_criteria.item() + 2.0 * expected_evidence.item()
    )
    # a random model's span loss is about log(number of allowed positions), not inflated by masked ones
    allowed = batch["answer_mask"].sum(dim=1).float()
    assert parts.evidence.item() < 2 * float(allowed.log().max())


@pytest.mark.parametrize(("w_c", "w_e"), [(0.0, 1.5), (2.0, 0.0)])
def test_loss_weights_are_respected(
    model: DualHeadModel, batch: dict[str, torch.Tensor], w_c: float, w_e: float
) -> None:
    output = _forward(model, batch)
    parts = joint_loss(
        output,
        batch["labels"],
        batch["start_positions"],
        batch["end_positions"],
        settings=LossSettings(criteria_weight=w_c, evidence_weight=w_e),
    )
    assert parts.total.item() == pytest.approx(w_c * parts.criteria.item() + w_e * parts.evidence.item())
    if w_c == 0.0:
        assert parts.total.item() == pytest.approx(parts.evidence.item() * w_e)
    parts.total.backward()
    criteria_grad = model.criteria_head.classifier.weight.grad
    evidence_grad = model.evidence_head.span.weight.grad
    assert criteria_grad is not None and evidence_grad is not None
    # a head whose loss weight is 0 gets no gradient; the other one does
    assert (criteria_grad.abs().sum() == 0) == (w_c == 0.0)
    assert (evidence_grad.abs().sum() == 0) == (w_e == 0.0)


def test_gradients_flow_to_the_encoder_and_both_heads(
    model: DualHeadModel, batch: dict[str, torch.Tensor]
) -> None:
    output = _forward(model, batch)
    parts = joint_loss(
        output,
        batch["labels"],
        batch["start_positions"],
        batch["end_positions"],
        settings=LossSettings(criteria_weight=1.0, evidence_weight=1.0),
    )
    parts.total.backward()
    named = dict(model.named_parameters())
    for name in (
        "criteria_head.classifier.weight",
        "criteria_head.classifier.bias",
        "evidence_head.span.weight",
        "evidence_head.span.bias",
    ):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    encoder_grads = [p.grad for n, p in named.items() if n.startswith("encoder.") and p.grad is not None]
    assert encoder_grads, "no encoder parameter received a gradient"
    assert sum(float(g.abs().sum()) for g in encoder_grads) > 0
    embeddings = model.encoder.embeddings.word_embeddings.weight.grad
    assert embeddings is not None
    used = batch["input_ids"].unique()
    assert embeddings[used].abs().sum() > 0


def test_heads_alone() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    head, pooling = CriteriaHead(8, dropout=0.0), Pooling("mean", 8)

    def criteria(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return head(pooling(states, mask))

    attention = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert criteria(hidden, attention).shape == (2,)
    # padding does not feed the criteria head; real tokens do (mean pooling)
    padded = hidden.clone()
    padded[0, 3:] += 5.0
    assert torch.allclose(criteria(hidden, attention)[0], criteria(padded, attention)[0])
    expected = head.classifier(hidden[0, :3].mean(dim=0)).squeeze(-1)
    assert torch.allclose(criteria(hidden, attention)[0], expected)
    moved = hidden.clone()
    moved[1, 4] += 5.0
    assert not torch.allclose(criteria(hidden, attention)[1], criteria(moved, attention)[1])
    evidence = EvidenceHead(8, dropout=0.0)
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    start, end = evidence(hidden, mask)
    assert start.shape == end.shape == (2, 5)
    assert (start[~mask] == MASKED_LOGIT).all() and (end[~mask] == MASKED_LOGIT).all()
    assert (start[mask] != MASKED_LOGIT).all()


def test_sentence_unit_scores_each_sentence_and_the_criteria_logit_is_the_best_one(
    encoder_path: Path, batch: dict[str, torch.Tensor]
) -> None:
    from dsm5_hpo.config import HeadsConfig

    torch.manual_seed(0)
    model = DualHeadModel(
        load_encoder(encoder_path), dropout=0.0, heads=HeadsConfig(evidence_unit="sentence")
    )
    assert model.criteria_head is None  # the criteria logit is read off the sentences
    model.eval()
    seq = batch["input_ids"].shape[1]
    # Three sentences in the first window, one in the second, none in the third.
    token_sentence = torch.full((3, seq), -1)
    token_sentence[0, 5:8], token_sentence[0, 8:12], token_sentence[0, 12:18] = 0, 1, 2
    token_sentence[1, 5:10] = 0
    output = model(batch["input_ids"], batch["attention_mask"], batch["answer_mask"], None, token_sentence)
    assert output.start_logits is None and output.sentence_logits is not None
    sentences = output.sentence_logits.squeeze(-1)
    assert sentences.shape == (3, 3)
    assert torch.allclose(output.criteria_logits[0], sentences[0].max())
    assert torch.allclose(output.criteria_logits[1], sentences[1, 0])
    # The loss trains only the sentences whose target is known (-1: not a sentence, or unknown).
    targets = torch.tensor([[1.0, 0.0, -1.0], [0.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]).unsqueeze(-1)
    model.train()
    output = model(batch["input_ids"], batch["attention_mask"], batch["answer_mask"], None, token_sentence)
    parts = joint_loss(
        output, batch["labels"], batch["start_positions"], batch["end_positions"], sentence_targets=targets
    )
    assert math.isfinite(float(parts.total)) and float(parts.evidence) > 0
    parts.total.backward()
    grads = [p.grad for p in model.evidence_head.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    with pytest.raises(ValueError, match="token_sentence"):
        model(batch["input_ids"], batch["attention_mask"], batch["answer_mask"])
    with pytest.raises(ValueError, match="sentence_targets"):
        joint_loss(output, batch["labels"], batch["start_positions"], batch["end_positions"])


def test_criteria_from_evidence_reads_the_logit_off_the_span_scores(
    encoder_path: Path, batch: dict[str, torch.Tensor]
) -> None:
    from dsm5_hpo.config import HeadsConfig

    torch.manual_seed(0)
    model = DualHeadModel(
        load_encoder(encoder_path), dropout=0.0, heads=HeadsConfig(criteria_from_evidence=True)
    )
    assert model.criteria_head is None and model.span_gap is not None
    model.eval()
    output = _forward(model, batch)
    assert output.start_logits is not None and output.end_logits is not None
    # logit = a x (best start + best end - null score) + b, null score = start[0] + end[0]
    start, end = output.start_logits.float(), output.end_logits.float()
    gap = start[:, 1:].max(dim=1).values + end[:, 1:].max(dim=1).values - (start[:, 0] + end[:, 0])
    a, b = model.span_gap.scale, model.span_gap.bias
    assert torch.allclose(output.criteria_logits, a * gap + b, atol=1e-4)
    # One loss trains both tasks through the evidence head: the criteria loss alone reaches it.
    model.train()
    parts = joint_loss(
        _forward(model, batch),
        batch["labels"],
        batch["start_positions"],
        batch["end_positions"],
        settings=LossSettings(criteria_weight=1.0, evidence_weight=0.0),
    )
    parts.total.backward()
    assert (
        model.evidence_head.span.weight.grad is not None
        and model.evidence_head.span.weight.grad.abs().sum() > 0
    )
