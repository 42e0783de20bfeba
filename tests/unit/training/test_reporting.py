"""hpo.report_every_n_steps in the trainer: validations inside an epoch, reported at monotonic global
steps, change nothing of the training and resume exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import compose_tiny
from dsm5_hpo.checkpointing.manager import CheckpointManager, architecture_signature
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.prepare import PreparedData, prepare_data
from dsm5_hpo.evaluation.prediction import EvaluationData
from dsm5_hpo.models.loading import load_encoder, load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import DualHeadModel
from dsm5_hpo.tracking.tracker import NullRunTracker
from dsm5_hpo.training.memory import MEMORY_METRICS
from dsm5_hpo.training.reporting import STEP_METRIC, ReportPoint, Reports
from dsm5_hpo.training.trainer import FitResult, Trainer
from dsm5_hpo.utils.seeding import seed_everything

METRIC = "criteria_auroc"
EVERY = 7


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_restored_determinism() -> Iterator[None]:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@dataclass
class Setup:
    config: StudyConfig
    model_path: Path
    data: PreparedData

    @property
    def validation(self) -> EvaluationData:
        split = self.data.splits["validation"]
        return EvaluationData(split.examples, split.features)

    def model(self, seed: int = 42) -> DualHeadModel:
        seed_everything(seed)
        return DualHeadModel(load_encoder(self.model_path), dropout=self.config.train.dropout)


@dataclass
class Run:
    result: FitResult
    points: list[ReportPoint] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    tracker: NullRunTracker = field(default_factory=NullRunTracker)

    def logged(
        self,
        without: tuple[str, ...] = (
            "epoch_seconds",  # wall time of each epoch and of its validation
            "val_seconds",
            *MEMORY_METRICS,  # the process's memory, not the training
            STEP_METRIC.format(metric=METRIC),
        ),
    ) -> list:
        return [(k, v, s) for k, v, s in self.tracker.metrics if k not in without]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Setup:
    config = compose_tiny(
        tmp_path_factory.mktemp("experiments"), model_cache, "train.device=cpu", "data.max_posts=12"
    )
    path = resolve_model(config.model, cache_dir=model_cache).path
    return Setup(config, path, prepare_data(config.data, load_tokenizer(path), seed=config.train.seed))


def fit(
    setup: Setup, every: int, *, checkpoints: Path | None = None, stop_at: int | None = None, seed: int = 42
) -> Run:
    """Train the tiny model with reports every ``every`` steps; ``stop_at``: the report step that raises."""
    model = setup.model(seed)
    run = Run(FitResult(0.0, -1, {}))

    def report(point: ReportPoint, metrics: dict[str, float | None]) -> None:
        run.points.append(point)
        run.values.append(float(metrics[METRIC] or 0.0))
        if point.step == stop_at:
            raise Stopped(point)

    manager = None
    if checkpoints is not None:
        manager = CheckpointManager(
            checkpoints,
            trial_id="t",
            architecture_signature=architecture_signature(model),
            head_config=model.head_config(),
            asynchronous=False,
        )
    trainer = Trainer(
        model,
        setup.config.train,
        criteria=setup.data.criteria,
        metric=METRIC,
        max_answer_tokens=setup.config.data.max_answer_tokens,
        tracker=run.tracker,
        checkpoints=manager,
        progress=False,
        reports=Reports(every, report, setup.validation),
    )
    run.result = trainer.fit(setup.data.splits["train"].features, setup.validation)
    return run


class Stopped(Exception):
    def __init__(self, point: ReportPoint) -> None:
        super().__init__(f"stopped at step {point.step}")
        self.point = point


@pytest.fixture(scope="module")
def per_epoch(setup: Setup) -> Run:
    return fit(setup, 0)


@pytest.fixture(scope="module")
def per_step(setup: Setup) -> Run:
    return fit(setup, EVERY)


def test_per_epoch_reports_are_the_epochs(per_epoch: Run) -> None:
    assert per_epoch.points == [ReportPoint(0, 0, True), ReportPoint(1, 1, True)]
    assert not [k for k, _, _ in per_epoch.tracker.metrics if k.startswith("val_step_")]


def test_step_reports_are_every_n_steps_and_each_epochs_last_step(per_step: Run) -> None:
    steps = [p.step for p in per_step.points]
    assert steps == sorted(set(steps))  # monotonic, never twice
    ends = [p for p in per_step.points if p.end_of_epoch]
    assert [p.epoch for p in ends] == [0, 1]
    last_steps = [s for k, _, s in per_step.tracker.metrics if k == "train_loss"]
    assert ends[-1].step == max(last_steps)  # the end of the trial at its last optimizer step
    inside = [p for p in per_step.points if not p.end_of_epoch]
    assert inside and all(p.step % EVERY == 0 for p in inside)
    assert {p.epoch for p in inside} == {0, 1}
    # Every report step is in the tracker's step series, with the value the callback got.
    series = [(s, v) for k, v, s in per_step.tracker.metrics if k == STEP_METRIC.format(metric=METRIC)]
    assert series == [(p.step, v) for p, v in zip(per_step.points, per_step.values, strict=True)]


def test_validating_inside_epochs_changes_nothing_of_the_training(per_epoch: Run, per_step: Run) -> None:
    assert per_step.result.history == per_epoch.result.history
    assert (per_step.result.best_value, per_step.result.best_epoch) == (
        per_epoch.result.best_value,
        per_epoch.result.best_epoch,
    )
    # Every training loss and epoch metric, bit for bit: dropout was back on after each validation.
    assert per_step.logged() == per_epoch.logged()
    ends = [v for p, v in zip(per_step.points, per_step.values, strict=True) if p.end_of_epoch]
    assert ends == per_epoch.values


def test_a_stop_inside_an_epoch_stops_there_and_a_resume_reaches_the_same_reports(
    setup: Setup, per_step: Run, tmp_path: Path
) -> None:
    end_of_first = next(p for p in per_step.points if p.end_of_epoch)
    inside_second = next(p for p in per_step.points if p.epoch == 1 and not p.end_of_epoch)
    with pytest.raises(Stopped) as stopped:
        fit(setup, EVERY, checkpoints=tmp_path / "checkpoints", stop_at=inside_second.step)
    assert stopped.value.point == inside_second
    # A new process (other initial weights) resumes from epoch 0's checkpoint: it reports epoch 0's end
    # again (the objective skips steps Optuna has), then every report of epoch 1 as the straight run.
    resumed = fit(setup, EVERY, checkpoints=tmp_path / "checkpoints", seed=999)
    later = [
        (p, v) for p, v in zip(per_step.points, per_step.values, strict=True) if p.step >= end_of_first.step
    ]
    assert list(zip(resumed.points, resumed.values, strict=True)) == later
    assert resumed.result.history == per_step.result.history
