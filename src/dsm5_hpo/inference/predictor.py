"""Predictions of an exported best model on new posts: every criterion, its probability, its
match decision, and its evidence span or none.

A post is read exactly as in training and evaluation: in the export's input format (binary_pairs: one
pass per criterion, the criterion's description beside the post; multi_label: one pass per post), in
the same overlapping windows (max_length and doc_stride from the export), the windows merged back per
(post, criterion) by the same decoder, so a long post is read whole. Posts go through
in chunks, so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm5_hpo.config import INPUT_FORMATS
from dsm5_hpo.data.features import tokenize_for
from dsm5_hpo.data.pairs import PairExample
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.evaluation.evaluator import PairPrediction
from dsm5_hpo.evaluation.prediction import EvaluationData, predict
from dsm5_hpo.inference.posts import Post
from dsm5_hpo.models.export import tokenizer_dir
from dsm5_hpo.models.loading import load_tokenizer
from dsm5_hpo.models.multi_task import DualHeadModel
from dsm5_hpo.models.precision import resolve_device, resolve_precision

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictSettings:
    batch_size: int = 32
    """Windows per forward pass."""
    posts_per_chunk: int = 64
    """Posts tokenized and predicted together (bounds memory on huge inputs)."""
    device: str = "auto"
    precision: str = "auto"
    threshold: float | None = None
    """Match threshold; None = the one chosen on validation (dsm5_hpo.json)."""
    base_model: Path | None = None
    """A LoRA export without merged weights (export.merge_lora=false): the folder holding its base
    encoder; None = where it was at export time, else found by its model id (hash-checked either way)."""

    def __post_init__(self) -> None:
        for key in ("batch_size", "posts_per_chunk"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, not {getattr(self, key)}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be within [0, 1], not {self.threshold}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")


def _evidence(prediction: PairPrediction) -> dict[str, Any] | None:
    span = prediction.pred_span
    if span is None:
        return None
    start, end = span
    return {
        "text": prediction.text[start:end],
        "start": start,
        "end": end,
        # The span's start+end logit minus the no-evidence (CLS) logit (sentence evidence: the
        # sentence's logit): > 0 means it beat "no evidence". Under evidence_gating=null_score a span
        # is returned when this is at least -null_score_margin; under criteria, when the pair matches.
        "score": round(-prediction.null_gap, 6),
    }


def post_record(post: Post, predictions: Sequence[PairPrediction], threshold: float) -> dict[str, Any]:
    """The output line of one post (its predictions in criteria order)."""
    criteria = [
        {
            "criterion": p.criterion,
            "probability": round(p.prob, 6),
            "match": p.prob >= threshold,
            "evidence": _evidence(p),
        }
        for p in predictions
    ]
    return {
        "post_id": post.post_id,
        "matched": [c["criterion"] for c in criteria if c["match"]],
        "criteria": criteria,
    }


class Predictor:
    """An exported model (``study_<uuid>/best_model``) ready to predict; loads it hash-verified."""

    def __init__(self, folder: Path, settings: PredictSettings | None = None) -> None:
        self.settings = settings or PredictSettings()
        if not folder.is_dir():
            raise ConfigError(
                f"--model {folder}: no such folder; pass an exported model, e.g. "
                "experiments/study_<uuid>/best_model (written at the end of `make train`)"
            )
        self.model = DualHeadModel.from_pretrained(folder, base_path=self.settings.base_model)
        self.info = self.model.export_info
        input_format = self.info.get("input_format")
        # The formats a config may train with are the formats a model can be exported with.
        if input_format not in INPUT_FORMATS:
            raise ConfigError(
                f"{folder}: input format {input_format!r} is not one this version predicts with "
                f"({', '.join(INPUT_FORMATS)}); upgrade dsm5_hpo"
            )
        self.tokenizer = load_tokenizer(tokenizer_dir(folder, self.info))
        self.device = resolve_device(self.settings.device)
        self.precision = resolve_precision(self.settings.precision, self.device)
        self.model.to(self.device)
        self.criteria: list[str] = list(self.info["criteria"])
        self.questions: dict[str, str] = dict(self.info["questions"])
        self.threshold = (
            self.settings.threshold
            if self.settings.threshold is not None
            else float(self.info["match_threshold"])
        )

    def _examples(self, posts: Sequence[Post]) -> list[PairExample]:
        return [
            PairExample(post.post_id, c, self.questions[c], post.text, label=0, spans=())
            for post in posts
            for c in self.criteria
        ]

    def _predict_chunk(self, posts: Sequence[Post]) -> list[dict[str, Any]]:
        readable = [p for p in posts if p.text.strip()]
        by_post: dict[int, list[PairPrediction]] = {}
        if readable:
            examples = self._examples(readable)
            features = tokenize_for(
                str(self.info["input_format"]),
                examples,
                self.tokenizer,
                criteria=len(self.criteria),
                max_length=int(self.info["max_length"]),
                doc_stride=int(self.info["doc_stride"]),
            )
            predictions = predict(
                self.model,
                EvaluationData(examples, features),
                device=self.device,
                precision=self.precision,
                batch_size=self.settings.batch_size,
                max_answer_tokens=int(self.info["max_answer_tokens"]),
                null_score_margin=float(self.info["null_score_margin"]),
                criteria_logit_offset=float(self.info.get("criteria_logit_offset", 0.0)),
                # Exports written before the gating existed decided by the null score.
                gating=str(self.info.get("evidence_gating", "null_score")),
                match_threshold=self.threshold,
            )
            n = len(self.criteria)
            for i, post in enumerate(readable):
                by_post[id(post)] = predictions[i * n : (i + 1) * n]
        records = []
        for post in posts:
            if id(post) in by_post:
                records.append(post_record(post, by_post[id(post)], self.threshold))
            else:  # kept in the output so line i of the output is post i of the input
                records.append(
                    {"post_id": post.post_id, "skipped": "empty text", "matched": [], "criteria": []}
                )
        return records

    def predict(self, posts: Sequence[Post]) -> Iterator[dict[str, Any]]:
        """One record per post, in input order."""
        size = self.settings.posts_per_chunk
        for first in range(0, len(posts), size):
            yield from self._predict_chunk(posts[first : first + size])
