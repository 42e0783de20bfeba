"""dsm5_hpo.evaluation.thresholds: the match threshold and null margin chosen on validation predictions."""

from __future__ import annotations

import math

import pytest

from dsm5_hpo.evaluation.decoding import regated
from dsm5_hpo.evaluation.evaluator import PairPrediction, evaluate
from dsm5_hpo.evaluation.thresholds import (
    MARGIN_KEY,
    THRESHOLD_KEY,
    margin_candidates,
    tune_thresholds,
)

TEXT = "I feel empty. I sleep all day. Nothing else."
EMPTY, SLEEP = (0, 13), (14, 30)


def pair(
    i: int, criterion: str, label: int, prob: float, gold: tuple, candidate: tuple | None, gap: float
) -> PairPrediction:
    return PairPrediction(
        post_id=f"p{i}",
        criterion=criterion,
        label=label,
        prob=prob,
        gold_spans=gold,
        pred_span=None,
        text=TEXT,
        candidate_span=candidate,
        null_gap=gap,
    )


# Positives all have probabilities between 0.2 and 0.3, negatives below 0.15: a ranking that a
# fixed 0.5 threshold turns into F1 = 0. Evidence: the two real spans have small gaps, the wrong
# candidates of the pairs without evidence large ones.
PREDICTIONS = [
    pair(0, "A", 1, 0.25, (EMPTY,), EMPTY, -1.0),
    pair(1, "A", 1, 0.22, (SLEEP,), SLEEP, 0.5),
    pair(2, "A", 0, 0.10, (), SLEEP, 4.0),
    pair(3, "A", 0, 0.05, (), EMPTY, 6.0),
    pair(4, "B", 1, 0.28, (EMPTY,), EMPTY, 0.2),
    pair(5, "B", 0, 0.12, (), None, math.inf),
]


def with_margin(predictions: list[PairPrediction], margin: float) -> list[PairPrediction]:
    return regated(predictions, gating="null_score", threshold=0.5, margin=margin)


def test_with_margin_decides_spans_as_decoding_would() -> None:
    decided = with_margin(PREDICTIONS, 1.0)
    assert [p.pred_span for p in decided] == [EMPTY, SLEEP, None, None, EMPTY, None]
    assert [p.pred_span for p in with_margin(PREDICTIONS, 100.0)] == [EMPTY, SLEEP, SLEEP, EMPTY, EMPTY, None]


def test_criteria_gating_gives_evidence_exactly_where_the_pair_matches() -> None:
    decided = regated(PREDICTIONS, gating="criteria", threshold=0.2, margin=-100.0)  # margin plays no part
    assert [p.pred_span for p in decided] == [EMPTY, SLEEP, None, None, EMPTY, None]


def test_criteria_gating_tunes_one_threshold_for_both_tasks() -> None:
    tuned = tune_thresholds(PREDICTIONS, ["A", "B"], "joint_f1", threshold=0.5, margin=0.0, gating="criteria")
    assert 0.12 < tuned.threshold <= 0.22 and tuned.margin == 0.0
    assert tuned.result.metrics["criteria_f1_macro"] == 1.0
    assert tuned.result.metrics["evidence_span_f1"] == 1.0
    assert tuned.result.metrics["joint_f1"] == 1.0


def test_the_silence_rewarding_metric_tunes_to_no_evidence_and_joint_f1_does_not() -> None:
    """Two right spans among many pairs without evidence, whose wrong candidates have smaller gaps:
    any margin that gives the right spans also gives the wrong ones. joint_score (SQuAD 2 token F1
    over all pairs) prefers silence; joint_f1 gives the spans."""
    crowd = [pair(10 + i, "A", 0, 0.05, (), SLEEP, 0.0) for i in range(8)]
    predictions = [
        pair(0, "A", 1, 0.9, (EMPTY,), EMPTY, 0.5),
        pair(1, "A", 1, 0.9, (EMPTY,), EMPTY, 0.5),
        *crowd,
    ]
    old = tune_thresholds(predictions, ["A"], "joint_score", threshold=0.5, margin=0.0)
    silent = regated(predictions, gating="null_score", threshold=0.5, margin=old.margin)
    assert all(p.pred_span is None for p in silent)
    assert old.result.metrics["evidence_span_f1"] == 0.0
    new = tune_thresholds(predictions, ["A"], "joint_f1", threshold=0.5, margin=0.0)
    assert new.result.metrics["evidence_has_answer_token_f1"] == 1.0
    assert new.result.metrics["evidence_span_f1"] == pytest.approx(0.2)  # 2 right of 10 given


def test_tuning_finds_the_threshold_and_margin_that_separate_the_classes() -> None:
    fixed = evaluate(with_margin(PREDICTIONS, 0.0), ["A", "B"], threshold=0.5)
    assert fixed.metrics["criteria_f1_macro"] == 0.0
    tuned = tune_thresholds(PREDICTIONS, ["A", "B"], "joint_score", threshold=0.5, margin=0.0)
    assert 0.12 < tuned.threshold <= 0.22
    assert 0.5 <= tuned.margin < 4.0
    assert tuned.result.metrics["criteria_f1_macro"] == 1.0
    assert tuned.result.metrics["evidence_exact_match"] == 1.0
    assert tuned.result.metrics["joint_score"] == 1.0
    metrics = tuned.metrics()
    assert metrics[THRESHOLD_KEY] == tuned.threshold and metrics[MARGIN_KEY] == tuned.margin


def test_ties_keep_the_configured_values() -> None:
    # Every threshold from 0.3 to 0.95 gives the same criteria F1 on these: the configured 0.5 stays.
    separable = [pair(0, "A", 1, 0.99, (), None, math.inf), pair(1, "A", 0, 0.01, (), None, math.inf)]
    tuned = tune_thresholds(separable, ["A"], "joint_score", threshold=0.5, margin=0.0)
    assert tuned.threshold == 0.5 and tuned.margin == 0.0


def test_margin_candidates_span_every_gap_and_include_the_configured_margin() -> None:
    candidates = margin_candidates(PREDICTIONS, 0.3)
    finite = [p.null_gap for p in PREDICTIONS if math.isfinite(p.null_gap)]
    assert 0.3 in candidates
    assert min(candidates) < min(finite) and max(candidates) == pytest.approx(max(finite))
    assert margin_candidates([pair(0, "A", 0, 0.1, (), None, math.inf)], 0.0) == [0.0]
