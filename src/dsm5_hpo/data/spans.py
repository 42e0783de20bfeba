"""Locate an annotated evidence sentence inside its post as a character span.

``sentence_text`` is normally a substring of the post, but whitespace (double spaces, line
breaks) and typographic quotes often differ. The search relaxes step by step and never
changes offsets: the span always indexes the original post text.
"""

from __future__ import annotations

import re

# One-to-one character folds: the folded string has the same length, so offsets carry over.
_FOLD = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u00a0": " "}
)


def locate_span(text: str, sentence: str) -> tuple[int, int] | None:
    """Return [start, end) of ``sentence`` in ``text``, or None when it cannot be found.

    Tries, in order: exact match; the same after folding quotes/dashes; any whitespace run
    matching any whitespace run; the same ignoring case.
    """
    needle = sentence.strip()
    if not needle:
        return None
    start = text.find(needle)
    if start >= 0:
        return start, start + len(needle)
    folded_text, folded_needle = text.translate(_FOLD), needle.translate(_FOLD)
    start = folded_text.find(folded_needle)
    if start >= 0:
        return start, start + len(folded_needle)
    words = folded_needle.split()
    pattern = r"\s+".join(re.escape(word) for word in words)
    for flags in (0, re.IGNORECASE):
        match = re.search(pattern, folded_text, flags)
        if match:
            return match.start(), match.end()
    return None
