"""Hand-computed cases for every metric in dsm5_hpo.evaluation.evaluator."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import pytest

from dsm5_hpo.evaluation.evaluator import (
    CRITERIA_METRICS,
    EVIDENCE_METRICS,
    METRIC_NAMES,
    PER_CRITERION_METRICS,
    EvaluationResult,
    PairPrediction,
    auroc,
    average_precision,
    criteria_metrics,
    evaluate,
    evidence_metrics,
    normalize_answer,
    token_f1,
)

TEXT = "I cannot sleep at night and I am tired."
CANNOT_SLEEP = (2, 14)  # "cannot sleep"
SLEEP_AT_NIGHT = (9, 23)  # "sleep at night"
CANNOT = (2, 8)  # "cannot"


def pair(
    post_id: str = "p0",
    criterion: str = "A",
    label: int = 0,
    prob: float = 0.0,
    gold_spans: tuple[tuple[int, int], ...] = (),
    pred_span: tuple[int, int] | None = None,
    text: str = TEXT,
) -> PairPrediction:
    return PairPrediction(post_id, criterion, label, prob, gold_spans, pred_span, text)


def criteria_preds() -> list[PairPrediction]:
    """A: tp, fn, fp, tn (AUROC 3/4). B: perfect. Pooled: tp=2 fp=1 fn=1 tn=2."""
    return [
        pair("a1", "A", 1, 0.9),
        pair("a2", "A", 1, 0.4),
        pair("a3", "A", 0, 0.6),
        pair("a4", "A", 0, 0.1),
        pair("b1", "B", 1, 0.8),
        pair("b2", "B", 0, 0.2),
    ]


def evidence_preds() -> list[PairPrediction]:
    """Five pairs covering exact hit, correct null, missed answer, false answer, partial overlap."""
    return [
        pair("e1", gold_spans=(CANNOT_SLEEP,), pred_span=CANNOT_SLEEP),  # EM 1, F1 1, 12/12/12 chars
        pair("e2"),  # null vs null: EM 1, F1 1, no chars
        pair("e3", gold_spans=(CANNOT_SLEEP,), pred_span=None),  # EM 0, F1 0, 12 gold chars
        pair("e4", pred_span=CANNOT),  # EM 0, F1 0, 6 predicted chars
        # tokens {sleep, at, night} vs {cannot, sleep}: P 1/3, R 1/2, F1 0.4; 14 pred, 5 overlap
        pair("e5", gold_spans=(CANNOT_SLEEP,), pred_span=SLEEP_AT_NIGHT),
    ]


# --- auroc ---------------------------------------------------------------------------------


def test_auroc_counts_correctly_ordered_pairs() -> None:
    assert auroc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == pytest.approx(0.75)
    assert auroc([1, 0], [0.9, 0.1]) == 1.0
    assert auroc([1, 0], [0.1, 0.9]) == 0.0


def test_auroc_counts_ties_as_half() -> None:
    # pos {.5, .8} vs neg {.5, .2}: (.5,.5) tie = 0.5, the other three pairs ordered -> 3.5 / 4
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.8]) == pytest.approx(0.875)
    assert auroc([0, 1, 1, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)


def test_auroc_is_none_with_one_class() -> None:
    assert auroc([1, 1], [0.2, 0.9]) is None
    assert auroc([0], [0.2]) is None
    assert auroc([], []) is None


def test_auroc_returns_plain_float() -> None:
    assert type(auroc([1, 0], [0.9, 0.1])) is float


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 0], [0.5], "equal length"),
        ([1, 2], [0.5, 0.4], "labels must be 0 or 1"),
        ([1, 0], [0.5, math.nan], "NaN"),
    ],
)
def test_auroc_rejects_bad_input(labels: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auroc(labels, scores)


def test_auroc_matches_sklearn_with_ties() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 60)
        labels = [rng.randint(0, 1) for _ in range(n)]
        if len(set(labels)) < 2:
            labels[0], labels[1] = 0, 1
        scores = [round(rng.random(), 1) for _ in range(n)]  # rounding forces many ties
        assert auroc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))


# --- normalize_answer / token_f1 ----------------------------------------------------------


def test_normalize_answer_follows_squad() -> None:
    assert normalize_answer("The Cat, sat!  on a\tmat.") == "cat sat on mat"
    assert normalize_answer("An apple") == "apple"
    assert normalize_answer("theme") == "theme"  # articles only as whole words
    assert normalize_answer("  ...  ") == ""


def test_token_f1_partial_overlap() -> None:
    assert token_f1("sleep at night", "cannot sleep") == pytest.approx(0.4)
    assert token_f1("cannot sleep", "I cannot sleep") == pytest.approx(0.8)  # P 1, R 2/3


def test_token_f1_counts_repeated_tokens_once_each() -> None:
    # common = min counts: {"sad": 1}; P 1/2, R 1 -> 2/3
    assert token_f1("sad sad", "sad") == pytest.approx(2 / 3)


def test_token_f1_empty_cases() -> None:
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # "the" normalizes to empty
    assert token_f1("", "tired") == 0.0
    assert token_f1("tired", "") == 0.0
    assert token_f1("tired", "sleepy") == 0.0


# --- criteria_metrics ------------------------------------------------------------------------


def test_criteria_metrics_flat() -> None:
    flat, _ = criteria_metrics(criteria_preds(), ["A", "B"])
    assert tuple(flat) == CRITERIA_METRICS
    assert flat["criteria_accuracy"] == pytest.approx(4 / 6)
    assert flat["criteria_precision"] == pytest.approx(2 / 3)
    assert flat["criteria_recall"] == pytest.approx(2 / 3)
    assert flat["criteria_f1"] == pytest.approx(2 / 3)
    assert flat["criteria_f1_micro"] == flat["criteria_f1"]
    assert flat["criteria_f1_macro"] == pytest.approx((0.5 + 1.0) / 2)
    # pos {.9,.4,.8} vs neg {.6,.1,.2}: only .4 < .6 is misordered -> 8/9
    assert flat["criteria_auroc"] == pytest.approx(8 / 9)
    # ranked .9+ .8+ .6- .4+ .2- .1-: recall steps of 1/3 at precisions 1, 1, 3/4
    assert flat["criteria_average_precision"] == pytest.approx((1 + 1 + 3 / 4) / 3)


def test_average_precision_matches_sklearn_on_random_scores_with_ties() -> None:
    from sklearn.metrics import average_precision_score

    rng = random.Random(3)
    for _ in range(50):
        labels = [rng.randint(0, 1) for _ in range(rng.randint(2, 30))]
        if not any(labels):
            labels[0] = 1
        scores = [rng.choice([0.1, 0.2, 0.5, 0.7, rng.random()]) for _ in labels]
        assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))
    assert average_precision([0, 0], [0.3, 0.4]) is None


def test_criteria_metrics_per_criterion() -> None:
    _, per = criteria_metrics(criteria_preds(), ["A", "B"])
    assert list(per) == ["A", "B"]
    assert per["A"] == pytest.approx(
        {
            "criteria_accuracy": 0.5,
            "criteria_precision": 0.5,
            "criteria_recall": 0.5,
            "criteria_f1": 0.5,
            "criteria_auroc": 0.75,
            "criteria_average_precision": 0.5 + 0.5 * 2 / 3,  # .9+ .6- .4+ .1-
            "support": 2,
            "n": 4,
        }
    )
    assert per["B"]["criteria_f1"] == 1.0
    assert per["B"]["criteria_auroc"] == 1.0
    assert (per["B"]["support"], per["B"]["n"]) == (1, 2)


def test_threshold_is_inclusive_and_configurable() -> None:
    preds = [pair("p1", label=1, prob=0.5), pair("p2", label=0, prob=0.3)]
    assert criteria_metrics(preds, ["A"])[0]["criteria_accuracy"] == 1.0  # 0.5 >= 0.5
    flat, _ = criteria_metrics(preds, ["A"], threshold=0.2)  # both predicted positive
    assert flat["criteria_precision"] == 0.5
    assert flat["criteria_recall"] == 1.0


def test_zero_division_gives_zero_not_nan() -> None:
    # No gold positive and no predicted positive: P, R and F1 are 0/0 -> 0.0 by convention.
    preds = [pair("p1", label=0, prob=0.1), pair("p2", label=0, prob=0.2)]
    flat, per = criteria_metrics(preds, ["A"])
    assert flat["criteria_accuracy"] == 1.0
    assert flat["criteria_precision"] == flat["criteria_recall"] == flat["criteria_f1"] == 0.0
    assert flat["criteria_f1_macro"] == 0.0
    assert flat["criteria_auroc"] is None
    assert per["A"]["support"] == 0


def test_criterion_without_pairs_is_reported_but_left_out_of_macro() -> None:
    flat, per = criteria_metrics(criteria_preds(), ["A", "B", "C"])
    assert flat["criteria_f1_macro"] == pytest.approx(0.75)  # mean over A and B only
    assert per["C"]["n"] == per["C"]["support"] == 0
    assert per["C"]["criteria_f1"] is None
    assert per["C"]["criteria_auroc"] is None


# --- evidence_metrics ------------------------------------------------------------------------


def test_evidence_metrics_flat() -> None:
    flat, _ = evidence_metrics(evidence_preds(), ["A"])
    assert tuple(flat) == EVIDENCE_METRICS
    assert flat["evidence_exact_match"] == pytest.approx(2 / 5)
    assert flat["evidence_token_f1"] == pytest.approx((1 + 1 + 0 + 0 + 0.4) / 5)
    # overlap 12 + 5, predicted 12 + 6 + 14, gold 12 * 3
    assert flat["evidence_char_precision"] == pytest.approx(17 / 32)
    assert flat["evidence_char_recall"] == pytest.approx(17 / 36)
    assert flat["evidence_char_f1"] == pytest.approx(2 * 17 / (32 + 36))
    assert flat["evidence_null_accuracy"] == pytest.approx(3 / 5)  # e1, e2, e5 right
    assert flat["evidence_has_answer_token_f1"] == pytest.approx((1 + 0 + 0.4) / 3)
    assert flat["evidence_has_answer_exact_match"] == pytest.approx(1 / 3)  # e1 of e1, e3, e5
    assert flat["evidence_span_precision"] == pytest.approx((1 + 0 + 0.4) / 3)  # e1, e4, e5 predicted
    assert flat["evidence_span_f1"] == pytest.approx((1 + 0 + 0 + 0.4) / 4)  # e1, e3, e4, e5


def test_no_evidence_anywhere_scores_zero_on_the_evidence_half_of_joint_f1() -> None:
    """About 80 % of pairs have no evidence: silence scores 0.8 on SQuAD 2 token F1 (joint_score's
    half) and 0 on evidence_span_f1 (joint_f1's)."""
    preds = [pair(f"n{i}") for i in range(8)] + [pair(f"g{i}", gold_spans=(CANNOT_SLEEP,)) for i in range(2)]
    flat, _ = evidence_metrics(preds, ["A"])
    assert flat["evidence_token_f1"] == pytest.approx(0.8)
    assert flat["evidence_span_f1"] == 0.0
    assert flat["evidence_has_answer_token_f1"] == 0.0
    assert flat["evidence_span_precision"] == 0.0  # nothing claimed while there was something to find
    result = evaluate([replace_label(p, 1) if p.gold_spans else p for p in preds], ["A"])
    assert result.metrics["criteria_f1_macro"] == 0.0  # prob 0 everywhere: no match predicted
    assert result.metrics["joint_f1"] == 0.0
    assert result.metrics["joint_score"] == pytest.approx(0.4)


def test_one_right_span_among_many_wrong_ones() -> None:
    right = pair("r", gold_spans=(CANNOT_SLEEP,), pred_span=CANNOT_SLEEP)
    wrong = [pair(f"w{i}", pred_span=CANNOT) for i in range(4)]  # spans where there is no evidence
    flat, _ = evidence_metrics([right, *wrong], ["A"])
    assert flat["evidence_has_answer_token_f1"] == 1.0 and flat["evidence_has_answer_exact_match"] == 1.0
    assert flat["evidence_span_precision"] == pytest.approx(1 / 5)
    assert flat["evidence_span_f1"] == pytest.approx(1 / 5)
    assert flat["evidence_token_f1"] == pytest.approx(1 / 5)  # the four wrong claims cost SQuAD 2 too


def replace_label(prediction: PairPrediction, label: int) -> PairPrediction:
    import dataclasses

    return dataclasses.replace(prediction, label=label)


def test_evidence_all_null_is_perfect() -> None:
    flat, per = evidence_metrics([pair("p1"), pair("p2", "B")], ["A", "B"])
    for name in EVIDENCE_METRICS:
        if name in ("evidence_has_answer_token_f1", "evidence_has_answer_exact_match"):
            assert flat[name] is None  # no pair has gold evidence
        else:
            assert flat[name] == 1.0, name
    assert per["A"]["evidence_support"] == 0


def test_evidence_claiming_only_where_nothing_is_to_find() -> None:
    flat, _ = evidence_metrics([pair("p1", pred_span=CANNOT)], ["A"])
    assert flat["evidence_char_precision"] == 0.0
    assert flat["evidence_char_recall"] == 0.0  # 0 gold chars but 6 claimed: zero-division -> 0
    assert flat["evidence_char_f1"] == 0.0
    assert flat["evidence_null_accuracy"] == 0.0


def test_evidence_takes_best_of_multiple_gold_spans() -> None:
    text = "I feel worthless and guilty all the time"
    worthless, guilty = (7, 16), (21, 27)
    flat, _ = evidence_metrics([pair(gold_spans=(worthless, guilty), pred_span=guilty, text=text)], ["A"])
    assert flat["evidence_exact_match"] == 1.0
    assert flat["evidence_token_f1"] == 1.0
    # Characters are scored against the union of gold spans: 6 of 15 found.
    assert flat["evidence_char_precision"] == 1.0
    assert flat["evidence_char_recall"] == pytest.approx(6 / 15)


def test_overlapping_gold_spans_count_characters_once() -> None:
    # gold (2,14) and (9,23) cover 2..23 = 21 chars, not 12 + 14.
    flat, _ = evidence_metrics([pair(gold_spans=(CANNOT_SLEEP, SLEEP_AT_NIGHT), pred_span=(2, 23))], ["A"])
    assert flat["evidence_char_precision"] == 1.0
    assert flat["evidence_char_recall"] == 1.0


def test_empty_span_counts_as_null() -> None:
    preds = [
        pair("p1", pred_span=(3, 3)),  # empty prediction = null, gold null: right
        pair("p2", gold_spans=((4, 4),), pred_span=None),  # empty gold = null: right
        pair("p3", gold_spans=((4, 4),), pred_span=CANNOT),  # claims an answer where none is
    ]
    flat, per = evidence_metrics(preds, ["A"])
    assert flat["evidence_null_accuracy"] == pytest.approx(2 / 3)
    assert flat["evidence_exact_match"] == pytest.approx(2 / 3)
    assert flat["evidence_has_answer_token_f1"] is None
    assert per["A"]["evidence_support"] == 0


def test_evidence_matching_is_normalized() -> None:
    text = "I am so tired."
    # gold "tired." vs predicted "tired": an exact match once punctuation is normalized away,
    # though the predicted characters miss the period.
    flat, _ = evidence_metrics([pair(gold_spans=((8, 14),), pred_span=(8, 13), text=text)], ["A"])
    assert flat["evidence_exact_match"] == 1.0
    assert flat["evidence_char_recall"] == pytest.approx(5 / 6)


def test_evidence_per_criterion() -> None:
    preds = [
        pair("x", "A", gold_spans=(CANNOT_SLEEP,), pred_span=CANNOT_SLEEP),
        pair("x", "B", gold_spans=(CANNOT_SLEEP,), pred_span=SLEEP_AT_NIGHT),
        pair("y", "B"),
    ]
    flat, per = evidence_metrics(preds, ["A", "B", "C"])
    assert list(per) == ["A", "B", "C"]
    assert per["A"]["evidence_token_f1"] == 1.0
    assert per["A"]["evidence_support"] == 1
    assert per["B"]["evidence_token_f1"] == pytest.approx((0.4 + 1.0) / 2)
    assert per["B"]["evidence_has_answer_token_f1"] == pytest.approx(0.4)
    assert per["B"]["evidence_char_precision"] == pytest.approx(5 / 14)
    assert per["C"]["evidence_token_f1"] is None
    assert per["C"]["evidence_support"] == 0
    assert flat["evidence_token_f1"] == pytest.approx((1.0 + 0.4 + 1.0) / 3)


# --- evaluate --------------------------------------------------------------------------------


def test_evaluate_merges_everything_and_adds_joint_score() -> None:
    preds = [
        pair("a1", "A", 1, 0.9, (CANNOT_SLEEP,), CANNOT_SLEEP),
        pair("a2", "A", 0, 0.7, (), CANNOT),
        pair("b1", "B", 1, 0.8, (CANNOT_SLEEP,), SLEEP_AT_NIGHT),
    ]
    result = evaluate(preds, ["A", "B"])
    assert isinstance(result, EvaluationResult)
    assert tuple(result.metrics) == METRIC_NAMES
    assert result.n_pairs == 3
    # A: tp, fp -> F1 2/3; B: tp -> F1 1; macro 5/6. Token F1: 1, 0, 0.4 -> 1.4/3
    assert result.metrics["criteria_f1_macro"] == pytest.approx(5 / 6)
    assert result.metrics["evidence_token_f1"] == pytest.approx(1.4 / 3)
    assert result.metrics["joint_score"] == pytest.approx((5 / 6 + 1.4 / 3) / 2)
    assert set(result.per_criterion) == {"A", "B"}
    for entry in result.per_criterion.values():
        assert tuple(entry) == PER_CRITERION_METRICS


def test_evaluate_values_are_plain_json_types() -> None:
    result = evaluate([*criteria_preds(), *evidence_preds()], ["A", "B"])
    for value in result.metrics.values():
        assert value is None or type(value) is float
    for entry in result.per_criterion.values():
        for key, value in entry.items():
            expected = int if key in ("support", "n", "evidence_support") else float
            assert value is None or type(value) is expected, key
    json.dumps({"metrics": result.metrics, "per_criterion": result.per_criterion}, allow_nan=False)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (pair("p9", "A", prob=1.5), "prob must be in"),
        (pair("p9", "A", prob=-0.1), "prob must be in"),
        (pair("p9", "A", prob=math.nan), "prob must be in"),
        (pair("p9", "A", label=2), "label must be 0 or 1"),
        (pair("p9", "A", gold_spans=((0, len(TEXT) + 1),)), "span"),
        (pair("p9", "A", gold_spans=((5, 4),)), "span"),
        (pair("p9", "A", pred_span=(-1, 3)), "span"),
        (pair("p9", "A", pred_span=(1.0, 3)), "span"),  # type: ignore[arg-type]
        (pair("p9", "A", pred_span=(1, 2, 3)), "span"),  # type: ignore[arg-type]
        (pair("p9", "Z"), "criterion is not one of"),
        (pair("p0", "A"), "duplicate pair"),
    ],
)
@pytest.mark.parametrize("function", [criteria_metrics, evidence_metrics, evaluate])
def test_invalid_pair_raises_naming_post_and_criterion(
    bad: PairPrediction, message: str, function: Callable[..., object]
) -> None:
    preds = [pair("p0", "A"), bad]
    with pytest.raises(ValueError, match=message) as excinfo:
        function(preds, ["A", "B"])
    assert f"post_id={bad.post_id!r}" in str(excinfo.value)
    assert f"criterion={bad.criterion!r}" in str(excinfo.value)


def test_empty_preds_raise() -> None:
    with pytest.raises(ValueError, match="preds is empty"):
        evaluate([], ["A"])


def test_bad_criteria_raise() -> None:
    with pytest.raises(ValueError, match="criteria must be non-empty"):
        evaluate([pair()], [])
    with pytest.raises(ValueError, match="without duplicates"):
        evaluate([pair()], ["A", "A"])


@pytest.mark.parametrize("threshold", [-0.1, 1.1, math.nan])
def test_bad_threshold_raises(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold must be in"):
        evaluate([pair()], ["A"], threshold=threshold)
