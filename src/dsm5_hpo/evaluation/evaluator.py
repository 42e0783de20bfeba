"""Criteria-matching and evidence-binding metrics over post-level (post, criterion) pairs.

Pure metric code: no I/O, no torch. The trainer merges window-level logits into one
:class:`PairPrediction` per pair and hands them here; trials (validation) and the final
test report use the same :func:`evaluate`, so the numbers are comparable.

Conventions, chosen so every value serializes to JSON and never poisons a study with NaN:

- every metric is a plain Python ``float`` (ints for counts), or ``None`` where undefined
  (AUROC with one class, has-answer F1 without gold evidence, a criterion without pairs);
- a ratio whose denominator is 0 (precision with no predicted positive, recall with no
  gold positive, F1 when both are 0) is 0.0, as ``sklearn``'s ``zero_division=0``;
- character-level P/R/F1, span precision and span F1 are 1.0 when nothing was to find and nothing
  was claimed;
- an empty span (``start == end``) is a null answer, predicted or gold.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The metric names live in the leaf vocabulary (config checks hpo.metric against them); named here too.
from dsm5_hpo.vocabulary import CRITERIA_METRICS as CRITERIA_METRICS
from dsm5_hpo.vocabulary import EVIDENCE_METRICS as EVIDENCE_METRICS
from dsm5_hpo.vocabulary import JOINT_METRICS as JOINT_METRICS
from dsm5_hpo.vocabulary import METRIC_NAMES as METRIC_NAMES

Span = tuple[int, int]
MetricDict = dict[str, float | None]
PerCriterion = dict[str, dict[str, float | int | None]]


@dataclass(frozen=True)
class PairPrediction:
    """Post-level prediction for one (post, criterion) pair, after window merging."""

    post_id: str
    criterion: str
    label: int  # gold: 1 = the post matches the criterion
    prob: float  # predicted P(match) in [0, 1]
    gold_spans: tuple[Span, ...]  # gold evidence char spans [start, end) in text; () = null answer
    pred_span: Span | None  # predicted evidence char span, None = null answer predicted
    text: str  # the post text the spans index into
    candidate_span: Span | None = None
    """The best-scoring span whatever the null score (pred_span is it or None)."""
    null_gap: float = math.inf
    """Null score minus the candidate span's score (inf: no candidate); the span is predicted when
    this is at most the null-score margin, so the margin can be tuned without decoding again."""


DEFAULT_METRIC = "joint_f1"
"""What a study maximizes unless hpo.metric says otherwise (see :func:`evaluate`)."""

# Keys of each per_criterion entry. "support" counts gold-positive pairs, "n" all pairs,
# "evidence_support" pairs with gold evidence (the denominator of has-answer token F1).
_CRITERIA_PER_CRITERION: tuple[str, ...] = (
    "criteria_accuracy",
    "criteria_precision",
    "criteria_recall",
    "criteria_f1",
    "criteria_auroc",
    "criteria_average_precision",
    "support",
    "n",
)
_EVIDENCE_PER_CRITERION: tuple[str, ...] = (*EVIDENCE_METRICS, "evidence_support")
PER_CRITERION_METRICS: tuple[str, ...] = (*_CRITERIA_PER_CRITERION, *_EVIDENCE_PER_CRITERION)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic; None with only one class.

    Tied scores get their average rank, which counts a positive/negative tie as half a
    correct ordering, exactly as the trapezoidal ROC area (and sklearn) does.
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise ValueError("scores must not be NaN")
    n_pos = int((y == 1).sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    # Average rank (1-based) of each distinct score: the last rank of its group minus
    # half the group's extra size. np.unique sorts, so no explicit argsort is needed.
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum_pos = float(avg_rank[inverse.reshape(-1)][y == 1].sum())
    u_statistic = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the precision-recall curve as a step function, sum over thresholds of
    (R_n - R_(n-1)) x P_n, the definition sklearn's ``average_precision_score`` uses (tied scores form
    one threshold); None without a positive."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    n_pos = int((y == 1).sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    # The last index of each group of tied scores: one threshold per distinct score.
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    true_positives = np.cumsum(y == 1)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lower case, drop punctuation and articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 after normalization; 1.0 if both normalize to empty, 0.0 if one does."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    n_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if n_same == 0:
        return 0.0
    precision = n_same / len(pred_tokens)
    recall = n_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 when the denominator is 0 (never NaN)."""
    return float(numerator / denominator) if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def _as_float(value: float | int | None) -> float | None:
    """A plain Python float (JSON-serializable, never a numpy scalar), or None."""
    return None if value is None else float(value)


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _check_span(span: Span, text_len: int) -> bool:
    start, end = span
    return (
        isinstance(start, int | np.integer)
        and isinstance(end, int | np.integer)
        and (0 <= start <= end <= text_len)
    )


