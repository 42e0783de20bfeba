"""Augmentation that changes only the evidence text of training pairs.

For a training pair with gold evidence spans, each span is, with probability ``probability``,
rewritten by one operation drawn from ``operations``:

- ``swap``: two words of the span trade places
- ``delete``: one word of the span goes (a span keeps at least one word)
- ``synonym``: one word with an entry in the shipped lexicon (resources/synonyms.tsv) becomes a
  synonym, keeping its capitalization
- ``char_noise``: one letter of one word is dropped, doubled or swapped with its neighbour

Every character outside the evidence spans stays byte-identical; the spans are re-located in the
new text (by construction: each edit's length change shifts everything after it). Pairs without
evidence, and pairs whose spans overlap (an edit of one would change the other), are returned
unchanged. Validation and test pairs are never passed here. Pure: same input and seed, same
output.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources

from dsm5_hpo.data.pairs import PairExample

# The operation names live in the leaf vocabulary (config checks train.augment_operations); named here too.
from dsm5_hpo.vocabulary import OPERATIONS as OPERATIONS
from dsm5_hpo.vocabulary import parse_operations as parse_operations

_WORD = re.compile(r"\S+")
_LETTERS = re.compile(r"[A-Za-z]+")


@cache
def load_lexicon() -> dict[str, tuple[str, ...]]:
    """Word -> its synonyms, from the lexicon shipped with the package."""
    text = resources.files("dsm5_hpo.data").joinpath("resources/synonyms.tsv").read_text(encoding="utf-8")
    lexicon: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        group = [w.strip() for w in line.split("\t") if w.strip()]
        for word in group:
            lexicon.setdefault(word, set()).update(w for w in group if w != word)
    return {word: tuple(sorted(others)) for word, others in lexicon.items()}


def _match_case(word: str, template: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def edit_span(text: str, operation: str, rng: random.Random, lexicon: Mapping[str, Sequence[str]]) -> str:
    """``text`` (one evidence span) after ``operation``; unchanged when the operation cannot apply."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if operation == "swap" and len(words) >= 2:
        i, j = sorted(rng.sample(range(len(words)), 2))
        (a0, a1), (b0, b1) = words[i], words[j]
        return text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]
    if operation == "delete" and len(words) >= 2:
        i = rng.randrange(len(words))
        start, end = words[i]
        # Take the word and the whitespace after it (before it, for the last word).
        end = words[i + 1][0] if i + 1 < len(words) else end
        start = words[i - 1][1] if i + 1 == len(words) else start
        return text[:start] + text[end:]
    if operation == "synonym":
        choices = [
            (m.start(), m.end())
            for m in _LETTERS.finditer(text)
            if m.group().lower() in lexicon and lexicon[m.group().lower()]
        ]
        if choices:
            start, end = rng.choice(choices)
            word = text[start:end]
            replacement = _match_case(rng.choice(list(lexicon[word.lower()])), word)
            return text[:start] + replacement + text[end:]
        return text
    if operation == "char_noise":
        letters = [(m.start(), m.end()) for m in _LETTERS.finditer(text) if m.end() - m.start() >= 3]
        if letters:
            start, end = rng.choice(letters)
            k = rng.randrange(start + 1, end - 1)  # never the first or last letter of the word
            kind = rng.choice(("drop", "double", "swap"))
            if kind == "drop":
                return text[:k] + text[k + 1 :]
            if kind == "double":
                return text[: k + 1] + text[k] + text[k + 1 :]
            return text[:k] + text[k + 1] + text[k] + text[k + 2 :]
        return text
    return text


def augment_example(
    example: PairExample,
    *,
    probability: float,
    operations: Sequence[str],
    rng: random.Random,
    lexicon: Mapping[str, Sequence[str]] | None = None,
) -> PairExample:
    """``example`` with each evidence span rewritten with ``probability``; outside text untouched."""
    spans = example.spans
    if not spans or not operations or probability <= 0.0:
        return example
    if any(b[0] < a[1] for a, b in itertools.pairwise(spans)):
        return example  # overlapping spans: an edit of one would change the other
    lexicon = load_lexicon() if lexicon is None else lexicon
    pieces: list[str] = []
    new_spans: list[tuple[int, int]] = []
    cursor = 0
    for start, end in spans:
        pieces.append(example.text[cursor:start])
        span_text = example.text[start:end]
        if rng.random() < probability:
            edited = edit_span(span_text, rng.choice(list(operations)), rng, lexicon)
            span_text = edited if edited.strip() else span_text
        begin = sum(len(p) for p in pieces)
        pieces.append(span_text)
        new_spans.append((begin, begin + len(span_text)))
        cursor = end
    pieces.append(example.text[cursor:])
    text = "".join(pieces)
    if text == example.text:
        return example
    return dataclasses.replace(example, text=text, spans=tuple(new_spans))


def augment_examples(
    examples: Sequence[PairExample], *, probability: float, operations: Sequence[str], seed: int
) -> list[PairExample]:
    """Every example, evidence-augmented; depends only on the arguments (one draw per example)."""
    rng = random.Random(seed)
    lexicon = load_lexicon()
    return [
        augment_example(e, probability=probability, operations=operations, rng=rng, lexicon=lexicon)
        for e in examples
    ]


def augment_posts(
    examples: Sequence[PairExample],
    *,
    criteria: int,
    probability: float,
    operations: Sequence[str],
    seed: int,
) -> list[PairExample]:
    """multi_label: all criteria of a post share one text, so the post is augmented once, on the evidence
    of every criterion together, and each criterion's spans are re-located in the new text.
    ``examples`` are post-major with ``criteria`` pairs per post (pairs.build_examples order)."""
    rng = random.Random(seed)
    lexicon = load_lexicon()
    out: list[PairExample] = []
    for first in range(0, len(examples), criteria):
        pairs = examples[first : first + criteria]
        union = sorted({span for pair in pairs for span in pair.spans})
        merged = dataclasses.replace(pairs[0], criterion="*", spans=tuple(union))
        augmented = augment_example(
            merged, probability=probability, operations=operations, rng=rng, lexicon=lexicon
        )
        if augmented is merged:
            out.extend(pairs)
            continue
        moved = dict(zip(union, augmented.spans, strict=True))
        out.extend(
            dataclasses.replace(pair, text=augmented.text, spans=tuple(sorted(moved[s] for s in pair.spans)))
            for pair in pairs
        )
    return out
