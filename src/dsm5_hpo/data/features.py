"""Tokenize pairs into overlapping windows (doc stride) so long posts are read whole.

Each window is ``[CLS] criterion description [SEP] slice of the post [SEP]`` (binary_pairs) or
``[CLS] slice of the post [SEP]`` (multi_label, targets per criterion). Its targets:

- criteria: whether the window holds the pair's evidence (multiple-instance: a matching post's
  windows that do not contain its evidence are negatives, and the post-level prediction is the max
  over its windows). A gold span counts as in the window when most of it is; a matching pair whose
  evidence lies in no window that way has its best-covering window positive, and one without
  located evidence has every window positive (where the evidence is is unknown);
- evidence span: the start/end token of the first gold span lying entirely inside the window, or
  the [CLS] position (0) for "no evidence here" (SQuAD 2);
- evidence sentences (heads.evidence_unit=sentence): per sentence of the post that the window
  reads (data/sentences.py), 1 when it is evidence, 0 when not, -1 when unknown (a matching pair
  without located evidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.data.sentences import Span, is_evidence, overlap, split_sentences
from dsm5_hpo.errors import ConfigError

UNKNOWN = -1
"""Sentence target of a matching pair whose evidence could not be located (not trained on)."""


@dataclass
class WindowFeatures:
    """All windows of a split, unpadded; the collator pads each batch to its own longest window."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    context_offsets: list[list[tuple[int, int] | None]]
    """Per token: its char span in the post, or None outside the post (question, special tokens)."""
    start_positions: list[int]
    end_positions: list[int]
    labels: list[int]
    example_index: list[int]
    """Index of the window's pair in the example list (multi_label: of the post's first pair; its
    criteria's pairs follow it in criteria order)."""
    pad_token_id: int
    multi_labels: list[list[int]] = field(default_factory=list)
    """multi_label windows only: per window, the label of each criterion (``labels`` then holds
    whether any criterion matches; the start/end lists hold 0)."""
    multi_starts: list[list[int]] = field(default_factory=list)
    multi_ends: list[list[int]] = field(default_factory=list)
    token_sentences: list[list[int]] = field(default_factory=list)
    """Per window, per token: the index (into window_sentences) of the sentence it belongs to, -1
    outside the post."""
    window_sentences: list[list[int]] = field(default_factory=list)
    """Per window: the sentences of the post it reads (indices into split_sentences(text)), in order."""
    sentence_targets: list[list[list[int]]] = field(default_factory=list)
    """Per window, per sentence in it, per output (1 or the criteria): 1 evidence, 0 not, -1 unknown."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def outputs(self) -> int:
        """Criteria predicted per window: 1 (binary_pairs) or the number of criteria (multi_label)."""
        return len(self.multi_labels[0]) if self.multi_labels else 1

    def pair_labels(self) -> list[int]:
        """One 0/1 per (window, criterion) trained on: what class weights are computed from."""
        return (
            [label for row in self.multi_labels for label in row] if self.multi_labels else list(self.labels)
        )


def tokenize_posts(
    examples: Sequence[PairExample], tokenizer: Any, *, criteria: int, max_length: int, doc_stride: int
) -> WindowFeatures:
    """multi_label windows: ``[CLS] slice of the post [SEP]``, one set per post, with a label and an
    evidence span target per criterion. ``examples`` are post-major, ``criteria`` pairs per post in
    criteria order (as pairs.build_examples makes them)."""
    _require_fast(tokenizer)
    if len(examples) % criteria:
        raise ValueError(f"{len(examples)} pairs are not {criteria} per post")
    firsts = list(range(0, len(examples), criteria))
    for first in firsts:
        if len({e.post_id for e in examples[first : first + criteria]}) != 1:
            raise ValueError(f"pairs {first}..{first + criteria - 1} are not one post's criteria")
    room = max_length - int(tokenizer.num_special_tokens_to_add(pair=False))
    if room <= doc_stride:
        raise ConfigError(
            f"config key 'data.doc_stride': windows of data.max_length={max_length} tokens hold {room} of the post, "
            f"which must be more than doc_stride={doc_stride}; lower data.doc_stride or raise data.max_length"
        )
    encoded = tokenizer(
        [examples[first].text for first in firsts],
        truncation=True,
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    features = WindowFeatures([], [], [], [], [], [], [], pad_token_id=int(tokenizer.pad_token_id or 0))
    sentences = [split_sentences(examples[first].text) for first in firsts]
    coverage: list[list[float]] = []
    for window, post in enumerate(encoded["overflow_to_sample_mapping"]):
        first = firsts[post]
        pairs = examples[first : first + criteria]
        offsets = _add_tokens(features, encoded, window, post_sequence=0)
        targets = [_answer_tokens(example, offsets) for example in pairs]
        coverage.append([_evidence_coverage(example, offsets) for example in pairs])
        features.start_positions.append(0)
        features.end_positions.append(0)
        features.example_index.append(first)
        features.multi_starts.append([start for start, _ in targets])
        features.multi_ends.append([end for _, end in targets])
        _add_sentences(features, offsets, sentences[post], pairs)
    pair_labels = [
        _window_labels(
            examples, [first + k for first in features.example_index], [row[k] for row in coverage]
        )
        for k in range(criteria)
    ]
    features.multi_labels = [list(row) for row in zip(*pair_labels, strict=True)]
    features.labels = [int(any(row)) for row in features.multi_labels]
    return features


def tokenize_for(
    input_format: str,
    examples: Sequence[PairExample],
    tokenizer: Any,
    *,
    criteria: int,
    max_length: int,
    doc_stride: int,
) -> WindowFeatures:
    """The windows of ``examples`` in ``input_format`` (data.input_format)."""
    if input_format == "multi_label":
        return tokenize_posts(
            examples, tokenizer, criteria=criteria, max_length=max_length, doc_stride=doc_stride
        )
    return tokenize_examples(examples, tokenizer, max_length=max_length, doc_stride=doc_stride)


def tokenize_examples(
    examples: Sequence[PairExample], tokenizer: Any, *, max_length: int, doc_stride: int
) -> WindowFeatures:
    """Windows for every example, in example order."""
    _require_fast(tokenizer)
    _check_stride(examples, tokenizer, max_length=max_length, doc_stride=doc_stride)
    try:
        encoded = tokenizer(
            [e.question for e in examples],
            [e.text for e in examples],
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
    except Exception as error:  # the tokenizer rejects a stride too large for what is left of the window
        raise ConfigError(
            f"config key 'data.doc_stride': cannot window posts with max_length={max_length} and "
            f"doc_stride={doc_stride} ({error}); lower data.doc_stride or raise data.max_length"
        ) from error

    features = WindowFeatures([], [], [], [], [], [], [], pad_token_id=int(tokenizer.pad_token_id or 0))
    sentences: dict[str, list[Span]] = {}
    coverage: list[float] = []
    for window, example_idx in enumerate(encoded["overflow_to_sample_mapping"]):
        example = examples[example_idx]
        offsets = _add_tokens(features, encoded, window, post_sequence=1)
        start, end = _answer_tokens(example, offsets)
        features.start_positions.append(start)
        features.end_positions.append(end)
        features.example_index.append(example_idx)
        coverage.append(_evidence_coverage(example, offsets))
        if example.text not in sentences:
            sentences[example.text] = split_sentences(example.text)
        _add_sentences(features, offsets, sentences[example.text], [example])
    features.labels = _window_labels(examples, features.example_index, coverage)
    return features


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model tokenizer: a fast (Rust) tokenizer is needed for character offsets")


def _add_tokens(
    features: WindowFeatures, encoded: Any, window: int, *, post_sequence: int
) -> list[tuple[int, int] | None]:
    """Append window ``window`` of ``encoded`` (token ids, type ids, offsets) to ``features``; returns
    its offsets: each token's char span in the post (sequence ``post_sequence``), None elsewhere."""
    sequence_ids = encoded.sequence_ids(window)
    offsets = [
        (int(o[0]), int(o[1])) if sequence_ids[i] == post_sequence else None
        for i, o in enumerate(encoded["offset_mapping"][window])
    ]
    ids = list(encoded["input_ids"][window])
    features.input_ids.append(ids)
    type_ids = encoded.get("token_type_ids")
    features.token_type_ids.append(list(type_ids[window]) if type_ids is not None else [0] * len(ids))
    features.context_offsets.append(offsets)
    return offsets


