"""dsm5_hpo.data.pairs.build_examples: (post, criterion) pairs with labels and located evidence spans."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from conftest import captured_logs
from dsm5_hpo.data.criteria import CRITERIA, DESCRIPTIONS, SPECIAL_CASE
from dsm5_hpo.data.pairs import PairExample, SpanStats, build_examples
from dsm5_hpo.data.schema import Annotation, RedSM5

WITH_SPECIAL = (*CRITERIA, SPECIAL_CASE)

POSTS = {
    "p1": "I feel so sad.  I can't sleep at night.\nI quit painting. I hate myself.",
    "p2": "Nothing much going on. Work is fine.",
    "p3": "Not a symptom sentence. I think about ending it all.",
    "p4": "I stopped eating and sleeping. Weird week.",
}


def row(post_id: str, sentence: str, symptom: str, status: int = 1, n: int = 0) -> Annotation:
    return Annotation(post_id, f"{post_id}_{n}", sentence, symptom, status, "")


ANNOTATIONS = (
    row("p1", "I feel so sad.", "DEPRESSED_MOOD", n=0),
    row("p1", "I can't sleep at night.", "SLEEP_ISSUES", n=1),
    row("p1", "I quit painting.", "ANHEDONIA", status=0, n=2),  # clinician: absent
    row("p1", "I hate myself.", "WORTHLESSNESS", n=3),
    row("p1", "I hate myself.", SPECIAL_CASE, n=3),
    row("p2", "Work is fine.", "FATIGUE", status=0, n=1),  # only status 0 rows
    row("p3", "I think about ending it all.", "SUICIDAL_THOUGHTS", n=1),
    row("p3", "I think  about ENDING it all.", "SUICIDAL_THOUGHTS", n=1),  # duplicate row, other spelling
    row("p3", "Not a symptom sentence.", "SUICIDAL_THOUGHTS", n=0),
    row("p4", "I stopped eating and sleeping.", "APPETITE_CHANGE", n=0),  # two symptoms, one sentence
    row("p4", "I stopped eating and sleeping.", "SLEEP_ISSUES", n=0),
)

DATASET = RedSM5(
    posts={**POSTS, "p5": "A post nobody annotated."}, annotations=ANNOTATIONS, source="test", revision="r"
)


def by_key(examples: list[PairExample]) -> dict[tuple[str, str], PairExample]:
    return {(e.post_id, e.criterion): e for e in examples}


def span_text(example: PairExample) -> list[str]:
    return [example.text[s:e] for s, e in example.spans]


@pytest.fixture
def pair_logs() -> Iterator[list[logging.LogRecord]]:
    with captured_logs("dsm5_hpo.data.pairs") as records:
        yield records


def test_one_pair_per_post_and_criterion_in_order() -> None:
    examples, _ = build_examples(DATASET, ["p2", "p1"], CRITERIA)
    assert [(e.post_id, e.criterion) for e in examples] == [(p, c) for p in ("p2", "p1") for c in CRITERIA]
    for example in examples:
        assert example.question == DESCRIPTIONS[example.criterion]
        assert example.text == DATASET.posts[example.post_id]


def test_labels_come_from_status_1_rows_only() -> None:
    pairs = by_key(build_examples(DATASET, ["p1"], CRITERIA)[0])
    positives = {c for (_, c), e in pairs.items() if e.label == 1}
    assert positives == {"DEPRESSED_MOOD", "SLEEP_ISSUES", "WORTHLESSNESS"}
    assert span_text(pairs["p1", "DEPRESSED_MOOD"]) == ["I feel so sad."]
    assert span_text(pairs["p1", "SLEEP_ISSUES"]) == ["I can't sleep at night."]


def test_status_0_rows_are_negatives_without_spans() -> None:
    pairs = by_key(build_examples(DATASET, ["p1", "p2"], CRITERIA)[0])
    assert pairs["p1", "ANHEDONIA"].label == 0
    assert pairs["p1", "ANHEDONIA"].spans == ()
    assert all(pairs["p2", c].label == 0 and pairs["p2", c].spans == () for c in CRITERIA)


def test_unannotated_post_gives_nine_negatives() -> None:
    examples, stats = build_examples(DATASET, ["p5"], CRITERIA)
    assert len(examples) == 9
    assert all(e.label == 0 and e.spans == () for e in examples)
    assert stats == SpanStats()


def test_special_case_excluded_by_default() -> None:
    examples, stats = build_examples(DATASET, list(DATASET.posts), CRITERIA)
    assert SPECIAL_CASE not in {e.criterion for e in examples}
    assert len(examples) == 9 * len(DATASET.posts)
    # Its evidence rows are not counted either.
    assert stats.total == 8


def test_special_case_included_when_asked() -> None:
    pairs = by_key(build_examples(DATASET, ["p1", "p2"], WITH_SPECIAL)[0])
    assert len(pairs) == 20
    special = pairs["p1", SPECIAL_CASE]
    assert special.label == 1
    assert special.question == DESCRIPTIONS[SPECIAL_CASE]
    assert span_text(special) == ["I hate myself."]
    assert pairs["p2", SPECIAL_CASE].label == 0


def test_two_symptoms_on_one_sentence_give_two_positives_with_the_same_span() -> None:
    pairs = by_key(build_examples(DATASET, ["p4"], CRITERIA)[0])
    appetite, sleep = pairs["p4", "APPETITE_CHANGE"], pairs["p4", "SLEEP_ISSUES"]
    assert appetite.label == sleep.label == 1
    assert appetite.spans == sleep.spans == ((0, len("I stopped eating and sleeping.")),)


def test_spans_are_sorted_and_deduplicated() -> None:
    example = by_key(build_examples(DATASET, ["p3"], CRITERIA)[0])["p3", "SUICIDAL_THOUGHTS"]
    # Three rows: the later sentence twice (two spellings, one span), then the earlier one.
    assert span_text(example) == ["Not a symptom sentence.", "I think about ending it all."]
    assert list(example.spans) == sorted(set(example.spans))


def test_unlocated_sentences_are_counted_and_keep_the_label(pair_logs: list[logging.LogRecord]) -> None:
    dataset = RedSM5(
        posts={"q1": "I am tired all the time. I feel worthless."},
        annotations=(
            row("q1", "I am tired all the time.", "FATIGUE"),
            row("q1", "Everything I do is pointless and I am a failure.", "WORTHLESSNESS", n=1),  # paraphrase
            row("q1", "Nobody would miss me.", "SUICIDAL_THOUGHTS", n=2),  # not in the post
            row("q1", "Not there either.", "ANHEDONIA", status=0, n=3),  # status 0: never looked up
        ),
        source="test",
        revision="r",
    )
    examples, stats = build_examples(dataset, ["q1"], CRITERIA)
    assert (stats.located, stats.unlocated, stats.total) == (1, 2, 3)
    assert stats.unlocated_ids == ["q1/WORTHLESSNESS", "q1/SUICIDAL_THOUGHTS"]
    pairs = by_key(examples)
    assert pairs["q1", "WORTHLESSNESS"].label == 1
    assert pairs["q1", "WORTHLESSNESS"].spans == ()
    assert pairs["q1", "ANHEDONIA"].label == 0
    warnings = [r.getMessage() for r in pair_logs if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("2 of 3 evidence sentences could not be located")
    assert "q1/WORTHLESSNESS" in warnings[0]


def test_no_warning_when_everything_is_located(pair_logs: list[logging.LogRecord]) -> None:
    _, stats = build_examples(DATASET, ["p1", "p4"], CRITERIA)
    assert stats.unlocated == 0
    assert stats.located == 5
    assert not [r for r in pair_logs if r.levelno >= logging.WARNING]


def test_only_requested_posts_are_counted() -> None:
    _, stats = build_examples(DATASET, ["p4"], CRITERIA)
    assert stats.located == 2


def test_every_span_indexes_its_post_text() -> None:
    examples, _ = build_examples(DATASET, list(DATASET.posts), WITH_SPECIAL)
    for example in examples:
        for start, end in example.spans:
            assert 0 <= start < end <= len(example.text)
            assert example.text[start:end].strip() == example.text[start:end]
