"""dsm5_hpo.data.sentences: the post's sentences as character spans, and which are evidence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conftest import SAMPLE_DIR
from dsm5_hpo.data.criteria import CRITERIA
from dsm5_hpo.data.pairs import build_examples
from dsm5_hpo.data.sentences import is_evidence, split_sentences
from dsm5_hpo.data.sources import load_local


def texts(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_sentences_end_at_punctuation_followed_by_space() -> None:
    assert texts("I feel sad. I can't sleep!  Why? Nothing helps…  Ok") == [
        "I feel sad.",
        "I can't sleep!",
        "Why?",
        "Nothing helps…",
        "Ok",
    ]


def test_an_emoticon_stays_with_its_sentence_and_a_quote_with_a_lower_case_follow_up_does_not_cut() -> None:
    assert texts("Everything feels hopeless. :( Anyway, hi.") == [
        "Everything feels hopeless. :(",
        "Anyway, hi.",
    ]
    assert texts('She asked "what do you enjoy?" and I had no answer.') == [
        'She asked "what do you enjoy?" and I had no answer.'
    ]


def test_an_emoji_before_a_capital_ends_a_sentence_and_a_single_line_break_does_not() -> None:
    assert texts("My mood is at rock bottom 😞 I stayed up until 5am") == [
        "My mood is at rock bottom 😞",
        "I stayed up until 5am",
    ]
    assert texts("I have been so tired\nthat I skip work. Then\n\nnew paragraph") == [
        "I have been so tired\nthat I skip work.",
        "Then",
        "new paragraph",
    ]


def test_blank_text_has_no_sentence() -> None:
    assert split_sentences("") == [] and split_sentences(" \n\n ") == []


@given(st.text(alphabet=st.sampled_from(list("ab .!?\n😞:(")), max_size=60))
def test_spans_are_ordered_disjoint_stripped_and_cover_every_non_blank_character(text: str) -> None:
    spans = split_sentences(text)
    covered = set()
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert text[start:end] == text[start:end].strip()
        covered.update(range(start, end))
        previous_end = end
    assert {i for i, ch in enumerate(text) if not ch.isspace()} <= covered


def test_is_evidence_needs_most_of_the_shorter_of_sentence_and_span() -> None:
    assert is_evidence((10, 30), [(10, 30)])
    assert is_evidence((10, 30), [(8, 31)])  # the annotators' span a little wider
    assert is_evidence((10, 30), [(0, 100)])  # a span over several sentences marks each
    assert not is_evidence((10, 30), [(25, 60)])  # touches the end only
    assert not is_evidence((10, 30), [])


def test_every_located_evidence_sentence_of_the_sample_is_one_sentence_of_the_split() -> None:
    dataset = load_local(SAMPLE_DIR)
    pairs, _ = build_examples(dataset, list(dataset.posts), CRITERIA, warn=False)
    spans = [(p.text, span) for p in pairs for span in p.spans]
    assert len(spans) > 500
    for text, span in spans:  # each marks exactly one sentence as evidence
        assert sum(is_evidence(sentence, [span]) for sentence in split_sentences(text)) == 1, text[
            span[0] : span[1]
        ]
    exact = sum(span in split_sentences(text) for text, span in spans)
    assert exact >= 0.99 * len(spans)  # the rest differ by an emoticon the annotation left out
