"""Evidence-only augmentation: whatever the post, spans and operations, only evidence text changes."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dsm5_hpo.data.augmentation import augment_example
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.vocabulary import OPERATIONS

WORDS = st.sampled_from(
    [
        "I",
        "feel",
        "SAD",
        "Tired",
        "empty",
        "and",
        "hopeless,",
        "sleep",
        "all",
        "day.",
        "food",
        "x",
        "ab",
        "naïve",
        "🙂",
    ]
)
SEPARATORS = st.sampled_from([" ", "  ", "\n", " \t "])


@st.composite
def examples(draw: st.DrawFn) -> PairExample:
    words = draw(st.lists(WORDS, min_size=1, max_size=40))
    seps = draw(st.lists(SEPARATORS, min_size=len(words), max_size=len(words)))
    text = "".join(w + s for w, s in zip(words, seps, strict=True)).rstrip()
    # Spans are runs of whole words, disjoint, as located evidence sentences are.
    bounds = [(m_start, m_start + len(w)) for w, m_start in _positions(words, seps)]
    cuts = sorted(draw(st.sets(st.integers(0, len(bounds)), max_size=6)) | {0, len(bounds)})
    spans = []
    for a, b in itertools.pairwise(cuts):
        if b > a and draw(st.booleans()):
            spans.append((bounds[a][0], bounds[b - 1][1]))
    return PairExample("p", "DEPRESSED_MOOD", "q", text, 1 if spans else 0, tuple(spans))


def _positions(words: list[str], seps: list[str]) -> list[tuple[str, int]]:
    out, position = [], 0
    for word, sep in zip(words, seps, strict=True):
        out.append((word, position))
        position += len(word) + len(sep)
    return out


def outside(text: str, spans: tuple[tuple[int, int], ...]) -> list[str]:
    pieces, cursor = [], 0
    for start, end in spans:
        pieces.append(text[cursor:start])
        cursor = end
    pieces.append(text[cursor:])
    return pieces


@settings(max_examples=300, deadline=None)
@given(
    example=examples(),
    operations=st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=4, unique=True),
    probability=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_only_evidence_text_changes_and_spans_stay_valid(
    example: PairExample, operations: list[str], probability: float, seed: int
) -> None:
    augmented = augment_example(
        example, probability=probability, operations=operations, rng=random.Random(seed)
    )
    assert len(augmented.spans) == len(example.spans)
    # Every character outside the evidence spans is byte-identical, in the same places between spans.
    assert outside(augmented.text, augmented.spans) == outside(example.text, example.spans)
    previous_end = 0
    for start, end in augmented.spans:
        assert previous_end <= start < end <= len(augmented.text)
        assert augmented.text[start:end].strip()  # a span keeps some text
        previous_end = end
    assert (augmented.post_id, augmented.criterion, augmented.label) == (
        example.post_id,
        example.criterion,
        example.label,
    )
    if probability == 0.0 or not example.spans:
        assert augmented == example


@settings(max_examples=200, deadline=None)
@given(
    example=examples(),
    split=st.integers(0, 6),
    operations=st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=4, unique=True),
    probability=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_multi_label_posts_change_only_evidence_and_every_criterion_keeps_its_spans(
    example: PairExample, split: int, operations: list[str], probability: float, seed: int
) -> None:
    """multi_label: one text per post, augmented once over the evidence of all its criteria; each
    criterion's spans are re-located in it (here the post's spans are shared out over 3 criteria)."""
    from dsm5_hpo.data.augmentation import augment_posts

    shares = [example.spans[:split], example.spans[split : split + 1], example.spans[split + 1 :]]
    pairs = [
        PairExample("p", f"C{k}", "q", example.text, int(bool(spans)), tuple(spans))
        for k, spans in enumerate(shares)
    ]
    augmented = augment_posts(pairs, criteria=3, probability=probability, operations=operations, seed=seed)
    assert len({a.text for a in augmented}) == 1  # still one text for the post
    text = augmented[0].text
    union = tuple(sorted(s for a in augmented for s in a.spans))
    assert outside(text, union) == outside(example.text, example.spans)
    for before, after in zip(pairs, augmented, strict=True):
        assert len(after.spans) == len(before.spans) and after.label == before.label
        for start, end in after.spans:
            assert 0 <= start < end <= len(text) and text[start:end].strip()