def _validate(preds: Sequence[PairPrediction], criteria: Sequence[str]) -> None:
    """Raise ValueError for inputs no metric can be trusted on, naming the offending pair."""
    if not preds:
        raise ValueError("no predictions to evaluate: preds is empty")
    if not criteria or len(set(criteria)) != len(criteria):
        raise ValueError(f"criteria must be non-empty and without duplicates, got {list(criteria)}")
    known = set(criteria)
    seen: set[tuple[str, str]] = set()
    for p in preds:
        where = f"post_id={p.post_id!r}, criterion={p.criterion!r}"
        if p.criterion not in known:
            raise ValueError(f"{where}: criterion is not one of {list(criteria)}")
        if (p.post_id, p.criterion) in seen:
            # Window merging must yield one prediction per pair; a duplicate double-counts it.
            raise ValueError(f"{where}: duplicate pair (window merging should yield one per pair)")
        seen.add((p.post_id, p.criterion))
        if p.label not in (0, 1):
            raise ValueError(f"{where}: label must be 0 or 1, got {p.label!r}")
        if not (0.0 <= p.prob <= 1.0):  # also rejects NaN, which fails every comparison
            raise ValueError(f"{where}: prob must be in [0, 1], got {p.prob!r}")
        for span in (*p.gold_spans, *([p.pred_span] if p.pred_span is not None else [])):
            if len(span) != 2 or not _check_span(span, len(p.text)):
                raise ValueError(
                    f"{where}: span {span!r} must be integers 0 <= start <= end <= len(text)={len(p.text)}"
                )


def _group(preds: Sequence[PairPrediction], criteria: Sequence[str]) -> dict[str, list[PairPrediction]]:
    groups: dict[str, list[PairPrediction]] = {c: [] for c in criteria}
    for p in preds:
        groups[p.criterion].append(p)
    return groups


def _binary(preds: Sequence[PairPrediction], threshold: float) -> dict[str, float | int | None]:
    labels = [p.label for p in preds]
    predicted = [int(p.prob >= threshold) for p in preds]
    tp = sum(1 for y, yhat in zip(labels, predicted, strict=True) if y == 1 and yhat == 1)
    correct = sum(1 for y, yhat in zip(labels, predicted, strict=True) if y == yhat)
    precision = _ratio(tp, sum(predicted))
    recall = _ratio(tp, sum(labels))
    return {
        "criteria_accuracy": _ratio(correct, len(preds)),
        "criteria_precision": precision,
        "criteria_recall": recall,
        "criteria_f1": _f1(precision, recall),
        "criteria_auroc": auroc(labels, [p.prob for p in preds]),
        "criteria_average_precision": average_precision(labels, [p.prob for p in preds]),
        "support": int(sum(labels)),
        "n": len(preds),
    }


