"""The training loop with train.finetuning=lora on the tiny model: with bf16 autocast, gradient
accumulation and a frozen layer, it trains only the adapters and heads, checkpoints them, and an
interrupted run resumes into a freshly built model with the uninterrupted run's results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import compose_tiny
from dsm5_hpo.checkpointing.manager import CheckpointManager, architecture_signature
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.prepare import PreparedData, prepare_data
from dsm5_hpo.evaluation.prediction import EvaluationData
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import DualHeadModel, build_model
from dsm5_hpo.training.trainer import FitResult, Trainer
from dsm5_hpo.utils.seeding import seed_everything

METRIC = "joint_score"


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_restored_determinism() -> Iterator[None]:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


class Setup:
    def __init__(self, root: Path, model_cache: Path) -> None:
        self.config: StudyConfig = compose_tiny(
            root,
            model_cache,
            "train.device=cpu",
            "train.finetuning=lora",
            "train.precision=bf16",
            "train.gradient_accumulation_steps=2",
            "train.freeze_layers=1",
            "train.learning_rate_encoder=1e-3",
        )
        self.path = resolve_model(self.config.model, cache_dir=model_cache).path
        self.data: PreparedData = prepare_data(
            self.config.data, load_tokenizer(self.path), seed=self.config.train.seed
        )

    def model(self, seed: int | None = None) -> DualHeadModel:
        seed_everything(self.config.train.seed if seed is None else seed)
        return build_model(self.path, self.config)

    def manager(self, folder: Path, model: DualHeadModel) -> CheckpointManager:
        return CheckpointManager(
            folder,
            trial_id="t-lora",
            architecture_signature=architecture_signature(model),
            head_config=model.head_config(),
        )

    def fit(self, model: DualHeadModel, **kwargs: object) -> tuple[Trainer, FitResult]:
        trainer = Trainer(
            model,
            self.config.train,
            criteria=self.data.criteria,
            metric=METRIC,
            max_answer_tokens=self.config.data.max_answer_tokens,
            progress=False,
            **kwargs,  # type: ignore[arg-type]
        )
        validation = self.data.splits["validation"]
        result = trainer.fit(
            self.data.splits["train"].features, EvaluationData(validation.examples, validation.features)
        )
        return trainer, result


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Setup:
    return Setup(tmp_path_factory.mktemp("experiments"), model_cache)


def test_lora_fit_trains_adapters_and_heads_only_and_resumes_exactly(setup: Setup, tmp_path: Path) -> None:
    model = setup.model()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not any(".layer.0." in name and "lora_" in name for name, _ in model.named_parameters())
    _, uninterrupted = setup.fit(model, checkpoints=setup.manager(tmp_path / "whole" / "checkpoints", model))
    assert uninterrupted.epochs_run == 2
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter.detach().cpu(), frozen[name]), name

    class Crash(Exception):
        pass

    def crash_after_first_epoch(epoch: int, metrics: dict[str, float | None]) -> None:
        if epoch == 0:
            raise Crash

    folder = tmp_path / "interrupted" / "checkpoints"
    first = setup.model()
    with pytest.raises(Crash):
        setup.fit(first, checkpoints=setup.manager(folder, first), epoch_callback=crash_after_first_epoch)
    fresh = setup.model(seed=999)  # a new process: other random adapters and heads, same names
    trainer, resumed = setup.fit(fresh, checkpoints=setup.manager(folder, fresh))
    assert trainer.resumed_from is not None and trainer.resumed_from.epoch == 0
    assert resumed.history == uninterrupted.history
    assert resumed.best_value == uninterrupted.best_value
