"""Decision thresholds tuned on validation: the match probability threshold and the null-answer margin.

A model that ranks well can still score 0 F1 at a fixed 0.5 threshold (a few hundred steps on a
rare class leave every probability below it), and the SQuAD 2 null-answer margin depends on
how the two heads' scores came out. Both are chosen on the validation predictions after each
epoch and travel with that epoch's metrics; the test split is evaluated at the values chosen on
validation, never tuned on itself.

Pure: predictions in, thresholds and metrics out. Under the null-score gating the match
threshold only moves the criteria metrics and the margin only the evidence metrics, so tuning one
then the other finds the best pair. Under the criteria gating the threshold decides both the
match and whether evidence is given (the margin plays no part): it is tuned for the whole metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsm5_hpo.evaluation.decoding import regated
from dsm5_hpo.evaluation.evaluator import EvaluationResult, PairPrediction, evaluate

THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""Match thresholds tried: 0.05, 0.10, ..., 0.95 (and the configured one)."""
MARGIN_QUANTILES = 21
"""Null-score margins tried: this many quantiles of the predictions' null gaps (and the configured one)."""

THRESHOLD_KEY, MARGIN_KEY = "match_threshold", "null_score_margin"
"""Names under which the chosen values are kept beside an epoch's validation metrics."""


@dataclass(frozen=True)
class Tuned:
    threshold: float
    margin: float
    result: EvaluationResult

    def metrics(self) -> dict[str, float | None]:
        """The validation metrics at the chosen values, with the values themselves."""
        return {**self.result.metrics, THRESHOLD_KEY: self.threshold, MARGIN_KEY: self.margin}


def margin_candidates(predictions: Sequence[PairPrediction], configured: float) -> list[float]:
    gaps = np.array([p.null_gap for p in predictions if math.isfinite(p.null_gap)])
    candidates = {float(configured)}
    if gaps.size:
        candidates.update(float(q) for q in np.quantile(gaps, np.linspace(0.0, 1.0, MARGIN_QUANTILES)))
        candidates.add(float(gaps.min()) - 1.0)  # below every gap: "no evidence" everywhere
    return sorted(candidates)


def _best(scored: list[tuple[float, float | None]], configured: float) -> float:
    """The value with the highest score; ties go to the one closest to ``configured``, then the lower."""

    def key(item: tuple[float, float | None]) -> tuple[float, float, float]:
        value, score = item
        return (
            -(score if score is not None and math.isfinite(score) else -math.inf),
            abs(value - configured),
            value,
        )

    return min(scored, key=key)[0]


def tune_thresholds(
    predictions: Sequence[PairPrediction],
    criteria: Sequence[str],
    metric: str,
    *,
    threshold: float,
    margin: float,
    gating: str = "null_score",
) -> Tuned:
    """The match threshold, then (null-score gating) the null-score margin, that maximize ``metric``
    on ``predictions``.

    ``threshold`` and ``margin`` are the configured values: always candidates, and preferred on ties.
    """

    def score(t: float, m: float) -> float | None:
        decided = regated(predictions, gating=gating, threshold=t, margin=m)
        return evaluate(decided, criteria, threshold=t).metrics.get(metric)

    thresholds = sorted({*THRESHOLD_GRID, threshold})
    best_threshold = _best([(t, score(t, margin)) for t in thresholds], threshold)
    best_margin = margin
    if gating == "null_score":
        margins = margin_candidates(predictions, margin)
        best_margin = _best([(m, score(best_threshold, m)) for m in margins], margin)
    decided = regated(predictions, gating=gating, threshold=best_threshold, margin=best_margin)
    result = evaluate(decided, criteria, threshold=best_threshold)
    return Tuned(best_threshold, best_margin, result)
