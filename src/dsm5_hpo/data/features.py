"""Tokenize pairs into overlapping windows (doc stride) so long posts are read whole.

Each window is ``[CLS] criterion description [SEP] slice of the post [SEP]``. Its targets:
the pair's criteria label, and the evidence start/end token of the first gold span lying
entirely inside the window, or the [CLS] position (0) for "no evidence here" (SQuAD 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    """Index of the window's pair in the example list."""
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_examples(
    examples: Sequence[PairExample], tokenizer: Any, *, max_length: int, doc_stride: int
) -> WindowFeatures:
    """Windows for every example, in example order."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model tokenizer: a fast (Rust) tokenizer is needed for character offsets")
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
        sequence_ids = encoded.sequence_ids(window)
        offsets = [
            (int(o[0]), int(o[1])) if sequence_ids[i] == 1 else None
            for i, o in enumerate(encoded["offset_mapping"][window])
        ]
        start, end = _answer_tokens(example, offsets)
        ids = list(encoded["input_ids"][window])
        features.input_ids.append(ids)
        type_ids = encoded.get("token_type_ids")
        features.token_type_ids.append(list(type_ids[window]) if type_ids is not None else [0] * len(ids))
        features.context_offsets.append(offsets)
        features.start_positions.append(start)
        features.end_positions.append(end)
        features.labels.append(example.label)
        features.example_index.append(example_idx)
    return features


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
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "answer_mask": answer_mask,
        "labels": torch.tensor([features.labels[i] for i in indices], dtype=torch.float32),
        "start_positions": torch.tensor([features.start_positions[i] for i in indices], dtype=torch.long),
        "end_positions": torch.tensor([features.end_positions[i] for i in indices], dtype=torch.long),
    }
