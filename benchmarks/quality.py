"""Model quality against bag-of-words baselines, on the same split of the same data.

    python benchmarks/quality.py                          # runs `make train` (configs/hpo_study.yaml) first
    python benchmarks/quality.py --study-dir experiments/study_<uuid>   # a study that has finished
    python benchmarks/quality.py --quick                  # tiny model, 24 posts: a smoke test for CI
    python benchmarks/quality.py --train-args hpo.n_trials=10 ...   # a longer study, then compare

Baselines (scikit-learn, fitted on the study's train split, thresholds chosen on its validation
split as the study chooses its own, scored on validation and test with the project's evaluator):

- ``tfidf_post``: TF-IDF (word 1-2 grams) of the whole post, one logistic regression per criterion.
  It finds no evidence (a post-level model has none to give).
- ``tfidf_sentence``: the same over the post's sentences (``data.sentences.split_sentences``), a
  sentence labelled positive for a criterion when it is that criterion's gold evidence; the post's
  score is its best sentence's, and that sentence is the evidence when the post matches.

The model: the study's best trial, its validation metrics at its best epoch (validation_report.json)
and its test metrics (evaluation_report.json). Figures: criteria macro F1, AUROC, evidence
has-answer token F1 and exact match, and model / best baseline for each. Prints a table; the last
line is a JSON object of every figure (``make bench`` writes it into benchmarks/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from dsm5_hpo.config import study_config_from_mapping
from dsm5_hpo.data.pairs import PairExample, build_examples
from dsm5_hpo.data.prepare import subset_posts
from dsm5_hpo.data.sentences import is_evidence, split_sentences
from dsm5_hpo.data.sources import load_redsm5
from dsm5_hpo.data.splits import split_posts
from dsm5_hpo.evaluation.evaluator import PairPrediction, criteria_metrics, evaluate
from dsm5_hpo.models.precision import resolve_device, resolve_precision

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "hpo_study.yaml"
QUICK = ("model=tiny", "data.max_posts=24", "data.max_length=64", "data.doc_stride=16", "train.max_epochs=2")
QUICK += ("hpo.n_trials=2", "hpo.pruner=none", "tracking=none")
FIGURES = (
    ("criteria_f1_macro", "criteria macro F1"),
    ("criteria_auroc", "criteria AUROC"),
    ("evidence_has_answer_token_f1", "has-answer token F1"),
    ("evidence_has_answer_exact_match", "has-answer EM"),
)
SPLITS = ("validation", "test")


def _tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True)


def _classifier() -> LogisticRegression:
    return LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000)


def _fit_scores(train_x: Any, train_y: np.ndarray, other_x: Sequence[Any]) -> list[np.ndarray]:
    """P(positive) for each matrix in ``other_x``; a constant when the train labels are all one class."""
    if train_y.min() == train_y.max():
        return [np.full(x.shape[0], float(train_y[0])) for x in other_x]
    model = _classifier().fit(train_x, train_y)
    return [model.predict_proba(x)[:, 1] for x in other_x]


def _predictions(
    examples: Sequence[PairExample],
    scores: np.ndarray,
    evidence: Sequence[tuple[int, int] | None],
    threshold: float,
) -> list[PairPrediction]:
    """Pairs at one match threshold: the evidence is given exactly where the pair matches (the
    model's default gating, train.evidence_gating=criteria)."""
    return [
        PairPrediction(
            post_id=example.post_id,
            criterion=example.criterion,
            label=example.label,
            prob=float(score),
            gold_spans=example.spans,
            pred_span=span if score >= threshold else None,
            text=example.text,
            candidate_span=span,
        )
        for example, score, span in zip(examples, scores, evidence, strict=True)
    ]


def _macro_f1(
    examples: Sequence[PairExample], scores: np.ndarray, threshold: float, criteria: Sequence[str]
) -> float:
    preds = _predictions(examples, scores, [None] * len(examples), threshold)
    return float(criteria_metrics(preds, criteria, threshold)[0]["criteria_f1_macro"] or 0.0)


def _by_split(config: Any) -> dict[str, list[PairExample]]:
    dataset = subset_posts(load_redsm5(config.data), config.data.max_posts)
    split = split_posts(dataset.posts, config.train.seed, config.data.split)
    return {
        name: build_examples(dataset, split.of(name), config.data.criteria, warn=False)[0]
        for name in ("train", *SPLITS)
    }


def _tune_and_score(
    splits: dict[str, list[PairExample]],
    scores: dict[str, np.ndarray],
    evidence: dict[str, list[tuple[int, int] | None]],
    criteria: Sequence[str],
) -> dict[str, dict[str, float | None]]:
    """One match threshold for every criterion, the validation macro-F1 best (as the study's
    train.tune_thresholds picks the model's), then every metric on validation and test."""
    validation = splits["validation"]
    candidates = np.unique(np.quantile(scores["validation"], np.linspace(0.0, 1.0, 201)))
    threshold = max(candidates, key=lambda t: _macro_f1(validation, scores["validation"], float(t), criteria))
    return {
        name: evaluate(
            _predictions(splits[name], scores[name], evidence[name], float(threshold)),
            criteria,
            float(threshold),
        ).metrics
        for name in SPLITS
    }


def post_baseline(
    splits: dict[str, list[PairExample]], criteria: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    posts = {name: list(dict.fromkeys((e.post_id, e.text) for e in splits[name])) for name in splits}
    vectorizer = _tfidf().fit([text for _, text in posts["train"]])
    matrix = {name: vectorizer.transform([text for _, text in posts[name]]) for name in splits}
    index = {name: {post_id: i for i, (post_id, _) in enumerate(posts[name])} for name in splits}
    scores: dict[str, np.ndarray] = {name: np.zeros(len(splits[name])) for name in SPLITS}
    for criterion in criteria:
        label_of = {e.post_id: e.label for e in splits["train"] if e.criterion == criterion}
        y = np.array([label_of[post_id] for post_id, _ in posts["train"]])
        fitted = _fit_scores(matrix["train"], y, [matrix[name] for name in SPLITS])
        for name, post_scores in zip(SPLITS, fitted, strict=True):
            for i, e in enumerate(splits[name]):
                if e.criterion == criterion:
                    scores[name][i] = post_scores[index[name][e.post_id]]
    evidence = {name: [None] * len(splits[name]) for name in SPLITS}
    return _tune_and_score(splits, scores, evidence, criteria)


def sentence_baseline(
    splits: dict[str, list[PairExample]], criteria: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    sentences: dict[str, list[tuple[str, tuple[int, int]]]] = {}  # post_id -> (text, span) per sentence
    for examples in splits.values():
        for e in examples:
            if e.post_id not in sentences:
                sentences[e.post_id] = [(e.text[a:b], (a, b)) for a, b in split_sentences(e.text)]
    rows = {
        name: [(p, s) for p in dict.fromkeys(e.post_id for e in splits[name]) for s in sentences[p]]
        for name in splits
    }
    vectorizer = _tfidf().fit([text for _, (text, _) in rows["train"]])
    matrix = {name: vectorizer.transform([text for _, (text, _) in rows[name]]) for name in splits}
    scores = {name: np.zeros(len(splits[name])) for name in SPLITS}
    evidence: dict[str, list[tuple[int, int] | None]] = {name: [None] * len(splits[name]) for name in SPLITS}
    for criterion in criteria:
        gold = {e.post_id: e.spans for e in splits["train"] if e.criterion == criterion}
        y = np.array([int(is_evidence(span, gold[post_id])) for post_id, (_, span) in rows["train"]])
        fitted = _fit_scores(matrix["train"], y, [matrix[name] for name in SPLITS])
        for name, sentence_scores in zip(SPLITS, fitted, strict=True):
            best: dict[str, tuple[float, tuple[int, int]]] = {}
            for (post_id, (_, span)), score in zip(rows[name], sentence_scores, strict=True):
                if post_id not in best or score > best[post_id][0]:
                    best[post_id] = (float(score), span)
            for i, e in enumerate(splits[name]):
                if e.criterion == criterion and e.post_id in best:
                    scores[name][i], evidence[name][i] = best[e.post_id]
    return _tune_and_score(splits, scores, evidence, criteria)


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise SystemExit(
            f"error: cannot read {path} ({error}); is the study finished (`make status`)?"
        ) from None


def model_metrics(study_dir: Path) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """Validation (best epoch) and test metrics of the study's best trial, and its resolved config."""
    report = _read(study_dir / "evaluation_report.json")
    trial_dir = Path(report["checkpoints"][0]["path"]).parents[1] if report["checkpoints"] else None
    if trial_dir is None:
        raise SystemExit(f"error: {study_dir}'s report lists no checkpoint of its best trial")
    validation = _read(trial_dir / "validation_report.json")
    return {"validation": validation["metrics"], "test": report["test_metrics"]}, report["resolved_config"]


def run_study(experiments: Path, overrides: Sequence[str]) -> tuple[Path, float]:
    command = [sys.executable, "-m", "dsm5_hpo.cli.train", "--config", str(CONFIG)]
    command += [*overrides, f"paths.experiments_dir={experiments}"]
    print(f"training: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(
            f"error: the study failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    (study_dir,) = experiments.glob("study_*")
    return study_dir, seconds


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def table(results: dict[str, dict[str, dict[str, float | None]]]) -> list[str]:
    lines = [f"{'':25}" + "".join(f"{who:>16}" for who in results) + f"{'model/best':>12}"]
    for split in SPLITS:
        for key, label in FIGURES:
            values = {who: r[split].get(key) for who, r in results.items()}
            baselines = [v for who, v in values.items() if who != "model" and v is not None]
            best = max(baselines) if baselines else None
            model = values.get("model")
            ratio = f"{model / best:12.2f}" if model is not None and best else f"{'n/a':>12}"
            lines.append(
                f"{split[:4]} {label:20}" + "".join(f"{_fmt(v):>16}" for v in values.values()) + ratio
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study-dir", type=Path, help="a finished study (default: run one first)")
    parser.add_argument("--quick", action="store_true", help="tiny model on 24 posts (smoke test)")
    parser.add_argument("--train-args", nargs="*", default=[], help="Hydra overrides for the study it runs")
    args = parser.parse_args(argv)
    study_arg = args.study_dir.resolve() if args.study_dir else None
    os.chdir(REPO_ROOT)  # the configs name the data folder relative to the repository, as `make train` runs

    seconds = None
    with tempfile.TemporaryDirectory(prefix="dsm5-quality-") as work:
        study_dir = study_arg
        if study_dir is None:
            overrides = [*(QUICK if args.quick else ()), *args.train_args]
            study_dir, seconds = run_study(Path(work) / "experiments", overrides)
        model, resolved = model_metrics(study_dir)
        config = study_config_from_mapping(resolved)
        splits = _by_split(config)
        results = {
            "model": model,
            "tfidf_post": post_baseline(splits, config.data.criteria),
            "tfidf_sentence": sentence_baseline(splits, config.data.criteria),
        }
    device = resolve_device(config.train.device)
    precision = resolve_precision(config.train.precision, device)
    posts = {name: len({e.post_id for e in splits[name]}) for name in splits}
    print(
        f"{config.model.name}, {config.data.input_format}, evidence unit {config.heads.evidence_unit}, on {device} "
        f"(precision {precision}); posts {posts}; study {study_dir.name}"
        + (f", trained in {seconds:.0f} s" if seconds is not None else "")
    )
    for line in table(results):
        print(line)
    figures: dict[str, Any] = {
        "model": config.model.name,
        "device": str(device),
        "precision": precision,
        "posts": posts,
        "study_seconds": None if seconds is None else round(seconds, 1),
    }
    for split in SPLITS:
        for key, _ in FIGURES:
            for who, result in results.items():
                value = result[split].get(key)
                figures[f"{split}_{key}_{who}"] = None if value is None else round(float(value), 4)
            baselines = [results[w][split].get(key) for w in results if w != "model"]
            best = max((v for v in baselines if v is not None), default=None)
            model_value = results["model"][split].get(key)
            figures[f"{split}_{key}_ratio"] = (
                round(float(model_value) / best, 3) if model_value is not None and best else None
            )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
