"""Tokenized windows kept on disk, so a resumed study, the next study and `evaluate` skip tokenizing.

An entry is keyed by everything the windows depend on: the examples themselves (post text,
criterion description, label, gold spans: a stronger "data revision" than any revision string,
and it covers the split and data.max_posts), the tokenizer (its full serialized pipeline and
vocabulary) and the window settings (max_length, doc_stride), plus this module's format version.
Any change gives a new key; nothing is ever invalidated by hand.

An entry is ``<key>.npz`` (flat integer arrays, loaded without pickle) and ``<key>.json``
(its SHA-256, counts and what it was built from), both written atomically, the JSON last: an
entry without its JSON is not an entry. A file that fails its hash or its shape checks is
logged as a WARNING, deleted and rebuilt. The cache is an optimization: a failure to write it
(full disk, read-only folder) is a WARNING and the study goes on with the windows in memory.
Entries beyond ``max_entries`` are removed, least recently used first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsm5_hpo.data.features import WindowFeatures, tokenize_examples
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.storage.atomic import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Bump when WindowFeatures or tokenize_examples change what they produce for the same input
(2: windows without the pair's evidence are negatives; sentence maps and targets)."""

Builder = Callable[..., WindowFeatures]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of the fast tokenizer's whole pipeline (normalizer, vocabulary, special tokens).

    The per-call truncation and padding state is left out: it is what the last call set, not
    part of the tokenizer.
    """
    pipeline = json.loads(tokenizer.backend_tokenizer.to_str())
    pipeline.pop("truncation", None)
    pipeline.pop("padding", None)
    described = {
        "class": type(tokenizer).__name__,
        "pad_token_id": tokenizer.pad_token_id,
        "pipeline": pipeline,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def features_key(
    examples: Sequence[PairExample],
    tokenizer_sha: str,
    *,
    max_length: int,
    doc_stride: int,
    variant: str = "",
) -> str:
    """``variant`` names a windowing other than binary_pairs' (e.g. 'multi_label'); '' keeps the keys
    binary_pairs windows always had."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [FORMAT_VERSION, tokenizer_sha, max_length, doc_stride, *([variant] if variant else [])]
        ).encode()
    )
    for e in examples:
        row = [e.post_id, e.criterion, e.question, e.text, e.label, e.spans]
        digest.update(json.dumps(row, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _matrix(rows: list[list[int]]) -> np.ndarray:
    return (
        np.asarray(rows, dtype=np.int64).reshape(len(rows), -1) if rows else np.zeros((0, 0), dtype=np.int64)
    )


def to_arrays(features: WindowFeatures) -> dict[str, np.ndarray]:
    """Flat arrays: tokens of every window end to end, cut by ``lengths``; offsets (-1, -1) = None."""
    offsets = [o if o is not None else (-1, -1) for row in features.context_offsets for o in row]
    return {
        "lengths": np.asarray([len(ids) for ids in features.input_ids], dtype=np.int64),
        "input_ids": np.asarray([t for ids in features.input_ids for t in ids], dtype=np.int64),
        "token_type_ids": np.asarray([t for ids in features.token_type_ids for t in ids], dtype=np.int8),
        "offsets": np.asarray(offsets, dtype=np.int64).reshape(-1, 2),
        "start_positions": np.asarray(features.start_positions, dtype=np.int64),
        "end_positions": np.asarray(features.end_positions, dtype=np.int64),
        "labels": np.asarray(features.labels, dtype=np.int64),
        "example_index": np.asarray(features.example_index, dtype=np.int64),
        "pad_token_id": np.asarray([features.pad_token_id], dtype=np.int64),
        # multi_label windows: (windows, criteria); (0, 0) for binary_pairs
        "multi_labels": _matrix(features.multi_labels),
        "multi_starts": _matrix(features.multi_starts),
        "multi_ends": _matrix(features.multi_ends),
        # evidence sentences: per token its sentence in the window; per window its sentences; per
        # sentence its targets (sentences of all windows end to end, cut by sentence_counts)
        "token_sentences": np.asarray([t for row in features.token_sentences for t in row], dtype=np.int64),
        "sentence_counts": np.asarray([len(row) for row in features.window_sentences], dtype=np.int64),
        "window_sentences": np.asarray([t for row in features.window_sentences for t in row], dtype=np.int64),
        "sentence_targets": np.asarray(
            [t for row in features.sentence_targets for t in row], dtype=np.int64
        ).reshape(-1, features.outputs),
    }


def from_arrays(arrays: Mapping[str, np.ndarray]) -> WindowFeatures:
    """Inverse of :func:`to_arrays`; raises ValueError when the arrays do not fit together."""
    lengths = arrays["lengths"].tolist()
    windows, tokens = len(lengths), int(sum(lengths))
    per_window = ("start_positions", "end_positions", "labels", "example_index")
    if any(n < 1 for n in lengths) or any(len(arrays[name]) != windows for name in per_window):
        raise ValueError("window counts disagree")
    if len(arrays["input_ids"]) != tokens or len(arrays["token_type_ids"]) != tokens:
        raise ValueError(f"token counts disagree with the {tokens} the window lengths add up to")
    if arrays["offsets"].shape != (tokens, 2):
        raise ValueError(f"offsets have shape {arrays['offsets'].shape}, expected ({tokens}, 2)")
    ids, types = arrays["input_ids"].tolist(), arrays["token_type_ids"].tolist()
    starts, ends = arrays["offsets"][:, 0].tolist(), arrays["offsets"][:, 1].tolist()
    offsets = [None if s < 0 else (s, e) for s, e in zip(starts, ends, strict=True)]
    features = WindowFeatures([], [], [], [], [], [], [], pad_token_id=int(arrays["pad_token_id"][0]))
    position = 0
    for n in lengths:
        features.input_ids.append(ids[position : position + n])
        features.token_type_ids.append(types[position : position + n])
        features.context_offsets.append(offsets[position : position + n])
        position += n
    features.start_positions = arrays["start_positions"].tolist()
    features.end_positions = arrays["end_positions"].tolist()
    features.labels = arrays["labels"].tolist()
    features.example_index = arrays["example_index"].tolist()
    multi = [
        arrays[name] if name in arrays else np.zeros((0, 0))
        for name in ("multi_labels", "multi_starts", "multi_ends")
    ]
    if any(len(m) not in (0, windows) for m in multi) or len({m.shape for m in multi}) != 1:
        raise ValueError("multi-label targets disagree with the window count")
    features.multi_labels, features.multi_starts, features.multi_ends = (
        [[int(v) for v in row] for row in m.tolist()] for m in multi
    )
    counts = arrays["sentence_counts"].tolist()
    if len(arrays["token_sentences"]) != tokens or len(counts) != windows:
        raise ValueError("sentence maps disagree with the token or window counts")
    if len(arrays["window_sentences"]) != sum(counts) or len(arrays["sentence_targets"]) != sum(counts):
        raise ValueError("sentence targets disagree with the sentence counts")
    token_sentences = arrays["token_sentences"].tolist()
    sentence_ids, sentence_targets = arrays["window_sentences"].tolist(), arrays["sentence_targets"].tolist()
    position = sentence_position = 0
    for n, k in zip(lengths, counts, strict=True):
        features.token_sentences.append(token_sentences[position : position + n])
        features.window_sentences.append(sentence_ids[sentence_position : sentence_position + k])
        features.sentence_targets.append(sentence_targets[sentence_position : sentence_position + k])
        position += n
        sentence_position += k
    return features


class FeatureCache:
    def __init__(self, folder: Path, *, max_entries: int = 8, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.folder = folder
        self.max_entries = max_entries
        self.clock = clock

    def windows(
        self,
        examples: Sequence[PairExample],
        tokenizer: Any,
        *,
        max_length: int,
        doc_stride: int,
        describe: Mapping[str, Any] | None = None,
        build: Builder = tokenize_examples,
        variant: str = "",
    ) -> WindowFeatures:
        """The windows of ``examples``: from the cache when an intact entry exists, else built and stored.

        ``describe`` is recorded in the entry's JSON for people reading the cache folder.
        """
        key = features_key(
            examples,
            tokenizer_fingerprint(tokenizer),
            max_length=max_length,
            doc_stride=doc_stride,
            variant=variant,
        )
        cached = self._load(key)
        if cached is not None:
            logger.debug("tokenized windows from the cache: %s", self.folder / f"{key}.npz")
            return cached
        features = build(examples, tokenizer, max_length=max_length, doc_stride=doc_stride)
        self._store(key, features, dict(describe or {}, max_length=max_length, doc_stride=doc_stride))
        return features

    def _load(self, key: str) -> WindowFeatures | None:
        data_path, meta_path = self.folder / f"{key}.npz", self.folder / f"{key}.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            blob = data_path.read_bytes()
            actual = hashlib.sha256(blob).hexdigest()
            if actual != meta.get("sha256"):
                raise ValueError(
                    f"SHA-256 {actual[:12]}… does not match the recorded {str(meta.get('sha256'))[:12]}…"
                )
            with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
                features = from_arrays(arrays)
            if len(features) != meta.get("windows"):
                raise ValueError(f"{len(features)} windows, the entry records {meta.get('windows')}")
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
            logger.warning(
                "feature cache entry %s is unusable (%s): deleting it and tokenizing again", data_path, error
            )
            self._remove(key)
            return None
        with contextlib.suppress(OSError):  # a read-only cache still serves; only its LRU order suffers
            os.utime(meta_path)  # least recently used goes first
        return features

    def _store(self, key: str, features: WindowFeatures, describe: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **to_arrays(features))
        blob = buffer.getvalue()
        try:
            atomic_write_bytes(self.folder / f"{key}.npz", blob)
            atomic_write_json(
                self.folder / f"{key}.json",
                {
                    "format": FORMAT_VERSION,
                    "sha256": hashlib.sha256(blob).hexdigest(),
                    "bytes": len(blob),
                    "windows": len(features),
                    "created_at": self.clock(),
                    **describe,
                },
            )
        except OSError as error:
            logger.warning(
                "cannot write the feature cache in %s (%s); going on without it (set data.feature_cache_entries=0 "
                "to stop trying)",
                self.folder,
                error,
            )
            self._remove(key)
            return
        self._evict()

    def _evict(self) -> None:
        entries = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[self.max_entries :]:
            self._remove(stale.stem)

    def _remove(self, key: str) -> None:
        for suffix in (".json", ".npz"):  # JSON first: without it the entry is already gone
            try:
                (self.folder / f"{key}{suffix}").unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass  # nothing there to remove
            except OSError as error:
                logger.warning("cannot remove %s from the feature cache: %s", key + suffix, error)
