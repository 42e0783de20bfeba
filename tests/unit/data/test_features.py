"""dsm5_hpo.data.features: overlapping windows (doc stride), evidence token targets, dynamic padding.

Uses the tiny model's tokenizer (the real uncased BERT WordPiece vocabulary), built once per session.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import SAMPLE_DIR, compose_tiny
from dsm5_hpo.data.criteria import CRITERIA, DESCRIPTIONS
from dsm5_hpo.data.features import WindowFeatures, collate, tokenize_examples, tokenize_posts
from dsm5_hpo.data.pairs import PairExample, build_examples
from dsm5_hpo.data.sentences import split_sentences
from dsm5_hpo.data.sources import load_local
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.models.loading import load_tokenizer, resolve_model

MAX_LENGTH, DOC_STRIDE = 64, 16

FILLER = [f"On day {i} I walked the dog to the park and back again." for i in range(40)]
EVIDENCE = "I feel empty and hopeless most days."
LATE_EVIDENCE = "I can't sleep, I lie awake until five."
LONG_POST = "  ".join([*FILLER[:20], EVIDENCE, *FILLER[20:], LATE_EVIDENCE])


@pytest.fixture(scope="module")
def tokenizer(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = compose_tiny(tmp_path_factory.mktemp("features"), model_cache)
    return load_tokenizer(resolve_model(config.model, cache_dir=model_cache).path)


def example(
    text: str = LONG_POST, *sentences: str, criterion: str = "DEPRESSED_MOOD", label: int = 1
) -> PairExample:
    spans = []
    for sentence in sentences:
        start = text.index(sentence)
        spans.append((start, start + len(sentence)))
    return PairExample("p1", criterion, DESCRIPTIONS[criterion], text, label, tuple(sorted(spans)))


def windows_of(features: WindowFeatures, index: int) -> list[int]:
    return [w for w, i in enumerate(features.example_index) if i == index]


def context_tokens(features: WindowFeatures, window: int) -> list[tuple[int, int]]:
    return [o for o in features.context_offsets[window] if o is not None]


def assert_tokens_cover_span(features: WindowFeatures, window: int, text: str, span: tuple[int, int]) -> None:
    """The target tokens are the tightest token run around the span (token boundaries at the edges)."""
    offsets = features.context_offsets[window]
    start, end = features.start_positions[window], features.end_positions[window]
    first, last = offsets[start], offsets[end]
    assert first is not None and last is not None
    assert first[0] <= span[0] < first[1]
    assert last[0] < span[1] <= last[1]
    assert start <= end


# --- windows ----------------------------------------------------------------------------------


def test_long_post_becomes_several_overlapping_windows(tokenizer: Any) -> None:
    assert len(tokenizer(LONG_POST)["input_ids"]) > 5 * MAX_LENGTH
    features = tokenize_examples([example()], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    assert len(features) >= 6
    assert features.example_index == [0] * len(features)
    for window in range(len(features)):
        assert len(features.input_ids[window]) <= MAX_LENGTH
        assert len(features.token_type_ids[window]) == len(features.input_ids[window])
        assert len(features.context_offsets[window]) == len(features.input_ids[window])
        assert features.labels[window] == 1
    for previous, following in zip(range(len(features) - 1), range(1, len(features)), strict=True):
        shared = context_tokens(features, previous)[-DOC_STRIDE:]
        assert context_tokens(features, following)[:DOC_STRIDE] == shared  # doc stride: overlap


def test_every_character_of_a_long_post_is_in_some_window(tokenizer: Any) -> None:
    features = tokenize_examples([example()], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    covered = set()
    for window in range(len(features)):
        for start, end in context_tokens(features, window):
            covered.update(range(start, end))
    missing = [i for i, char in enumerate(LONG_POST) if not char.isspace() and i not in covered]
    assert missing == []  # no silent truncation
    assert max(covered) == len(LONG_POST.rstrip()) - 1


def test_every_sample_post_is_read_whole(tokenizer: Any) -> None:
    dataset = load_local(SAMPLE_DIR)
    long_posts = sorted(dataset.posts.values(), key=len)[-10:]
    examples = [example(text, label=0) for text in long_posts]
    features = tokenize_examples(examples, tokenizer, max_length=256, doc_stride=32)
    for index, text in enumerate(long_posts):
        assert len(windows_of(features, index)) > 1
        covered = {
            c
            for w in windows_of(features, index)
            for s, e in context_tokens(features, w)
            for c in range(s, e)
        }
        # Whole-post tokenization (no window): the windows together must cover exactly the same characters.
        whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        assert covered == {c for s, e in whole["offset_mapping"] for c in range(s, e)}
        # What no token covers is whitespace or what the normalizer drops (emoji variation selectors).
        dropped = {text[c] for c in range(len(text)) if c not in covered and not text[c].isspace()}
        assert all(unicodedata.category(char) in ("Mn", "Cf", "Cc") for char in dropped), dropped
        assert max(covered) == len(text.rstrip()) - 1


def test_window_layout_question_then_post(tokenizer: Any) -> None:
    features = tokenize_examples([example()], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    question_ids = tokenizer(DESCRIPTIONS["DEPRESSED_MOOD"], add_special_tokens=False)["input_ids"]
    n = len(question_ids)
    for window in range(len(features)):
        ids = features.input_ids[window]
        assert ids[0] == tokenizer.cls_token_id
        assert ids[1 : n + 1] == question_ids
        assert ids[n + 1] == tokenizer.sep_token_id
        assert ids[-1] == tokenizer.sep_token_id
        offsets = features.context_offsets[window]
        assert all(o is None for o in offsets[: n + 2])
        assert offsets[-1] is None
        assert all(o is not None for o in offsets[n + 2 : -1])
        assert features.token_type_ids[window] == [0] * (n + 2) + [1] * (len(ids) - n - 2)


def test_short_post_is_one_window(tokenizer: Any) -> None:
    short = example("I feel sad.", "I feel sad.")
    features = tokenize_examples([short], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    assert len(features) == 1
    offsets = features.context_offsets[0]
    start, end = features.start_positions[0], features.end_positions[0]
    assert start > 0
    assert short.text[offsets[start][0] : offsets[end][1]] == "I feel sad."  # type: ignore[index]


# --- evidence targets -------------------------------------------------------------------------


def test_window_with_the_span_points_at_it_others_at_cls(tokenizer: Any) -> None:
    positive = example(LONG_POST, EVIDENCE)
    (span,) = positive.spans
    features = tokenize_examples([positive], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    containing = []
    for window in range(len(features)):
        context = context_tokens(features, window)
        inside = context[0][0] <= span[0] and span[1] <= context[-1][1]
        if inside:
            containing.append(window)
            offsets = features.context_offsets[window]
            start, end = features.start_positions[window], features.end_positions[window]
            assert start > 0
            assert LONG_POST[offsets[start][0] : offsets[end][1]] == EVIDENCE  # type: ignore[index]
            assert_tokens_cover_span(features, window, LONG_POST, span)
        else:
            assert (features.start_positions[window], features.end_positions[window]) == (0, 0)
    assert containing  # the span fits in at least one window


def test_span_at_the_very_end_of_a_long_post(tokenizer: Any) -> None:
    positive = example(LONG_POST, LATE_EVIDENCE, criterion="SLEEP_ISSUES")
    features = tokenize_examples([positive], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    last = len(features) - 1
    offsets = features.context_offsets[last]
    start, end = features.start_positions[last], features.end_positions[last]
    assert LONG_POST[offsets[start][0] : offsets[end][1]] == LATE_EVIDENCE  # type: ignore[index]
    assert all(features.start_positions[w] == 0 for w in range(last - 1))


def test_first_span_inside_a_window_wins(tokenizer: Any) -> None:
    text = "I feel sad. I am so tired. Nothing else."
    both = example(text, "I am so tired.", "I feel sad.")
    features = tokenize_examples([both], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    offsets = features.context_offsets[0]
    assert (
        text[offsets[features.start_positions[0]][0] : offsets[features.end_positions[0]][1]] == "I feel sad."
    )  # type: ignore[index]


def test_span_inside_a_word_maps_to_the_surrounding_tokens(tokenizer: Any) -> None:
    text = "Unbelievably exhausting weeks."
    start = text.index("believ")
    partial = PairExample("p1", "FATIGUE", DESCRIPTIONS["FATIGUE"], text, 1, ((start, start + 6),))
    features = tokenize_examples([partial], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    assert features.start_positions[0] > 0
    assert_tokens_cover_span(features, 0, text, (start, start + 6))


@pytest.mark.parametrize(("label", "spans"), [(0, ()), (1, ())], ids=["negative", "positive-unlocated"])
def test_no_span_means_every_window_points_at_cls(tokenizer: Any, label: int, spans: tuple[()]) -> None:
    pair = PairExample("p1", "FATIGUE", DESCRIPTIONS["FATIGUE"], LONG_POST, label, spans)
    features = tokenize_examples([pair], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    assert set(features.start_positions) == set(features.end_positions) == {0}
    assert set(features.labels) == {label}


def test_sample_evidence_targets_map_back_onto_gold_spans(tokenizer: Any) -> None:
    dataset = load_local(SAMPLE_DIR)
    pairs, _ = build_examples(dataset, list(dataset.posts), CRITERIA)
    positives = [p for p in pairs if p.spans]
    features = tokenize_examples(positives, tokenizer, max_length=256, doc_stride=32)
    targeted = set()
    for window in range(len(features)):
        start, end = features.start_positions[window], features.end_positions[window]
        if (start, end) == (0, 0):
            continue
        pair = positives[features.example_index[window]]
        offsets = features.context_offsets[window]
        first, last = offsets[start], offsets[end]
        assert first is not None and last is not None
        matching = [s for s in pair.spans if first[0] <= s[0] < first[1] and last[0] < s[1] <= last[1]]
        assert matching, (pair.post_id, pair.criterion)
        targeted.add(features.example_index[window])
    assert len(targeted) == len(positives)  # at 256 tokens every located evidence sentence is a target


def test_windows_follow_example_order(tokenizer: Any) -> None:
    pairs = [
        example("Short one.", label=0),
        example(LONG_POST, EVIDENCE),
        example("Another short one.", label=0, criterion="FATIGUE"),
    ]
    features = tokenize_examples(pairs, tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    assert features.example_index == sorted(features.example_index)
    assert set(features.example_index) == {0, 1, 2}
    assert len(windows_of(features, 0)) == len(windows_of(features, 2)) == 1
    assert [features.labels[w] for w in windows_of(features, 0) + windows_of(features, 2)] == [0, 0]


def holds(features: WindowFeatures, window: int, span: tuple[int, int]) -> bool:
    """Whether the window reads more than half of ``span``."""
    tokens = context_tokens(features, window)
    first, last = tokens[0][0], tokens[-1][1]
    return max(0, min(last, span[1]) - max(first, span[0])) > (span[1] - span[0]) / 2


def test_a_window_without_the_evidence_is_negative_for_its_matching_pair(tokenizer: Any) -> None:
    pair = example(LONG_POST, EVIDENCE)
    features = tokenize_examples([pair], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    labels = [features.labels[w] for w in range(len(features))]
    expected = [int(holds(features, w, pair.spans[0])) for w in range(len(features))]
    assert labels == expected
    assert 1 <= sum(labels) < len(features)  # the post matches through the windows that hold it


def test_evidence_no_window_holds_most_of_makes_the_best_covering_window_positive(tokenizer: Any) -> None:
    # A span far longer than a window: every window reads a small share of it.
    span = (LONG_POST.index(FILLER[2]), LONG_POST.index(FILLER[30]))
    pair = PairExample("p1", "DEPRESSED_MOOD", DESCRIPTIONS["DEPRESSED_MOOD"], LONG_POST, 1, (span,))
    features = tokenize_examples([pair], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    assert not any(holds(features, w, span) for w in range(len(features)))
    assert sum(features.labels) == 1


def test_a_matching_pair_without_located_evidence_has_every_window_positive(tokenizer: Any) -> None:
    features = tokenize_examples(
        [example(LONG_POST)], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE
    )
    assert len(features) > 1 and set(features.labels) == {1}
    assert {t for w in features.sentence_targets for row in w for t in row} == {-1}  # unknown: not trained on


def test_multi_label_windows_are_positive_per_criterion_where_that_criterion_s_evidence_is(
    tokenizer: Any,
) -> None:
    criteria = ("DEPRESSED_MOOD", "SLEEP_ISSUES", "FATIGUE")
    pairs = [
        example(LONG_POST, EVIDENCE, criterion=criteria[0]),
        example(LONG_POST, LATE_EVIDENCE, criterion=criteria[1]),
        example(LONG_POST, criterion=criteria[2], label=0),
    ]
    features = tokenize_posts(pairs, tokenizer, criteria=3, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    for window in range(len(features)):
        expected = [
            int(holds(features, window, pairs[0].spans[0])),
            int(holds(features, window, pairs[1].spans[0])),
            0,
        ]
        assert features.multi_labels[window] == expected
        assert features.labels[window] == int(any(expected))
    assert (
        sum(row[0] for row in features.multi_labels) >= 1
        and sum(row[1] for row in features.multi_labels) >= 1
    )


def test_sentence_maps_and_targets_mark_the_evidence_sentence(tokenizer: Any) -> None:
    text = "I walked the dog. I feel empty and hopeless most days. Then we had tea."
    pair = example(text, "I feel empty and hopeless most days.")
    features = tokenize_examples([pair], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    (window,) = range(len(features))
    assert features.window_sentences[window] == [0, 1, 2]
    assert features.sentence_targets[window] == [[0], [1], [0]]
    offsets = features.context_offsets[window]
    sentences = split_sentences(text)
    for token, sentence in enumerate(features.token_sentences[window]):
        if offsets[token] is None:
            assert sentence == -1  # question and special tokens
        else:
            start, end = sentences[features.window_sentences[window][sentence]]
            assert start <= offsets[token][0] and offsets[token][1] <= end
    batch = collate(features, [0])
    assert batch["token_sentence"][0].tolist() == features.token_sentences[window]
    assert batch["sentence_targets"].tolist() == [[[0.0], [1.0], [0.0]]]


def test_a_window_reads_only_its_own_sentences(tokenizer: Any) -> None:
    features = tokenize_examples(
        [example(LONG_POST, EVIDENCE)], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE
    )
    sentences = split_sentences(LONG_POST)
    for window in range(len(features)):
        ids = features.window_sentences[window]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        tokens = context_tokens(features, window)
        for sentence in ids:  # every sentence listed overlaps the window's characters
            start, end = sentences[sentence]
            assert start < tokens[-1][1] and end > tokens[0][0]
        used = {i for i in features.token_sentences[window] if i >= 0}
        assert used == set(range(len(ids)))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_length", "doc_stride"), [(64, 43), (64, 60), (32, 15), (32, 31)])
def test_stride_too_large_for_the_window_is_a_config_error(
    tokenizer: Any, max_length: int, doc_stride: int
) -> None:
    # The longest description (DEPRESSED_MOOD, 18 tokens) + 3 special tokens leave 43 of 64 (11 of 32) for the post.
    pairs = [example(label=0, criterion=c) for c in CRITERIA]
    with pytest.raises(ConfigError) as caught:
        tokenize_examples(pairs, tokenizer, max_length=max_length, doc_stride=doc_stride)
    message = str(caught.value)
    assert "data.doc_stride" in message
    assert f"doc_stride={doc_stride}" in message
    assert "data.max_length" in message


def test_largest_valid_stride_works(tokenizer: Any) -> None:
    features = tokenize_examples([example(label=0)], tokenizer, max_length=64, doc_stride=42)
    assert len(features) > 1


def test_slow_tokenizer_is_rejected() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(ConfigError, match="fast"):
        tokenize_examples([example()], Slow(), max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)


# --- collate ----------------------------------------------------------------------------------


def test_collate_pads_to_the_longest_window_of_the_batch(tokenizer: Any) -> None:
    pairs = [example("I feel sad.", "I feel sad."), example(LONG_POST, EVIDENCE), example("Ok.", label=0)]
    features = tokenize_examples(pairs, tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    short, long_window, tiny = (
        windows_of(features, 0)[0],
        windows_of(features, 1)[0],
        windows_of(features, 2)[0],
    )
    lengths = [len(features.input_ids[w]) for w in (short, tiny)]

    small = collate(features, [short, tiny])
    assert small["input_ids"].shape == (2, max(lengths))  # dynamic: not max_length

    batch = collate(features, [short, long_window, tiny])
    width = MAX_LENGTH
    assert batch["input_ids"].shape == (3, width)
    for key in ("token_type_ids", "attention_mask", "answer_mask"):
        assert batch[key].shape == (3, width)
    assert batch["input_ids"].dtype == torch.long
    assert batch["answer_mask"].dtype == torch.bool
    assert batch["labels"].dtype == torch.float32
    # The long post's first window does not hold its evidence: a negative for that pair.
    assert batch["labels"].tolist() == [1.0, 0.0, 0.0]
    assert batch["start_positions"].tolist() == [
        features.start_positions[w] for w in (short, long_window, tiny)
    ]
    assert batch["end_positions"].tolist() == [features.end_positions[w] for w in (short, long_window, tiny)]

    for row, window in enumerate((short, long_window, tiny)):
        n = len(features.input_ids[window])
        assert batch["input_ids"][row, :n].tolist() == features.input_ids[window]
        assert batch["input_ids"][row, n:].tolist() == [features.pad_token_id] * (width - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["token_type_ids"][row, :n].tolist() == features.token_type_ids[window]
        assert batch["token_type_ids"][row, n:].tolist() == [0] * (width - n)
        expected_mask = [
            i == 0 or (i < n and features.context_offsets[window][i] is not None) for i in range(width)
        ]
        assert batch["answer_mask"][row].tolist() == expected_mask
        # Gold targets always lie where the evidence head may point.
        assert batch["answer_mask"][row, features.start_positions[window]]
        assert batch["answer_mask"][row, features.end_positions[window]]


def test_collate_answer_mask_excludes_question_and_special_tokens(tokenizer: Any) -> None:
    features = tokenize_examples(
        [example("I feel sad.", "I feel sad.")], tokenizer, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE
    )
    mask = collate(features, [0])["answer_mask"][0].tolist()
    ids = features.input_ids[0]
    separators = [i for i, token in enumerate(ids) if token == tokenizer.sep_token_id]
    assert mask[0]  # [CLS]: "no evidence here"
    assert not any(mask[1 : separators[0] + 1])  # question and its [SEP]
    assert all(mask[separators[0] + 1 : separators[1]])  # the post
    assert not mask[separators[1]]  # final [SEP]
