"""Invariants of dsm5_hpo.evaluation.evaluator over random post-level predictions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm5_hpo.evaluation.evaluator import PairPrediction, auroc, evaluate
from dsm5_hpo.vocabulary import METRIC_NAMES

CRITERIA = ("A", "B", "C")
# Few letters (enough to spell "a" and "the"), spaces and punctuation: normalization has work to do.
TEXTS = st.text(alphabet="abcdet .,!", max_size=30)


@st.composite
def spans(draw: st.DrawFn, text_len: int) -> tuple[int, int]:
    start = draw(st.integers(0, text_len))
    return start, draw(st.integers(start, text_len))


@st.composite
def pair_predictions(draw: st.DrawFn, post_id: str, criterion: str) -> PairPrediction:
    text = draw(TEXTS)
    gold = tuple(draw(st.lists(spans(len(text)), max_size=3)))
    pred = draw(st.none() | spans(len(text)))
    label = draw(st.integers(0, 1))
    prob = draw(st.floats(0.0, 1.0))
    return PairPrediction(post_id, criterion, label, prob, gold, pred, text)


@st.composite
def prediction_sets(draw: st.DrawFn) -> list[PairPrediction]:
    # (post, criterion) keys are unique by construction: window merging yields one per pair.
    key = st.tuples(st.integers(0, 9), st.sampled_from(CRITERIA))
    keys = draw(st.lists(key, min_size=1, max_size=25, unique=True))
    return [draw(pair_predictions(f"post{post}", criterion)) for post, criterion in keys]


@st.composite
def perfect_prediction_sets(draw: st.DrawFn) -> list[PairPrediction]:
    """Right label with certainty, and the one gold span (or null) predicted exactly.

    Every criterion present gets a positive pair: with none, precision and recall are
    0/0, which the evaluator reports as 0.0, not a perfect score.
    """
    preds = []
    criteria = draw(st.lists(st.sampled_from(CRITERIA), min_size=1, unique=True))
    for criterion in criteria:
        labels = [1, *draw(st.lists(st.integers(0, 1), max_size=6))]
        for i, label in enumerate(labels):
            text = draw(TEXTS)
            gold = draw(st.none() | spans(len(text)))
            gold_spans = () if gold is None else (gold,)
            preds.append(PairPrediction(f"post{i}", criterion, label, float(label), gold_spans, gold, text))
    return preds


@given(prediction_sets(), st.floats(0.0, 1.0))
def test_metrics_are_in_unit_interval_or_none(preds: list[PairPrediction], threshold: float) -> None:
    result = evaluate(preds, CRITERIA, threshold)
    assert tuple(result.metrics) == METRIC_NAMES
    values = [*result.metrics.values()]
    for entry in result.per_criterion.values():
        values += [v for k, v in entry.items() if k not in ("support", "n", "evidence_support")]
    for value in values:
        assert value is None or (type(value) is float and 0.0 <= value <= 1.0), value
    # The optimization target is always defined, so a trial always has a score.
    assert result.metrics["joint_score"] is not None


@given(perfect_prediction_sets())
def test_perfect_predictions_score_one_everywhere(preds: list[PairPrediction]) -> None:
    result = evaluate(preds, CRITERIA)
    for name, value in result.metrics.items():
        # None only where undefined: AUROC with one class, has-answer F1 without gold evidence.
        assert value is None or value == pytest.approx(1.0), name
    assert result.metrics["joint_score"] == pytest.approx(1.0)
    if len({p.label for p in preds}) == 2:
        assert result.metrics["criteria_auroc"] == pytest.approx(1.0)
    if any(start < end for p in preds for start, end in p.gold_spans):
        assert result.metrics["evidence_has_answer_token_f1"] == pytest.approx(1.0)


FINITE = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(st.tuples(st.integers(0, 1), FINITE), max_size=40))
def test_auroc_of_negated_scores_is_complement(rows: list[tuple[int, float]]) -> None:
    labels = [label for label, _ in rows]
    scores = [score for _, score in rows]
    forward, backward = auroc(labels, scores), auroc(labels, [-s for s in scores])
    if len(set(labels)) < 2:
        assert forward is None
        assert backward is None
    else:
        assert forward is not None
        assert backward is not None
        assert forward == pytest.approx(1.0 - backward, abs=1e-12)


@settings(max_examples=50)
@given(st.data())
def test_order_of_predictions_does_not_matter(data: st.DataObject) -> None:
    preds = data.draw(prediction_sets())
    shuffled = data.draw(st.permutations(preds))
    expected, actual = evaluate(preds, CRITERIA), evaluate(shuffled, CRITERIA)
    assert actual.n_pairs == expected.n_pairs
    assert _close(actual.metrics, expected.metrics)
    assert actual.per_criterion.keys() == expected.per_criterion.keys()
    for criterion, entry in expected.per_criterion.items():
        assert _close(actual.per_criterion[criterion], entry)


def _close(a: dict[str, float | int | None], b: dict[str, float | int | None]) -> bool:
    """Same keys, same None-ness, values equal up to summation order (the last bit, never more)."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if x is None or y is None:
            if x is not y:
                return False
        elif not math.isclose(x, y, abs_tol=1e-12):
            return False
    return True
