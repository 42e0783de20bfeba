"""Split a post into sentences as character spans, and mark the sentences that are evidence.

RedSM5 annotates evidence per sentence, so a model that scores sentences (heads.evidence_unit =
sentence) reads the post in the same units the annotators did. The split is a plain rule set,
deterministic and the same at training and prediction time:

- a sentence ends after ``.``, ``!``, ``?`` or ``…`` (and closing quotes or brackets, and an
  emoticon such as ``:(``) followed by whitespace and anything but a lower-case letter;
- after an emoji or other pictograph followed by whitespace and a capital letter (Reddit posts
  often end a sentence with one instead of a full stop);
- at a blank line (paragraph break); a single line break inside a sentence does not end it, since
  posts are often wrapped mid-sentence.

Pure: text in, spans out. Spans never include the whitespace between sentences.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

Span = tuple[int, int]

# End punctuation, closing quotes or brackets, then an emoticon that belongs to the sentence (":(")
# and whitespace; not before a lower-case word ('she asked "why?" and left' is one sentence).
_END = re.compile(
    r"[.!?\u2026]+[\"'\u2019\u201d)\]]*(?:[ \t]+[:;=8][-']?[()\[\]DPpOo3/\\|*]+)?(?=\s+[^\sa-z]|\s*$)"
)
_PICTOGRAPH_END = re.compile(r"(?<=\S)(?=\s+[A-Z\"'\u2018\u201c])")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")

EVIDENCE_OVERLAP = 0.5
"""A sentence is evidence when a gold span covers more than this share of the shorter of the two
(the sentence or the span): robust to a splitter that cuts a little differently from the
annotators, without marking a long sentence that only touches the span."""


def _is_pictograph(char: str) -> bool:
    return unicodedata.category(char) == "So"


def _boundaries(text: str) -> list[int]:
    """Character positions where a new sentence may start (before stripping whitespace)."""
    cuts = {match.end() for match in _END.finditer(text)}
    cuts.update(match.end() for match in _PARAGRAPH.finditer(text))
    for match in _PICTOGRAPH_END.finditer(text):
        if _is_pictograph(text[match.start() - 1]):
            cuts.add(match.start())
    return sorted(cut for cut in cuts if 0 < cut < len(text))


def split_sentences(text: str) -> list[Span]:
    """The sentences of ``text`` as [start, end) spans, in order, without surrounding whitespace.

    Every non-blank character of ``text`` lies in exactly one span; a blank text has none.
    """
    spans: list[Span] = []
    start = 0
    for cut in [*_boundaries(text), len(text)]:
        piece = text[start:cut]
        stripped = piece.strip()
        if stripped:
            first = start + (len(piece) - len(piece.lstrip()))
            spans.append((first, first + len(stripped)))
        start = cut
    return spans


def overlap(a: Span, b: Span) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def is_evidence(sentence: Span, gold: Sequence[Span]) -> bool:
    """Whether ``sentence`` is (mostly) one of the ``gold`` evidence spans (see EVIDENCE_OVERLAP)."""
    for span in gold:
        shorter = min(sentence[1] - sentence[0], span[1] - span[0])
        if shorter > 0 and overlap(sentence, span) > EVIDENCE_OVERLAP * shorter:
            return True
    return False
