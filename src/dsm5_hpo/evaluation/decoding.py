"""Merge window-level outputs back into one prediction per (post, criterion) pair.

Pure: numpy arrays in, :class:`PairPrediction` out. A long post's pair has several windows:
its match probability is the most confident window's (multiple-instance: the pair matches when one
window holds the evidence), its candidate evidence the best-scoring span of any window (or, with
a sentence-level evidence head, the best-scoring sentence). Whether the candidate is given or
"no evidence" is predicted is the gating (train.evidence_gating):

- ``criteria``: the evidence is given exactly when the criteria head says the pair matches (its
  probability at or above the match threshold), at the evidence head's best span: one decision
  for both tasks, made by the head trained on it;
- ``null_score``: the SQuAD 2 rule, the span is given unless the lowest null score beats it by
  more than the margin (for sentences: unless the best sentence's logit is below -margin).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsm5_hpo.data.features import WindowFeatures
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.data.sentences import split_sentences
from dsm5_hpo.evaluation.evaluator import PairPrediction

_TOP_K = 20  # candidate start and end tokens per window; SQuAD's usual n-best size
GATINGS: tuple[str, ...] = ("criteria", "null_score")


def gated_span(
    prediction: PairPrediction, *, gating: str, threshold: float, margin: float
) -> tuple[int, int] | None:
    """The evidence ``prediction`` gives under ``gating`` (see the module docstring)."""
    if gating not in GATINGS:
        raise ValueError(f"unknown evidence gating {gating!r}; one of {', '.join(GATINGS)}")
    candidate = prediction.candidate_span
    if candidate is None:
        return None
    if gating == "criteria":
        return candidate if prediction.prob >= threshold else None
    return candidate if prediction.null_gap <= margin else None


def regated(
    predictions: Sequence[PairPrediction], *, gating: str, threshold: float, margin: float
) -> list[PairPrediction]:
    """The predictions with their evidence decided again at ``threshold`` / ``margin``."""
    return [
        dataclasses.replace(p, pred_span=gated_span(p, gating=gating, threshold=threshold, margin=margin))
        for p in predictions
    ]


@dataclass
class WindowOutputs:
    """Raw model outputs of every window of a split, in feature order (logits as float32)."""

    criteria_logits: np.ndarray  # (windows,); multi_label: (windows, criteria)
    start_logits: list[np.ndarray]  # per window: (tokens,); multi_label: (tokens, criteria)
    end_logits: list[np.ndarray]
    sentence_logits: list[np.ndarray] | None = None
    """heads.evidence_unit=sentence: per window, (sentences in it, outputs) evidence logits, in the
    order of features.window_sentences (the span lists are then empty)."""


def _best_span(
    start: np.ndarray, end: np.ndarray, offsets: Sequence[tuple[int, int] | None], max_answer_tokens: int
) -> tuple[float, tuple[int, int] | None]:
    context = np.array([i for i, o in enumerate(offsets) if o is not None], dtype=np.int64)
    if context.size == 0:
        return -np.inf, None
    k = min(_TOP_K, context.size)
    starts = context[np.argsort(-start[context], kind="stable")[:k]]
    ends = context[np.argsort(-end[context], kind="stable")[:k]]
    best_score, best = -np.inf, None
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_answer_tokens:
                continue
            score = float(start[s] + end[e])
            if score > best_score:
                first, last = offsets[s], offsets[e]
                assert first is not None and last is not None
                best_score, best = score, (first[0], last[1])
    return best_score, best


def per_pair_windows(
    features: WindowFeatures, outputs: WindowOutputs
) -> tuple[WindowFeatures, WindowOutputs]:
    """multi_label outputs ((windows, criteria) logits, (tokens, criteria) span logits) as one virtual
    window per (window, criterion), so that the binary_pairs decoder (and its metrics) apply unchanged;
    binary_pairs outputs are returned as they are."""
    if outputs.criteria_logits.ndim == 1:
        return features, outputs
    windows, criteria = outputs.criteria_logits.shape
    virtual = WindowFeatures([], [], [], [], [], [], [], pad_token_id=features.pad_token_id)
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    sentences: list[np.ndarray] | None = None if outputs.sentence_logits is None else []
    for window in range(windows):
        for k in range(criteria):
            virtual.example_index.append(features.example_index[window] + k)
            virtual.context_offsets.append(features.context_offsets[window])
            if sentences is not None:
                assert outputs.sentence_logits is not None
                virtual.window_sentences.append(features.window_sentences[window])
                sentences.append(outputs.sentence_logits[window][:, k : k + 1])
            else:
                starts.append(outputs.start_logits[window][:, k])
                ends.append(outputs.end_logits[window][:, k])
    return virtual, WindowOutputs(outputs.criteria_logits.reshape(-1), starts, ends, sentences)


def _best_sentence(
    logits: np.ndarray, sentence_ids: Sequence[int], spans: Sequence[tuple[int, int]]
) -> tuple[float, tuple[int, int] | None]:
    if not len(sentence_ids):
        return -np.inf, None
    scores = logits.reshape(-1)
    best = int(np.argmax(scores))
    return float(scores[best]), spans[sentence_ids[best]]


def decode_predictions(
    examples: Sequence[PairExample],
    features: WindowFeatures,
    outputs: WindowOutputs,
    *,
    max_answer_tokens: int,
    null_score_margin: float,
    gating: str = "null_score",
    match_threshold: float = 0.5,
) -> list[PairPrediction]:
    """One :class:`PairPrediction` per example, in example order (multi_label outputs too), its
    evidence decided by ``gating`` at ``match_threshold`` or ``null_score_margin``."""
    features, outputs = per_pair_windows(features, outputs)
    by_sentence = outputs.sentence_logits is not None
    sentence_spans: dict[str, list[tuple[int, int]]] = {}
    n = len(examples)
    prob = np.zeros(n)
    best_score = np.full(n, -np.inf)
    best_span: list[tuple[int, int] | None] = [None] * n
    null_score = np.full(n, np.inf)
    seen = np.zeros(n, dtype=bool)
    # sigmoid via tanh: no overflow warning for the huge logits of a diverged model
    probabilities = 0.5 * (1.0 + np.tanh(0.5 * outputs.criteria_logits.astype(np.float64)))
    for window, pair in enumerate(features.example_index):
        seen[pair] = True
        prob[pair] = max(prob[pair], probabilities[window])
        if by_sentence:
            assert outputs.sentence_logits is not None
            text = examples[pair].text
            if text not in sentence_spans:
                sentence_spans[text] = split_sentences(text)
            null_score[pair] = 0.0  # a sentence is evidence at logit > 0; the margin moves that point
            score, span = _best_sentence(
                outputs.sentence_logits[window], features.window_sentences[window], sentence_spans[text]
            )
        else:
            start, end = outputs.start_logits[window], outputs.end_logits[window]
            null_score[pair] = min(null_score[pair], float(start[0] + end[0]))
            score, span = _best_span(start, end, features.context_offsets[window], max_answer_tokens)
        if span is not None and score > best_score[pair]:
            best_score[pair], best_span[pair] = score, span
    if not seen.all():
        missing = examples[int(np.argmin(seen))]
        raise ValueError(
            f"no window for pair {missing.post_id}/{missing.criterion}: features and examples differ"
        )

    predictions = []
    for i, example in enumerate(examples):
        candidate = best_span[i]
        gap = float(null_score[i] - best_score[i]) if candidate is not None else np.inf
        predictions.append(
            PairPrediction(
                post_id=example.post_id,
                criterion=example.criterion,
                label=example.label,
                prob=float(np.clip(prob[i], 0.0, 1.0)),
                gold_spans=example.spans,
                pred_span=None,
                text=example.text,
                candidate_span=candidate,
                null_gap=gap,
            )
        )
    return regated(predictions, gating=gating, threshold=match_threshold, margin=null_score_margin)
