"""Tokenize pairs into overlapping windows (doc stride) so long posts are read whole.

Each window is ``[CLS] criterion description [SEP] slice of the post [SEP]``. Its targets:
the pair's criteria label, and the evidence start/end token of the first gold span lying
entirely inside the window, or the [CLS] position (0) for "no evidence here" (SQuAD 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.errors import ConfigError


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
    for window, post in enumerate(encoded["overflow_to_sample_mapping"]):
        first = firsts[post]
        offsets = _add_tokens(features, encoded, window, post_sequence=0)
        targets = [_answer_tokens(examples[first + k], offsets) for k in range(criteria)]
        labels = [examples[first + k].label for k in range(criteria)]
        features.start_positions.append(0)
        features.end_positions.append(0)
        features.labels.append(int(any(labels)))
        features.example_index.append(first)
        features.multi_labels.append(labels)
        features.multi_starts.append([start for start, _ in targets])
        features.multi_ends.append([end for _, end in targets])
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
    for window, example_idx in enumerate(encoded["overflow_to_sample_mapping"]):
        example = examples[example_idx]
        offsets = _add_tokens(features, encoded, window, post_sequence=1)
        start, end = _answer_tokens(example, offsets)
        features.start_positions.append(start)
        features.end_positions.append(end)
        features.labels.append(example.label)
        features.example_index.append(example_idx)
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


def collate(features: WindowFeatures, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Pad the windows at ``indices`` to their longest one (dynamic padding)."""
    width = max(len(features.input_ids[i]) for i in indices)
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
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "answer_mask": answer_mask,
        "labels": labels,
        "start_positions": starts,
        "end_positions": ends,
    }