def _check_stride(
    examples: Sequence[PairExample], tokenizer: Any, *, max_length: int, doc_stride: int
) -> None:
    """The post's share of a window must exceed the stride. Checked here because the Rust tokenizer
    panics on it (pyo3's PanicException derives from BaseException, so ``except Exception`` misses it)."""
    questions = sorted({e.question for e in examples})
    if not questions:
        return
    longest = max(len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"])
    room = max_length - longest - int(tokenizer.num_special_tokens_to_add(pair=True))
    if room <= doc_stride:
        raise ConfigError(
            f"config key 'data.doc_stride': a window of data.max_length={max_length} tokens leaves {max(room, 0)} "
            f"for the post after the longest criterion description ({longest} tokens) and special tokens, "
            f"which must be more than doc_stride={doc_stride}; lower data.doc_stride or raise data.max_length"
        )


def _context_range(offsets: Sequence[tuple[int, int] | None]) -> Span | None:
    """The characters of the post a window reads, or None when it reads none."""
    context = [o for o in offsets if o is not None]
    return (context[0][0], context[-1][1]) if context else None


def _evidence_coverage(example: PairExample, offsets: Sequence[tuple[int, int] | None]) -> float:
    """The largest share of one of the pair's gold spans that the window reads (0.0 without any)."""
    window = _context_range(offsets)
    if window is None:
        return 0.0
    return max(
        (overlap(span, window) / (span[1] - span[0]) for span in example.spans if span[1] > span[0]),
        default=0.0,
    )


def _window_labels(
    examples: Sequence[PairExample], pair_of_window: Sequence[int], coverage: Sequence[float]
) -> list[int]:
    """The criteria target of each window (see the module docstring): ``pair_of_window[w]`` is the
    window's pair, ``coverage[w]`` the largest share of one of its gold spans the window reads."""
    windows_of: dict[int, list[int]] = {}
    for window, pair in enumerate(pair_of_window):
        windows_of.setdefault(pair, []).append(window)
    labels = [0] * len(pair_of_window)
    for pair, windows in windows_of.items():
        example = examples[pair]
        if not example.label:
            continue
        holding = [w for w in windows if coverage[w] > 0.5] if example.spans else windows
        # Evidence cut across windows so that none reads most of it: the one that reads the most.
        for window in holding or [max(windows, key=lambda w: (coverage[w], -w))]:
            labels[window] = 1
    return labels


def _add_sentences(
    features: WindowFeatures,
    offsets: Sequence[tuple[int, int] | None],
    sentences: Sequence[Span],
    pairs: Sequence[PairExample],
) -> None:
    """Append the window's token -> sentence map, its sentences and their targets (one per pair)."""
    ids: list[int] = []
    token_sentence: list[int] = []
    cursor = 0
    for offset in offsets:
        if offset is None or offset[1] <= offset[0]:
            token_sentence.append(-1)
            continue
        # Offsets rise through the window: walk the sentences along with them.
        while cursor < len(sentences) - 1 and sentences[cursor][1] <= offset[0]:
            cursor += 1
        if overlap(sentences[cursor], offset) == 0 and offset[1] <= sentences[cursor][0]:
            token_sentence.append(-1)  # whitespace-only token between two sentences
            continue
        if not ids or ids[-1] != cursor:
            ids.append(cursor)
        token_sentence.append(len(ids) - 1)
    targets = []
    for index in ids:
        row = []
        for pair in pairs:
            if not pair.label:
                row.append(0)
            elif not pair.spans:
                row.append(UNKNOWN)
            else:
                row.append(int(is_evidence(sentences[index], pair.spans)))
        targets.append(row)
    features.token_sentences.append(token_sentence)
    features.window_sentences.append(ids)
    features.sentence_targets.append(targets)


def _answer_tokens(example: PairExample, offsets: list[tuple[int, int] | None]) -> tuple[int, int]:
    context = [i for i, o in enumerate(offsets) if o is not None]
    if not example.spans or not context:
        return 0, 0
    window_start = offsets[context[0]]
    window_end = offsets[context[-1]]
    assert window_start is not None and window_end is not None
    for span_start, span_end in example.spans:
        if span_start >= window_start[0] and span_end <= window_end[1]:
            start_token = next(i for i in context if offsets[i][1] > span_start)  # type: ignore[index]
            end_token = max(i for i in context if offsets[i][0] < span_end)  # type: ignore[index]
            if end_token >= start_token:
                return start_token, end_token
    return 0, 0


def collate(features: WindowFeatures, indices: Sequence[int], multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad the windows at ``indices`` to their longest one (dynamic padding), rounded up to a
    ``multiple`` (a compiled model's kernels want aligned lengths; the extra positions are masked)."""
    longest = max(len(features.input_ids[i]) for i in indices)
    width = -(-longest // multiple) * multiple
    size = len(indices)
    input_ids = torch.full((size, width), features.pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((size, width), dtype=torch.long)
    attention_mask = torch.zeros((size, width), dtype=torch.long)
    # Positions the evidence head may point at: [CLS] (the null answer) and the post's tokens.
    answer_mask = torch.zeros((size, width), dtype=torch.bool)
    for row, i in enumerate(indices):
        n = len(features.input_ids[i])
        input_ids[row, :n] = torch.tensor(features.input_ids[i], dtype=torch.long)
        token_type_ids[row, :n] = torch.tensor(features.token_type_ids[i], dtype=torch.long)
        attention_mask[row, :n] = 1
        answer_mask[row, 0] = True
        answer_mask[row, :n] |= torch.tensor([o is not None for o in features.context_offsets[i]])
    if features.multi_labels:  # (batch, criteria) targets
        labels = torch.tensor([features.multi_labels[i] for i in indices], dtype=torch.float32)
        starts = torch.tensor([features.multi_starts[i] for i in indices], dtype=torch.long)
        ends = torch.tensor([features.multi_ends[i] for i in indices], dtype=torch.long)
    else:
        labels = torch.tensor([features.labels[i] for i in indices], dtype=torch.float32)
        starts = torch.tensor([features.start_positions[i] for i in indices], dtype=torch.long)
        ends = torch.tensor([features.end_positions[i] for i in indices], dtype=torch.long)
    batch = {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "answer_mask": answer_mask,
        "labels": labels,
        "start_positions": starts,
        "end_positions": ends,
    }
    if features.token_sentences:
        batch.update(_collate_sentences(features, indices, width))
    return batch


def _collate_sentences(
    features: WindowFeatures, indices: Sequence[int], width: int
) -> dict[str, torch.Tensor]:
    """token_sentence (batch, seq): each token's sentence in its window, -1 outside any; and
    sentence_targets (batch, sentences, outputs): 1/0, -1 where unknown or past the window's sentences."""
    sentences = max(1, max(len(features.window_sentences[i]) for i in indices))
    token_sentence = torch.full((len(indices), width), -1, dtype=torch.long)
    targets = torch.full((len(indices), sentences, features.outputs), UNKNOWN, dtype=torch.float32)
    for row, i in enumerate(indices):
        token_sentence[row, : len(features.token_sentences[i])] = torch.tensor(
            features.token_sentences[i], dtype=torch.long
        )
        if features.sentence_targets[i]:
            rows = torch.tensor(features.sentence_targets[i], dtype=torch.float32)
            targets[row, : rows.shape[0]] = rows
    return {"token_sentence": token_sentence, "sentence_targets": targets}
