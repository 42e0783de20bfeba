"""dsm5_hpo.data.augmentation: each operation, the lexicon, and what is never augmented."""

from __future__ import annotations

import random

import pytest

from dsm5_hpo.data.augmentation import (
    augment_example,
    augment_examples,
    edit_span,
    load_lexicon,
)
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.vocabulary import parse_operations

POST = "Work was fine. I feel so empty and tired every day. Then dinner."
EVIDENCE = "I feel so empty and tired every day."


def example(spans: tuple[tuple[int, int], ...] | None = None) -> PairExample:
    start = POST.index(EVIDENCE)
    spans = ((start, start + len(EVIDENCE)),) if spans is None else spans
    return PairExample("p", "DEPRESSED_MOOD", "q", POST, 1, spans)


def test_swap_keeps_the_words_and_changes_their_order() -> None:
    edited = edit_span(EVIDENCE, "swap", random.Random(0), {})
    assert edited != EVIDENCE
    assert sorted(edited.split()) == sorted(EVIDENCE.split())


def test_delete_drops_one_word_and_keeps_single_spacing() -> None:
    edited = edit_span(EVIDENCE, "delete", random.Random(1), {})
    assert len(edited.split()) == len(EVIDENCE.split()) - 1
    assert "  " not in edited and edited == edited.strip()
    assert edit_span("Alone.", "delete", random.Random(1), {}) == "Alone."  # never empties a span


def test_synonym_uses_the_lexicon_and_keeps_capitalization() -> None:
    lexicon = {"empty": ("hollow",), "tired": ("exhausted",)}
    edited = edit_span("Empty and TIRED", "synonym", random.Random(3), lexicon)
    assert edited in ("Hollow and TIRED", "Empty and EXHAUSTED")
    assert edit_span("nothing here", "synonym", random.Random(3), {"sad": ("down",)}) == "nothing here"


def test_char_noise_changes_one_letter_inside_a_word() -> None:
    for seed in range(20):
        edited = edit_span("hopeless", "char_noise", random.Random(seed), {})
        assert edited != "hopeless" and edited[0] == "h" and edited[-1] == "s"
        assert abs(len(edited) - len("hopeless")) <= 1


def test_the_shipped_lexicon_is_symmetric_and_loads() -> None:
    lexicon = load_lexicon()
    assert "hollow" in lexicon["empty"] and "empty" in lexicon["hollow"]
    assert all(word not in others for word, others in lexicon.items())


def test_text_outside_the_evidence_is_untouched_and_the_span_relocated() -> None:
    original = example()
    augmented = augment_example(original, probability=1.0, operations=["synonym"], rng=random.Random(0))
    (start, end) = augmented.spans[0]
    assert augmented.text[:start] == POST[: original.spans[0][0]]
    assert augmented.text[end:] == POST[original.spans[0][1] :]
    assert augmented.text[start:end] != EVIDENCE


def test_pairs_without_evidence_or_with_overlapping_spans_are_left_alone() -> None:
    none = PairExample("p", "SLEEP_ISSUES", "q", POST, 0, ())
    assert augment_example(none, probability=1.0, operations=["swap"], rng=random.Random(0)) is none
    overlapping = example(((15, 40), (30, 50)))
    assert (
        augment_example(overlapping, probability=1.0, operations=["swap"], rng=random.Random(0))
        is overlapping
    )


def test_augment_examples_is_seeded() -> None:
    examples = [example()] * 20
    first = augment_examples(examples, probability=0.5, operations=("swap", "delete"), seed=4)
    assert first == augment_examples(examples, probability=0.5, operations=("swap", "delete"), seed=4)
    assert first != augment_examples(examples, probability=0.5, operations=("swap", "delete"), seed=5)
    assert 0 < sum(a.text != POST for a in first) < 20


def test_operation_names_are_checked() -> None:
    assert parse_operations("swap+ synonym,swap") == ("swap", "synonym")
    assert parse_operations("") == ()
    with pytest.raises(ValueError, match="'shout'"):
        parse_operations("swap+shout")
