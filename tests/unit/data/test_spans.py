"""dsm5_hpo.data.spans.locate_span: find an evidence sentence in its post; offsets index the original text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm5_hpo.data.spans import locate_span

POST = (
    "I moved to Seattle last year.  I just feel so down\nall the time, even with friends. "
    "My friend said \u201cyou\u2019re fine\u201d \u2014 I\u2019m not. Sleep?  Barely."
)

QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)


def canonical(text: str) -> str:
    """Equal up to whitespace runs, typographic quotes/dashes and case."""
    return " ".join(text.translate(QUOTES).split()).lower()


def located(text: str, sentence: str) -> str:
    span = locate_span(text, sentence)
    assert span is not None, sentence
    start, end = span
    assert 0 <= start < end <= len(text)
    return text[start:end]


def test_exact_match() -> None:
    sentence = "I moved to Seattle last year."
    assert locate_span(POST, sentence) == (0, len(sentence))
    assert located(POST, "even with friends.") == "even with friends."


def test_surrounding_whitespace_of_the_sentence_is_ignored() -> None:
    assert located(POST, "  I moved to Seattle last year.\n") == "I moved to Seattle last year."


def test_first_occurrence_wins() -> None:
    text = "Bad day. Bad day."
    assert locate_span(text, "Bad day.") == (0, 8)


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        (
            "I just feel so down all the time, even with friends.",
            "I just feel so down\nall the time, even with friends.",
        ),
        ("Sleep? Barely.", "Sleep?  Barely."),
        ("I just   feel so  down\tall the time,", "I just feel so down\nall the time,"),
        ("last year. I just feel", "last year.  I just feel"),
    ],
)
def test_whitespace_differences(sentence: str, expected: str) -> None:
    assert located(POST, sentence) == expected


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        (
            "My friend said \"you're fine\" - I'm not.",
            "My friend said \u201cyou\u2019re fine\u201d \u2014 I\u2019m not.",
        ),
        ("you\u2019re fine", "you\u2019re fine"),  # exact, no folding needed
        ("\u201cyou\u2019re fine\u201d", "\u201cyou\u2019re fine\u201d"),
    ],
)
def test_curly_quotes_and_dashes_match_straight_ones(sentence: str, expected: str) -> None:
    assert located(POST, sentence) == expected


def test_straight_quotes_in_post_match_curly_in_sentence() -> None:
    text = 'He said "don\'t worry" and left.'
    assert located(text, "He said \u201cdon\u2019t worry\u201d") == 'He said "don\'t worry"'


def test_non_breaking_space_matches_space() -> None:
    text = "I feel\u00a0empty inside."
    assert located(text, "I feel empty inside.") == "I feel\u00a0empty inside."


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("i MOVED to seattle LAST year.", "I moved to Seattle last year."),
        ("SLEEP? barely.", "Sleep?  Barely."),
        ("my friend said \u201cYOU'RE fine\u201d", "My friend said \u201cyou\u2019re fine\u201d"),
    ],
)
def test_case_differences(sentence: str, expected: str) -> None:
    assert located(POST, sentence) == expected


@pytest.mark.parametrize(
    "sentence",
    [
        "I have never felt better in my life.",  # paraphrase / not there
        "I moved to Portland last year.",
        "Seattle last year I moved to.",
        "I moved to Seattle last year. Extra words",
    ],
)
def test_not_found_is_none(sentence: str) -> None:
    assert locate_span(POST, sentence) is None


@pytest.mark.parametrize("sentence", ["", " ", "\n\t  "])
def test_empty_sentence_is_none(sentence: str) -> None:
    assert locate_span(POST, sentence) is None


def test_empty_text_is_none() -> None:
    assert locate_span("", "anything") is None


def test_regex_characters_are_literal() -> None:
    text = "Cost me $5 (a lot).  Really? [sic] a+b*c"
    assert located(text, "$5 (a lot). Really?") == "$5 (a lot).  Really?"
    assert located(text, "[sic]  a+b*c") == "[sic] a+b*c"
    assert locate_span(text, "$5 (a lot) Really") is None


@pytest.mark.parametrize(
    "sentence",
    [
        "I moved to Seattle last year.",
        "I just feel so down all the time, even with friends.",
        "My friend said \"you're fine\" - I'm not.",
        "sleep? barely.",
        "  FRIENDS.  ",
    ],
)
def test_offsets_index_the_original_text(sentence: str) -> None:
    assert canonical(located(POST, sentence)) == canonical(sentence)


WORDS = st.sampled_from(
    ["I", "feel", "so", "down", "sad", "\u201cfine\u201d", "don\u2019t", "Sleep?", "(x)", "a.b"]
)
GAPS = st.sampled_from([" ", "  ", "\n", " \n ", "\t", "\u00a0"])


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(WORDS, min_size=6, max_size=20),
    gaps=st.lists(GAPS, min_size=20, max_size=20),
    bounds=st.tuples(st.integers(0, 19), st.integers(1, 6)),
    sentence_gap=GAPS,
    upper=st.booleans(),
)
def test_a_sentence_cut_from_the_post_is_always_found(
    words: list[str], gaps: list[str], bounds: tuple[int, int], sentence_gap: str, upper: bool
) -> None:
    text = "".join(w + g for w, g in zip(words, gaps, strict=False))
    first = min(bounds[0], len(words) - 1)
    chosen = words[first : first + bounds[1]]
    sentence = sentence_gap.join(chosen).translate(QUOTES)
    if upper:
        sentence = sentence.upper()
    span = locate_span(text, sentence)
    assert span is not None
    start, end = span
    assert canonical(text[start:end]) == canonical(sentence)
    assert not re.match(r"\s", text[start:end])
    assert not re.search(r"\s$", text[start:end])
