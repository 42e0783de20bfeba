"""Window outputs -> one prediction per pair, on hand-built windows with known best spans."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from dsm5_hpo.data.features import WindowFeatures
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.evaluation.decoding import WindowOutputs, decode_predictions

WORDS = ["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff", "gggg", "hhhh"]
TEXT = " ".join(WORDS)  # word i spans chars [5 i, 5 i + 4)
PREFIX = 3  # [CLS] question [SEP] come before the post's tokens
LOW = -8.0  # default logit of a post token


def word_span(first: int, last: int) -> tuple[int, int]:
    return 5 * first, 5 * last + 4


def example(
    post_id: str = "p1", criterion: str = "FATIGUE", label: int = 1, spans: tuple[tuple[int, int], ...] = ()
) -> PairExample:
    return PairExample(post_id, criterion, "feeling tired", TEXT, label, spans)


class Builder:
    """Collects windows and their logits; positions are given as post word indices."""

    def __init__(self) -> None:
        self.features = WindowFeatures([], [], [], [], [], [], [], pad_token_id=0)
        self.criteria: list[float] = []
        self.starts: list[np.ndarray] = []
        self.ends: list[np.ndarray] = []

    def window(
        self,
        example_index: int,
        words: range,
        *,
        start: dict[int, float] | None = None,
        end: dict[int, float] | None = None,
        null: tuple[float, float] = (-10.0, -10.0),
        criteria: float = 0.0,
        question: float | None = None,
    ) -> None:
        length = PREFIX + len(words) + 1
        offsets: list[tuple[int, int] | None] = [None] * PREFIX
        offsets += [(5 * w, 5 * w + 4) for w in words]
        offsets.append(None)
        start_logits = np.full(length, LOW, dtype=np.float32)
        end_logits = np.full(length, LOW, dtype=np.float32)
        start_logits[0], end_logits[0] = null
        for logits, values in ((start_logits, start or {}), (end_logits, end or {})):
            for word, value in values.items():
                assert word in words, "a logit for a word outside the window"
                logits[PREFIX + words.index(word)] = value
        if question is not None:  # a tempting logit on a question token (not part of the post)
            start_logits[1] = end_logits[1] = question
        self.features.input_ids.append([1] * length)
        self.features.token_type_ids.append([0] * length)
        self.features.context_offsets.append(offsets)
        self.features.start_positions.append(0)
        self.features.end_positions.append(0)
        self.features.labels.append(1)
        self.features.example_index.append(example_index)
        self.criteria.append(criteria)
        self.starts.append(start_logits)
        self.ends.append(end_logits)

    def decode(
        self, examples: list[PairExample], *, max_answer_tokens: int = 30, margin: float = 0.0
    ) -> list:
        outputs = WindowOutputs(np.array(self.criteria, dtype=np.float32), self.starts, self.ends)
        return decode_predictions(
            examples, self.features, outputs, max_answer_tokens=max_answer_tokens, null_score_margin=margin
        )


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_best_span_is_picked_across_the_windows_of_a_pair() -> None:
    b = Builder()
    b.window(0, range(0, 5), start={1: 2.0}, end={2: 3.0})  # score 5 in the first window
    b.window(0, range(3, 8), start={5: 4.0}, end={6: 5.0})  # score 9 in the second
    [prediction] = b.decode([example()])
    assert prediction.pred_span == word_span(5, 6)
    assert TEXT[slice(*prediction.pred_span)] == "ffff gggg"

    b = Builder()  # the same, with the better span in the first window
    b.window(0, range(0, 5), start={1: 6.0}, end={2: 6.0})
    b.window(0, range(3, 8), start={5: 4.0}, end={6: 5.0})
    [prediction] = b.decode([example()])
    assert prediction.pred_span == word_span(1, 2)


def test_overlapping_windows_give_the_same_span_once() -> None:
    b = Builder()
    b.window(0, range(0, 5), start={3: 5.0}, end={4: 5.0})
    b.window(0, range(3, 8), start={3: 5.0}, end={4: 5.0})
    [prediction] = b.decode([example()])
    assert prediction.pred_span == word_span(3, 4)


@pytest.mark.parametrize(
    ("null", "margin", "expect_null"),
    [
        ((5.0, 5.0), 0.0, True),  # null 10 > span 6
        ((3.0, 3.0), 0.0, False),  # null 6 == span 6: not "beats"
        ((5.0, 5.0), 3.9, True),  # 10 - 6 = 4 > 3.9
        ((5.0, 5.0), 4.0, False),  # 4 is not more than the margin
        ((5.0, 5.0), 10.0, False),
        ((-20.0, -20.0), -50.0, True),  # -46 > -50: a negative margin favours null
    ],
)
def test_null_answer_against_best_span_and_margin(
    null: tuple[float, float], margin: float, expect_null: bool
) -> None:
    b = Builder()
    b.window(0, range(0, 8), start={2: 3.0}, end={3: 3.0}, null=null)
    [prediction] = b.decode([example()], margin=margin)
    assert prediction.pred_span == (None if expect_null else word_span(2, 3))


def test_null_score_is_the_lowest_over_the_windows() -> None:
    """SQuAD 2: one window that does not believe in 'no answer' is enough to keep the span."""
    b = Builder()
    b.window(0, range(0, 5), start={1: 3.0}, end={1: 3.0}, null=(10.0, 10.0))  # null 20
    b.window(0, range(3, 8), null=(2.0, 2.0))  # null 4 < span 6
    [prediction] = b.decode([example()])
    assert prediction.pred_span == word_span(1, 1)

    b = Builder()
    b.window(0, range(0, 5), start={1: 3.0}, end={1: 3.0}, null=(10.0, 10.0))
    b.window(0, range(3, 8), null=(4.0, 4.0))  # null 8 > span 6
    [prediction] = b.decode([example()])
    assert prediction.pred_span is None


def test_max_answer_tokens_is_respected() -> None:
    # raw best is words 0..3 (10 + 10); with at most 2 tokens the best is 0..1 (10 + 1)
    start = {0: 10.0, 1: 0.0, 2: 0.0, 3: 0.0}
    end = {0: 0.0, 1: 1.0, 2: 0.0, 3: 10.0}
    for max_tokens, expected in (
        (4, word_span(0, 3)),
        (30, word_span(0, 3)),
        (2, word_span(0, 1)),
        (1, word_span(0, 0)),
    ):
        b = Builder()
        b.window(0, range(0, 4), start=start, end=end)
        [prediction] = b.decode([example()], max_answer_tokens=max_tokens)
        assert prediction.pred_span == expected, max_tokens


def test_end_before_start_is_never_chosen() -> None:
    b = Builder()
    # start peaks on word 3, end peaks on word 0: the invalid pair (3, 0) would score 20
    b.window(0, range(0, 4), start={0: 0.0, 3: 10.0}, end={0: 10.0, 3: 1.0})
    [prediction] = b.decode([example()])
    assert prediction.pred_span == word_span(3, 3)
    start, end = prediction.pred_span
    assert start < end


def test_only_post_tokens_can_be_an_answer() -> None:
    b = Builder()
    b.window(0, range(0, 4), start={2: 1.0}, end={2: 1.0}, question=50.0)
    [prediction] = b.decode([example()])
    assert prediction.pred_span == word_span(2, 2)


def test_window_without_post_tokens_predicts_null() -> None:
    b = Builder()
    b.window(0, range(0, 0), null=(-50.0, -50.0))
    [prediction] = b.decode([example()])
    assert prediction.pred_span is None


def test_prob_is_the_max_sigmoid_over_windows() -> None:
    b = Builder()
    b.window(0, range(0, 3), criteria=-1.0)
    b.window(0, range(2, 5), criteria=2.5)
    b.window(0, range(4, 8), criteria=0.3)
    b.window(1, range(0, 8), criteria=-4.0)
    first, second = b.decode([example("p1"), example("p2", label=0)])
    assert first.prob == pytest.approx(sigmoid(2.5))
    assert second.prob == pytest.approx(sigmoid(-4.0))
    assert isinstance(first.prob, float)


def test_extreme_logits_give_probabilities_in_range() -> None:
    b = Builder()
    b.window(0, range(0, 3), criteria=1e4)
    b.window(1, range(0, 3), criteria=-1e4)
    high, low = b.decode([example("p1"), example("p2")])
    assert high.prob == 1.0
    assert 0.0 <= low.prob < 1e-30


def test_predictions_follow_example_order_and_carry_the_gold() -> None:
    gold = (word_span(1, 2),)
    examples = [example("p1", "FATIGUE", 1, gold), example("p1", "ANHEDONIA", 0), example("p2", "FATIGUE", 0)]
    b = Builder()
    # windows of different pairs interleaved, as the tokenizer never does but nothing forbids
    b.window(2, range(0, 8), criteria=-3.0)
    b.window(0, range(0, 8), start={1: 5.0}, end={2: 5.0}, criteria=3.0)
    b.window(1, range(0, 8), criteria=-1.0)
    predictions = b.decode(examples)
    assert [(p.post_id, p.criterion, p.label) for p in predictions] == [
        ("p1", "FATIGUE", 1),
        ("p1", "ANHEDONIA", 0),
        ("p2", "FATIGUE", 0),
    ]
    assert predictions[0].gold_spans == gold
    assert predictions[1].gold_spans == ()
    assert all(p.text == TEXT for p in predictions)
    assert predictions[0].pred_span == word_span(1, 2)
    assert [p.prob for p in predictions] == pytest.approx([sigmoid(3.0), sigmoid(-1.0), sigmoid(-3.0)])


def test_pair_without_any_window_is_a_value_error() -> None:
    b = Builder()
    b.window(0, range(0, 8))
    b.window(2, range(0, 8))
    with pytest.raises(ValueError, match="p-missing/ANHEDONIA"):
        b.decode([example("p1"), example("p-missing", "ANHEDONIA"), example("p3")])


def test_empty_split_gives_no_predictions() -> None:
    assert Builder().decode([]) == []


def _reference(
    starts: np.ndarray, ends: np.ndarray, context: range, max_tokens: int
) -> tuple[float, int, int]:
    best = (-math.inf, -1, -1)
    for s in context:
        for e in context:
            if s <= e < s + max_tokens and starts[s] + ends[e] > best[0]:
                best = (float(starts[s] + ends[e]), s, e)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_brute_force_search(seed: int) -> None:
    rng = random.Random(seed)
    b = Builder()
    windows = [range(0, 5), range(3, 8)] if seed % 2 else [range(0, 8)]
    for words in windows:
        start = {w: rng.uniform(-5, 5) for w in words}
        end = {w: rng.uniform(-5, 5) for w in words}
        b.window(0, words, start=start, end=end, null=(rng.uniform(-5, 5), rng.uniform(-5, 5)))
    max_tokens = rng.randint(1, 6)
    margin = rng.uniform(-3, 3)
    [prediction] = b.decode([example()], max_answer_tokens=max_tokens, margin=margin)

    best_score, best_span = -math.inf, None
    null_score = math.inf
    for words, starts, ends in zip(windows, b.starts, b.ends, strict=True):
        null_score = min(null_score, float(starts[0] + ends[0]))
        score, s, e = _reference(starts, ends, range(PREFIX, PREFIX + len(words)), max_tokens)
        if score > best_score:
            best_score, best_span = score, word_span(words[s - PREFIX], words[e - PREFIX])
    expected = None if null_score - best_score > margin else best_span
    assert prediction.pred_span == expected


# --- gating and sentence-level evidence -------------------------------------------------------


def test_criteria_gating_gives_the_best_span_exactly_when_the_pair_matches() -> None:
    builder = Builder()
    # Pair 0: confident match, but the null score beats its span (SQuAD 2 would say "no evidence").
    builder.window(0, range(8), start={2: 1.0}, end={3: 1.0}, null=(5.0, 5.0), criteria=3.0)
    # Pair 1: a strong span, but the criteria head says no match.
    builder.window(1, range(8), start={5: 9.0}, end={6: 9.0}, criteria=-3.0)
    examples = [example("p1"), example("p2", label=0)]
    outputs = WindowOutputs(np.array(builder.criteria, dtype=np.float32), builder.starts, builder.ends)
    gated = decode_predictions(
        examples,
        builder.features,
        outputs,
        max_answer_tokens=30,
        null_score_margin=0.0,
        gating="criteria",
        match_threshold=0.5,
    )
    assert [p.pred_span for p in gated] == [word_span(2, 3), None]
    by_null = builder.decode(examples)  # the SQuAD 2 rule: the other way round
    assert [p.pred_span for p in by_null] == [None, word_span(5, 6)]
    assert [p.candidate_span for p in gated] == [word_span(2, 3), word_span(5, 6)]


def sentence_window(features: WindowFeatures, example_index: int, sentences: list[int]) -> None:
    features.input_ids.append([1, 1])
    features.token_type_ids.append([0, 0])
    features.context_offsets.append([None, (0, 1)])
    features.example_index.append(example_index)
    features.window_sentences.append(sentences)


def test_sentence_evidence_is_the_best_sentence_of_any_window() -> None:
    text = "I walked. I feel empty. We had tea. I cannot sleep."
    pairs = [
        PairExample("p1", "DEPRESSED_MOOD", "q", text, 1, ((10, 23),)),
        PairExample("p1", "SLEEP_ISSUES", "q", text, 0, ()),
    ]
    features = WindowFeatures([], [], [], [], [], [], [], pad_token_id=0)
    sentence_window(features, 0, [0, 1, 2])  # multi_label: one window per post slice, two criteria
    sentence_window(features, 0, [2, 3])
    outputs = WindowOutputs(
        np.array([[2.0, -1.0], [-3.0, 0.5]], dtype=np.float32),
        [],
        [],
        [
            np.array([[-4.0, -5.0], [2.0, -6.0], [-1.0, -1.0]], dtype=np.float32),
            np.array([[-3.0, -2.0], [-3.0, 0.5]], dtype=np.float32),
        ],
    )
    predictions = decode_predictions(
        pairs,
        features,
        outputs,
        max_answer_tokens=30,
        null_score_margin=0.0,
        gating="criteria",
        match_threshold=0.5,
    )
    mood, sleep = predictions
    assert mood.candidate_span == (10, 23) and mood.pred_span == (10, 23)  # "I feel empty."
    assert mood.prob == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert sleep.candidate_span == (36, 51)  # "I cannot sleep.", best in the second window
    assert sleep.pred_span == (36, 51)  # sigmoid(0.5) >= 0.5: it matches, so its evidence is given
    assert sleep.null_gap == pytest.approx(-0.5)  # null score 0 minus the sentence's logit
    by_null = decode_predictions(
        pairs, features, outputs, max_answer_tokens=30, null_score_margin=-1.0, gating="null_score"
    )
    assert [p.pred_span for p in by_null] == [(10, 23), None]  # logit 2 >= 1 given, 0.5 < 1 not


def _top_k_reference(
    starts: np.ndarray, ends: np.ndarray, context: range, max_tokens: int, k: int = 20
) -> tuple[float, int, int]:
    """SQuAD's n-best rule, written plainly: the best valid pair among the k best starts and k best ends."""
    positions = list(context)
    top_starts = sorted(positions, key=lambda p: -starts[p])[:k]
    top_ends = sorted(positions, key=lambda p: -ends[p])[:k]
    best = (-math.inf, -1, -1)
    for s in top_starts:
        for e in top_ends:
            if s <= e < s + max_tokens and starts[s] + ends[e] > best[0]:
                best = (float(starts[s] + ends[e]), s, e)
    return best