def criteria_metrics(
    preds: Sequence[PairPrediction], criteria: Sequence[str], threshold: float = 0.5
) -> tuple[MetricDict, PerCriterion]:
    """Binary match metrics (predicted match: prob >= threshold), flat and per criterion.

    Every criterion in ``criteria`` gets a per-criterion entry, in that order; one with no
    pairs has n = support = 0 and None for every rate, and is left out of the macro F1.
    """
    _validate(preds, criteria)
    if not (0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    per: PerCriterion = {}
    for criterion, group in _group(preds, criteria).items():
        per[criterion] = (
            _binary(group, threshold)
            if group
            else {k: 0 if k in ("support", "n") else None for k in _CRITERIA_PER_CRITERION}
        )
    pooled = _binary(preds, threshold)
    # Binary F1 pooled over pairs is the micro F1: both names are kept for readers of either.
    pooled["criteria_f1_micro"] = pooled["criteria_f1"]
    pooled["criteria_f1_macro"] = _mean([_as_float(v["criteria_f1"]) or 0.0 for v in per.values() if v["n"]])
    return {name: _as_float(pooled[name]) for name in CRITERIA_METRICS}, per


def _answer_interval(span: Span | None) -> Span | None:
    """The span as an interval, or None for a null answer (None or empty span)."""
    return None if span is None or span[0] >= span[1] else (int(span[0]), int(span[1]))


def _merged_gold(gold_spans: Sequence[Span]) -> list[Span]:
    """Non-empty gold spans merged into disjoint intervals, so overlaps are not counted twice."""
    merged: list[Span] = []
    for start, end in sorted(s for s in map(_answer_interval, gold_spans) if s is not None):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _evidence(preds: Sequence[PairPrediction]) -> dict[str, float | int | None]:
    em: list[float] = []
    f1: list[float] = []
    has_answer_f1: list[float] = []
    has_answer_em: list[float] = []
    predicted_f1: list[float] = []  # token F1 of each predicted span (0 where the pair has no evidence)
    answered_f1: list[float] = []  # token F1 of each pair with gold evidence or a predicted span
    null_correct = overlap = n_pred_chars = n_gold_chars = 0
    for p in preds:
        pred = _answer_interval(p.pred_span)
        gold = _merged_gold(p.gold_spans)
        pred_text = "" if pred is None else p.text[pred[0] : pred[1]]
        # Score against each original gold span (not the merged ones): annotators' spans
        # are the answers, merging is only for counting characters once.
        gold_texts = [p.text[s[0] : s[1]] for s in map(_answer_interval, p.gold_spans) if s] or [""]
        em.append(max(float(normalize_answer(pred_text) == normalize_answer(g)) for g in gold_texts))
        f1.append(max(token_f1(pred_text, g) for g in gold_texts))
        if gold:
            has_answer_f1.append(f1[-1])
            has_answer_em.append(em[-1])
        if pred is not None:
            predicted_f1.append(f1[-1] if gold else 0.0)
        if gold or pred is not None:
            answered_f1.append(f1[-1] if gold and pred is not None else 0.0)
        null_correct += (pred is not None) == bool(gold)
        n_gold_chars += sum(e - s for s, e in gold)
        if pred is not None:
            n_pred_chars += pred[1] - pred[0]
            overlap += sum(max(0, min(pred[1], e) - max(pred[0], s)) for s, e in gold)
    if n_pred_chars == 0 and n_gold_chars == 0:
        # Nothing to find and nothing claimed: the perfect answer, not a zero-division.
        char_p = char_r = char_f1 = 1.0
    else:
        char_p, char_r = _ratio(overlap, n_pred_chars), _ratio(overlap, n_gold_chars)
        char_f1 = _f1(char_p, char_r)
    return {
        "evidence_exact_match": _mean(em),
        "evidence_token_f1": _mean(f1),
        "evidence_char_precision": char_p,
        "evidence_char_recall": char_r,
        "evidence_char_f1": char_f1,
        "evidence_null_accuracy": _ratio(null_correct, len(preds)),
        "evidence_has_answer_token_f1": _mean(has_answer_f1),
        "evidence_has_answer_exact_match": _mean(has_answer_em),
        # Nothing claimed: right when nothing was to find, 0 (sklearn's zero_division=0) otherwise.
        "evidence_span_precision": _mean(predicted_f1) if predicted_f1 else float(not has_answer_f1),
        # Nothing to find and nothing claimed: right, as the character-level figures say.
        "evidence_span_f1": _mean(answered_f1) if answered_f1 else 1.0,
        "evidence_support": len(has_answer_f1),
    }


def evidence_metrics(
    preds: Sequence[PairPrediction], criteria: Sequence[str]
) -> tuple[MetricDict, PerCriterion]:
    """SQuAD-2-style evidence metrics over all pairs (null answer included), flat and per criterion.

    Every criterion in ``criteria`` gets an entry, in that order; one with no pairs has
    evidence_support = 0 and None for every metric.
    """
    _validate(preds, criteria)
    per: PerCriterion = {}
    for criterion, group in _group(preds, criteria).items():
        per[criterion] = (
            _evidence(group)
            if group
            else {k: 0 if k == "evidence_support" else None for k in _EVIDENCE_PER_CRITERION}
        )
    pooled = _evidence(preds)
    return {name: _as_float(pooled[name]) for name in EVIDENCE_METRICS}, per


@dataclass(frozen=True)
class EvaluationResult:
    """All metrics of one evaluation: flat (every name in METRIC_NAMES) and per criterion."""

    metrics: dict[str, float | None]
    per_criterion: dict[str, dict[str, float | int | None]]
    n_pairs: int


def evaluate(
    preds: Sequence[PairPrediction], criteria: Sequence[str], threshold: float = 0.5
) -> EvaluationResult:
    """Every criteria and evidence metric, and the two joint scores an HPO study may maximize.

    joint_f1 (the default) = mean(criteria_f1_macro, evidence_span_f1): both tasks weigh equally,
    macro F1 keeps rare criteria (e.g. suicidal thoughts) from being drowned by common ones, and the
    evidence half is the token F1 over the pairs that have gold evidence or a predicted span, so that
    predicting no evidence anywhere scores 0 on it (and so does a span on every pair, nearly).
    joint_score = mean(criteria_f1_macro, evidence_token_f1) is the SQuAD 2 flavour kept for
    comparison: about 80 % of pairs have no evidence, and "no evidence anywhere" scores ~0.8 on it.
    """
    crit_flat, crit_per = criteria_metrics(preds, criteria, threshold)
    evid_flat, evid_per = evidence_metrics(preds, criteria)
    metrics: MetricDict = {**crit_flat, **evid_flat}
    # Both terms are defined whenever preds is non-empty (which _validate guarantees).
    macro, token, span = (
        metrics["criteria_f1_macro"],
        metrics["evidence_token_f1"],
        metrics["evidence_span_f1"],
    )
    metrics["joint_score"] = None if macro is None or token is None else float((macro + token) / 2)
    metrics["joint_f1"] = None if macro is None or span is None else float((macro + span) / 2)
    per = {c: {**crit_per[c], **evid_per[c]} for c in criteria}
    return EvaluationResult(metrics=metrics, per_criterion=per, n_pairs=len(preds))
