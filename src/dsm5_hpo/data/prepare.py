"""From config to model-ready windows: load, split, pair, locate spans, tokenize.

Done once per study (every trial shares the same data and tokenizer), and again by the
evaluate CLI from a trial's saved config, which gives back exactly the same test split.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm5_hpo.config import DataConfig, TrainConfig
from dsm5_hpo.data.augmentation import augment_examples, augment_posts
from dsm5_hpo.data.feature_cache import FeatureCache
from dsm5_hpo.data.features import WindowFeatures, tokenize_for
from dsm5_hpo.data.pairs import PairExample, SpanStats, build_examples
from dsm5_hpo.data.schema import RedSM5
from dsm5_hpo.data.sources import load_redsm5
from dsm5_hpo.data.splits import Split, split_posts
from dsm5_hpo.errors import DataError
from dsm5_hpo.vocabulary import parse_operations

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class SplitData:
    examples: list[PairExample]
    features: WindowFeatures


@dataclass
class PreparedData:
    dataset: RedSM5
    split: Split
    splits: dict[str, SplitData]
    span_stats: SpanStats
    criteria: tuple[str, ...]
    tokenizer: Any
    """The tokenizer the windows were built with (augmented epochs and the export reuse it)."""

    def summary(self) -> dict[str, Any]:
        """Counts recorded in study.json, MLflow and reports."""
        return {
            "source": self.dataset.source,
            "revision": self.dataset.revision,
            "posts": len(self.dataset.posts),
            "annotations": len(self.dataset.annotations),
            "criteria": list(self.criteria),
            "split_posts": {name: len(self.split.of(name)) for name in SPLITS},
            "split_pairs": {name: len(self.splits[name].examples) for name in SPLITS},
            "split_windows": {name: len(self.splits[name].features) for name in SPLITS},
            "evidence_sentences_located": self.span_stats.located,
            "evidence_sentences_unlocated": self.span_stats.unlocated,
        }


def subset_posts(dataset: RedSM5, max_posts: int) -> RedSM5:
    """The first ``max_posts`` posts in a fixed hash order (seed-independent, source-independent)."""
    if not max_posts or max_posts >= len(dataset.posts):
        return dataset
    keep = sorted(dataset.posts, key=lambda pid: hashlib.sha256(pid.encode()).hexdigest())[:max_posts]
    kept = set(keep)
    return RedSM5(
        posts={pid: text for pid, text in dataset.posts.items() if pid in kept},
        annotations=tuple(a for a in dataset.annotations if a.post_id in kept),
        source=dataset.source,
        revision=f"{dataset.revision}[first {max_posts} posts]",
    )


def augmented_epochs(
    examples: Sequence[PairExample],
    tokenizer: Any,
    data: DataConfig,
    train: TrainConfig,
) -> list[WindowFeatures]:
    """One set of training windows per epoch, each from a fresh evidence-only augmentation of
    ``examples`` seeded by (train.seed, epoch): a resumed trial sees the same texts again."""
    operations = parse_operations(train.augment_operations)
    build = windows_builder(data)
    epochs = []
    for epoch in range(train.max_epochs):
        seed = train.seed * 1000 + epoch
        if data.input_format == "multi_label":  # one text per post: augmented once for all its criteria
            augmented = augment_posts(
                examples,
                criteria=len(data.criteria),
                probability=train.augment_probability,
                operations=operations,
                seed=seed,
            )
        else:
            augmented = augment_examples(
                examples, probability=train.augment_probability, operations=operations, seed=seed
            )
        changed = sum(a is not e for a, e in zip(augmented, examples, strict=True))
        logger.info("epoch %d: evidence of %d of %d training pairs augmented", epoch, changed, len(examples))
        epochs.append(build(augmented, tokenizer, max_length=data.max_length, doc_stride=data.doc_stride))
    return epochs


def windows_builder(config: DataConfig) -> Callable[..., WindowFeatures]:
    """tokenize(examples, tokenizer, max_length=, doc_stride=) for data.input_format."""
    return functools.partial(tokenize_for, config.input_format, criteria=len(config.criteria))


def feature_cache(config: DataConfig, cache_dir: Path) -> FeatureCache | None:
    """The on-disk cache of tokenized splits under ``cache_dir``, or None when data.feature_cache_entries=0."""
    if config.feature_cache_entries == 0:
        return None
    return FeatureCache(cache_dir / "features", max_entries=config.feature_cache_entries)


def prepare_data(
    config: DataConfig,
    tokenizer: Any,
    *,
    seed: int,
    dataset: RedSM5 | None = None,
    cache: FeatureCache | None = None,
) -> PreparedData:
    """Load (unless ``dataset`` is given), split by post, build pairs and tokenize every split.

    With ``cache``, each split's windows come from disk when the same data was tokenized the
    same way before (a resumed study, the next study, the evaluate CLI).
    """
    dataset = subset_posts(dataset or load_redsm5(config), config.max_posts)
    split = split_posts(dataset.posts, seed, config.split)
    if not split.train or not split.validation:
        raise DataError(
            f"only {len(dataset.posts)} posts: too few for a train/validation/test split; use more posts "
            "(data.max_posts=0) or other data.split shares"
        )
    stats = SpanStats()
    splits: dict[str, SplitData] = {}
    for name in SPLITS:
        examples, split_stats = build_examples(dataset, split.of(name), config.criteria, warn=False)
        stats.add(split_stats)
        build = windows_builder(config)
        if cache is None:
            features = build(examples, tokenizer, max_length=config.max_length, doc_stride=config.doc_stride)
        else:
            features = cache.windows(
                examples,
                tokenizer,
                max_length=config.max_length,
                doc_stride=config.doc_stride,
                describe={
                    "data": config.name,
                    "revision": dataset.revision,
                    "split": name,
                    "seed": seed,
                    "input_format": config.input_format,
                },
                build=build,
                variant="" if config.input_format == "binary_pairs" else config.input_format,
            )
        splits[name] = SplitData(examples, features)
    stats.warn()
    prepared = PreparedData(dataset, split, splits, stats, config.criteria, tokenizer)
    summary = prepared.summary()
    logger.info(
        "data %s: %d posts -> pairs %s, windows %s; %d/%d evidence sentences located",
        dataset.source,
        summary["posts"],
        summary["split_pairs"],
        summary["split_windows"],
        stats.located,
        stats.total,
    )
    return prepared
