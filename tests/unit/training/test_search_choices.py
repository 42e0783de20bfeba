"""Every choice of the search space trains one tiny-model epoch through the real Trainer and objective path.

Each parametrized case composes the study config with the choice as an override (as a trial's
sampled params are applied), builds the model the objective builds, and fits one epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import compose_tiny
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.prepare import PreparedData, augmented_epochs, prepare_data
from dsm5_hpo.evaluation.prediction import EvaluationData
from dsm5_hpo.evaluation.thresholds import MARGIN_KEY, THRESHOLD_KEY
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import build_model
from dsm5_hpo.tracking.tracker import NullRunTracker
from dsm5_hpo.training.trainer import Trainer
from dsm5_hpo.utils.seeding import seed_everything

CHOICES: list[tuple[str, Any]] = [
    *[("heads.criteria_head", v) for v in ("linear", "mlp", "mlp_residual", "gated")],
    *[("heads.pooling", v) for v in ("cls", "mean", "attention", "layer_mix")],
    *[("heads.evidence_head", v) for v in ("linear", "mlp")],
    ("heads.coupling", True),
    *[("train.criteria_loss", v) for v in ("bce", "weighted_bce", "focal", "hybrid")],
    ("train.label_smoothing", 0.1),
    *[("train.optimizer", v) for v in ("adamw", "adam", "adafactor")],
    *[("train.scheduler", v) for v in ("linear", "cosine", "constant")],
    ("train.layer_lr_decay", 0.8),
    *[("train.freeze_layers", v) for v in (1, 2)],
    ("train.tune_thresholds", False),
    ("train.augment_probability", 0.5),
    *[("train.augment_operations", v) for v in ("swap", "delete", "synonym", "char_noise")],
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path
) -> tuple[StudyConfig, Path, PreparedData]:
    config = compose_tiny(
        tmp_path_factory.mktemp("choices"), model_cache, "train.device=cpu", "train.max_epochs=1"
    )
    path = resolve_model(config.model, cache_dir=model_cache).path
    return config, path, prepare_data(config.data, load_tokenizer(path), seed=config.train.seed)


@pytest.mark.parametrize(("key", "value"), CHOICES, ids=[f"{k}={v}" for k, v in CHOICES])
def test_each_choice_trains_one_epoch(
    base: tuple[StudyConfig, Path, PreparedData], key: str, value: Any
) -> None:
    config, path, data = base
    if key == "train.augment_operations":
        config = config.with_params({"train.augment_probability": 1.0})
    config = config.with_params({key: value})
    section, name = key.split(".")
    assert getattr(getattr(config, section), name) == value
    assert config.to_dict()[section][name] == value  # what the trial's config.yaml and MLflow params record
    seed_everything(config.train.seed)
    model = build_model(path, config)
    tracker = NullRunTracker()
    validation = data.splits["validation"]
    trainer = Trainer(
        model,
        config.train,
        criteria=data.criteria,
        metric="joint_score",
        max_answer_tokens=config.data.max_answer_tokens,
        tracker=tracker,
        progress=False,
    )
    train = data.splits["train"]
    windows: Any = train.features
    if config.train.augment_probability > 0:  # as the objective does
        windows = augmented_epochs(train.examples, load_tokenizer(path), config.data, config.train)
    result = trainer.fit(windows, EvaluationData(validation.examples, validation.features))
    assert result.epochs_run == 1
    assert math.isfinite(result.best_value)
    losses = [v for k, v, _ in tracker.metrics if k == "train_loss"]
    assert losses and all(math.isfinite(v) for v in losses)
    tuned = {k for k, _, _ in tracker.metrics if k in (f"val_{THRESHOLD_KEY}", f"val_{MARGIN_KEY}")}
    assert bool(tuned) == config.train.tune_thresholds
    if section == "heads":
        assert model.head_config()[name if name != "hidden_size" else "head_hidden_size"] == value