def test_windows_longer_than_20_tokens_search_the_top_20_starts_and_ends() -> None:
    # The brute-force test above never has more than 8 context tokens, so the pruning to the 20 best
    # starts and ends never cuts anything there; here windows have 60, and it does.
    pruned_differs = 0
    for seed in range(40):
        rng = random.Random(seed)
        words = range(0, 60)
        b = Builder()
        start = {w: rng.gauss(0, 3) for w in words}
        end = {w: rng.gauss(0, 3) for w in words}
        b.window(0, words, start=start, end=end)
        max_tokens = rng.randint(1, 12)
        [prediction] = b.decode([example()], max_answer_tokens=max_tokens, margin=1e9)  # a span always wins
        context = range(PREFIX, PREFIX + len(words))
        score, s, e = _top_k_reference(b.starts[0], b.ends[0], context, max_tokens)
        expected = None if s < 0 else word_span(s - PREFIX, e - PREFIX)
        assert prediction.pred_span == expected, f"seed {seed}"
        exhaustive, _, _ = _reference(b.starts[0], b.ends[0], context, max_tokens)
        assert score <= exhaustive
        pruned_differs += score < exhaustive
    assert pruned_differs > 0, (
        "no case where the top-20 pruning changed the answer: the test exercises nothing"
    )
