"""A model's predictions and metrics on a split: batched forward passes, decoding, thresholds.

What the trainer's per-epoch validation, the study's one test evaluation and ``predict`` share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dsm5_hpo.config import TrainConfig
from dsm5_hpo.data.batching import plain_batches
from dsm5_hpo.data.features import WindowFeatures, collate
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.evaluation.decoding import WindowOutputs, decode_predictions
from dsm5_hpo.evaluation.evaluator import EvaluationResult, PairPrediction, evaluate
from dsm5_hpo.evaluation.thresholds import tune_thresholds
from dsm5_hpo.models.multi_task import DualHeadModel, forward_batch
from dsm5_hpo.models.precision import autocast


@dataclass
class EvaluationData:
    examples: Sequence[PairExample]
    features: WindowFeatures


@torch.inference_mode()
def predict(
    model: DualHeadModel,
    data: EvaluationData,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    max_answer_tokens: int,
    null_score_margin: float,
    criteria_logit_offset: float = 0.0,
    gating: str = "null_score",
    match_threshold: float = 0.5,
) -> list[PairPrediction]:
    """Post-level predictions of ``model`` on every pair of ``data``, evidence decided by ``gating``.

    ``criteria_logit_offset`` is added to every criteria logit (prior correction, see evaluate_model).
    """
    model.eval()
    features = data.features
    # Sorting by length keeps padding small; outputs go back to feature order below.
    order = sorted(range(len(features)), key=lambda i: len(features.input_ids[i]))
    shape = (len(features),) if features.outputs == 1 else (len(features), features.outputs)
    criteria = np.zeros(shape, dtype=np.float32)
    starts: list[np.ndarray] = [np.empty(0)] * len(features)
    ends: list[np.ndarray] = [np.empty(0)] * len(features)
    sentences: list[np.ndarray] = [np.empty(0)] * len(features)
    by_sentence = False
    for batch_indices in plain_batches(order, batch_size):
        batch = {k: v.to(device) for k, v in collate(features, batch_indices).items()}
        with autocast(device, precision):
            output = forward_batch(model, batch)
        crit = output.criteria_logits.float().cpu().numpy() + criteria_logit_offset
        if output.sentence_logits is not None:
            by_sentence = True
            per_sentence = output.sentence_logits.float().cpu().numpy()
            for row, index in enumerate(batch_indices):
                criteria[index] = crit[row]
                sentences[index] = per_sentence[row, : len(features.window_sentences[index])]
            continue
        assert output.start_logits is not None and output.end_logits is not None
        start = output.start_logits.float().cpu().numpy()
        end = output.end_logits.float().cpu().numpy()
        for row, index in enumerate(batch_indices):
            n = len(features.input_ids[index])
            criteria[index] = crit[row]
            starts[index], ends[index] = start[row, :n], end[row, :n]
    return decode_predictions(
        data.examples,
        features,
        WindowOutputs(criteria, starts, ends, sentences if by_sentence else None),
        max_answer_tokens=max_answer_tokens,
        null_score_margin=null_score_margin,
        gating=gating,
        match_threshold=match_threshold,
    )


def evaluate_model(
    model: DualHeadModel,
    data: EvaluationData,
    config: TrainConfig,
    *,
    device: torch.device,
    criteria: Sequence[str],
    max_answer_tokens: int,
    tune_for: str | None = None,
) -> EvaluationResult:
    """Metrics of ``model`` on ``data`` at the configured thresholds, or, with ``tune_for`` (a metric
    name) and train.tune_thresholds, at the match threshold and null-score margin that maximize that
    metric; the chosen values are then in the metrics (thresholds.THRESHOLD_KEY, MARGIN_KEY)."""
    predictions = predict(
        model,
        data,
        device=device,
        precision=config.precision,
        batch_size=config.eval_batch_size,
        max_answer_tokens=max_answer_tokens,
        null_score_margin=config.null_score_margin,
        criteria_logit_offset=criteria_prior_offset(config),
        gating=config.evidence_gating,
        match_threshold=config.match_threshold,
    )
    if tune_for is not None and config.tune_thresholds:
        tuned = tune_thresholds(
            predictions,
            criteria,
            tune_for,
            threshold=config.match_threshold,
            margin=config.null_score_margin,
            gating=config.evidence_gating,
        )
        return dataclasses.replace(tuned.result, metrics=tuned.metrics())
    return evaluate(predictions, criteria, threshold=config.match_threshold)


def criteria_prior_offset(config: TrainConfig) -> float:
    """log(negative_sampling): undoes the prior shift of training on a share of the negatives.

    Keeping each negative with probability r multiplies the odds the model learns by 1/r; adding
    log(r) to its logits gives back probabilities for the real class balance that evaluation uses.
    """
    return math.log(config.negative_sampling)
