"""data.input_format=multi_label: one set of windows per post, a label and an evidence target per
criterion; the model's per-criterion outputs; decoding back to the same (post, criterion) predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import compose_tiny
from dsm5_hpo.data.criteria import CRITERIA, DESCRIPTIONS
from dsm5_hpo.data.feature_cache import from_arrays, to_arrays
from dsm5_hpo.data.features import collate, tokenize_examples, tokenize_posts
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.evaluation.decoding import WindowOutputs, decode_predictions, per_pair_windows
from dsm5_hpo.models.loading import load_encoder, load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import DualHeadModel, joint_loss

FILLER = [f"Filler sentence number {i} about an ordinary day at work." for i in range(30)]
SLEEP = "I have not slept more than three hours a night for weeks."
WORTH = "I feel completely worthless and guilty about everything."
POST = " ".join([*FILLER[:12], SLEEP, *FILLER[12:], WORTH])
SHORT = "Nothing matches here at all."


def pairs_of(post_id: str, text: str, evidence: dict[str, str]) -> list[PairExample]:
    out = []
    for criterion in CRITERIA:
        sentence = evidence.get(criterion)
        spans = ((text.index(sentence), text.index(sentence) + len(sentence)),) if sentence else ()
        out.append(PairExample(post_id, criterion, DESCRIPTIONS[criterion], text, int(bool(spans)), spans))
    return out


@pytest.fixture(scope="module")
def tiny(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    config = compose_tiny(tmp_path_factory.mktemp("multi"), model_cache)
    path = resolve_model(config.model, cache_dir=model_cache).path
    return load_tokenizer(path), path


@pytest.fixture(scope="module")
def examples() -> list[PairExample]:
    return [
        *pairs_of("long", POST, {"SLEEP_ISSUES": SLEEP, "WORTHLESSNESS": WORTH}),
        *pairs_of("short", SHORT, {}),
    ]


def test_windows_are_per_post_with_a_target_per_criterion(
    tiny: tuple[Any, Path], examples: list[PairExample]
) -> None:
    tokenizer, _ = tiny
    features = tokenize_posts(examples, tokenizer, criteria=len(CRITERIA), max_length=64, doc_stride=16)
    long_windows = [w for w, first in enumerate(features.example_index) if first == 0]
    short_windows = [w for w, first in enumerate(features.example_index) if first == len(CRITERIA)]
    assert len(long_windows) > 2 and len(short_windows) == 1  # the long post is read in several windows
    assert features.outputs == len(CRITERIA)
    sleep, worth = CRITERIA.index("SLEEP_ISSUES"), CRITERIA.index("WORTHLESSNESS")
    found = {sleep: 0, worth: 0}
    for window in long_windows:
        labels = features.multi_labels[window]
        # Only a criterion whose evidence is in this window is a positive of it (multiple-instance).
        assert all(
            labels[k] == 0 for k, c in enumerate(CRITERIA) if c not in ("SLEEP_ISSUES", "WORTHLESSNESS")
        )
        assert features.labels[window] == int(any(labels))
        for k, sentence in ((sleep, SLEEP), (worth, WORTH)):
            start, end = features.multi_starts[window][k], features.multi_ends[window][k]
            if start:
                assert labels[k] == 1  # a window that holds the evidence is positive for its criterion
            if start:  # the evidence lies in this window: its tokens cover the sentence
                first, last = features.context_offsets[window][start], features.context_offsets[window][end]
                assert first is not None and last is not None
                assert POST[first[0] : last[1]].strip() == sentence
                found[k] += 1
        # No question in a multi_label window: every context token is the post's.
        assert features.context_offsets[window][0] is None and features.context_offsets[window][1] is not None
    assert found[sleep] >= 1 and found[worth] >= 1
    assert any(features.multi_labels[w][sleep] == 0 for w in long_windows)  # windows without it: negatives
    for window in short_windows:
        assert features.multi_labels[window] == [0] * len(CRITERIA) and features.labels[window] == 0
        assert features.multi_starts[window] == [0] * len(CRITERIA)
    # Far fewer windows than one per (post, criterion).
    binary = tokenize_examples(examples, tokenizer, max_length=64, doc_stride=16)
    assert len(features) * 5 < len(binary)


def test_collate_gives_a_target_per_criterion_and_the_cache_keeps_them(
    tiny: tuple[Any, Path], examples: list[PairExample]
) -> None:
    tokenizer, _ = tiny
    features = tokenize_posts(examples, tokenizer, criteria=len(CRITERIA), max_length=64, doc_stride=16)
    batch = collate(features, [0, len(features) - 1])
    assert batch["labels"].shape == (2, len(CRITERIA))
    assert batch["start_positions"].shape == (2, len(CRITERIA)) == batch["end_positions"].shape
    again = from_arrays(to_arrays(features))
    assert again == features


def test_the_model_scores_every_criterion_and_the_loss_trains_them(
    tiny: tuple[Any, Path], examples: list[PairExample]
) -> None:
    tokenizer, path = tiny
    features = tokenize_posts(examples, tokenizer, criteria=len(CRITERIA), max_length=64, doc_stride=16)
    torch.manual_seed(0)
    model = DualHeadModel(load_encoder(path), dropout=0.0, outputs=len(CRITERIA))
    assert model.head_config()["outputs"] == len(CRITERIA)
    batch = collate(features, list(range(len(features))))
    output = model(batch["input_ids"], batch["attention_mask"], batch["answer_mask"], batch["token_type_ids"])
    width = batch["input_ids"].shape[1]
    assert output.criteria_logits.shape == (len(features), len(CRITERIA))
    assert output.start_logits.shape == (len(features), width, len(CRITERIA)) == output.end_logits.shape
    loss = joint_loss(output, batch["labels"], batch["start_positions"], batch["end_positions"])
    loss.total.backward()
    assert torch.isfinite(loss.total) and model.evidence_head.span.weight.grad is not None


def test_decoding_multi_label_outputs_gives_one_prediction_per_pair(examples: list[PairExample]) -> None:
    n = len(CRITERIA)
    # Two windows of post "long" (pairs 0..8) and one of "short" (pairs 9..17), 5 tokens each.
    from dsm5_hpo.data.features import WindowFeatures

    offsets = [None, (0, 4), (5, 9), (10, 14), None]
    features = WindowFeatures(
        [[0] * 5] * 3, [[0] * 5] * 3, [offsets] * 3, [0] * 3, [0] * 3, [1, 1, 0], [0, 0, n], pad_token_id=0
    )
    logits = np.full((3, n), -3.0, dtype=np.float32)
    logits[1, 2] = 3.0  # window 1 is confident post "long" matches criterion 2
    starts = [np.full((5, n), -5.0, dtype=np.float32) for _ in range(3)]
    ends = [np.full((5, n), -5.0, dtype=np.float32) for _ in range(3)]
    for window in range(3):  # "no evidence" ([CLS], token 0) beats every span...
        starts[window][0, :], ends[window][0, :] = 0.0, 0.0
    starts[1][2, 2], ends[1][3, 2] = 6.0, 6.0  # ...but criterion 2's span: tokens 2..3 of window 1
    outputs = WindowOutputs(logits, starts, ends)
    virtual, flat = per_pair_windows(features, outputs)
    assert len(virtual.example_index) == 3 * n and flat.criteria_logits.shape == (3 * n,)
    predictions = decode_predictions(examples, features, outputs, max_answer_tokens=10, null_score_margin=0.0)
    assert [p.criterion for p in predictions] == [*CRITERIA, *CRITERIA]
    long_2 = predictions[2]
    assert long_2.prob == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)  # the most confident window's
    assert long_2.pred_span == (5, 14)
    assert all(p.pred_span is None for i, p in enumerate(predictions) if i != 2)
    assert all(p.prob < 0.1 for i, p in enumerate(predictions) if i != 2)


def test_a_window_too_small_for_the_stride_is_refused(
    tiny: tuple[Any, Path], examples: list[PairExample]
) -> None:
    tokenizer, _ = tiny
    with pytest.raises(ConfigError, match=r"data\.doc_stride"):
        tokenize_posts(examples, tokenizer, criteria=len(CRITERIA), max_length=8, doc_stride=6)
    with pytest.raises(ValueError, match="not 9 per post"):
        tokenize_posts(examples[:-1], tokenizer, criteria=len(CRITERIA), max_length=64, doc_stride=16)
