"""The training loop on the tiny model and tiny data: devices, data order, fit, logging, determinism."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import dsm5_hpo.training.trainer as trainer_module
from conftest import compose_tiny
from dsm5_hpo.checkpointing.manager import (
    CheckpointInfo,
    CheckpointManager,
    TrainingState,
    architecture_signature,
)
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.features import WindowFeatures
from dsm5_hpo.data.prepare import PreparedData, prepare_data
from dsm5_hpo.errors import ConfigError, TrainingError
from dsm5_hpo.evaluation.prediction import EvaluationData, criteria_prior_offset, predict
from dsm5_hpo.models.loading import load_encoder, load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import DualHeadModel
from dsm5_hpo.models.precision import autocast, has_fast_bf16, resolve_device, resolve_precision
from dsm5_hpo.tracking.tracker import NullRunTracker
from dsm5_hpo.training.epochs import epoch_batches, epoch_order
from dsm5_hpo.training.optimization import build_optimizer
from dsm5_hpo.training.trainer import FitResult, Trainer
from dsm5_hpo.utils.seeding import seed_everything

METRIC = "joint_score"


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_restored_determinism() -> Iterator[None]:
    """One intra-op thread: on 2 cores shared with other jobs, 2 threads run ~10x slower (spin-waiting).

    seed_everything turns on deterministic algorithms process-wide; switch them back afterwards.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
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
    def train(self) -> WindowFeatures:
        return self.data.splits["train"].features

    @property
    def validation(self) -> EvaluationData:
        split = self.data.splits["validation"]
        return EvaluationData(split.examples, split.features)

    def model(self, seed: int | None = None) -> DualHeadModel:
        seed_everything(self.config.train.seed if seed is None else seed)
        return DualHeadModel(load_encoder(self.model_path), dropout=self.config.train.dropout)

    def trainer(self, model: DualHeadModel, config: StudyConfig | None = None, **kwargs: Any) -> Trainer:
        config = config or self.config
        return Trainer(
            model,
            config.train,
            criteria=self.data.criteria,
            metric=METRIC,
            max_answer_tokens=config.data.max_answer_tokens,
            progress=False,
            **kwargs,
        )

    def predict(self, model: DualHeadModel, criteria_logit_offset: float = 0.0) -> list:
        return predict(
            model,
            self.validation,
            device=torch.device("cpu"),
            precision="fp32",
            batch_size=64,
            max_answer_tokens=self.config.data.max_answer_tokens,
            null_score_margin=self.config.train.null_score_margin,
            criteria_logit_offset=criteria_logit_offset,
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Setup:
    config = compose_tiny(tmp_path_factory.mktemp("experiments"), model_cache, "train.device=cpu")
    assert config.train.max_epochs == 2
    path = resolve_model(config.model, cache_dir=model_cache).path
    data = prepare_data(config.data, load_tokenizer(path), seed=config.train.seed)
    assert len(data.splits["train"].features) > 0 and data.splits["validation"].examples
    return Setup(config, path, data)


def manager_for(folder: Path, model: DualHeadModel, **kwargs: Any) -> CheckpointManager:
    return CheckpointManager(
        folder,
        trial_id="t-1",
        architecture_signature=architecture_signature(model),
        head_config=model.head_config(),
        **kwargs,
    )


class SnapshotManager(CheckpointManager):
    """A real CheckpointManager that also keeps a copy of every state it saved."""

    saved: list[TrainingState]

    def save(self, state: TrainingState) -> CheckpointInfo:
        # The state holds the live weights (the manager copies them when it writes): keep a copy.
        copied = dataclasses.replace(state, model_state={k: v.clone() for k, v in state.model_state.items()})
        self.saved = [*getattr(self, "saved", []), copied]
        return super().save(state)


@dataclass
class Fitted:
    result: FitResult
    tracker: NullRunTracker
    calls: list[tuple[int, dict[str, float | None]]]
    sink: SnapshotManager
    folder: Path
    trainer: Trainer
    metrics_by_key: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _by_key(tracker: NullRunTracker) -> dict[str, list[tuple[int, float]]]:
    grouped: dict[str, list[tuple[int, float]]] = {}
    for key, value, step in tracker.metrics:
        grouped.setdefault(key, []).append((step, value))
    return grouped


@pytest.fixture(scope="module")
def fitted(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    folder = tmp_path_factory.mktemp("trial") / "checkpoints"
    tracker = NullRunTracker()
    calls: list[tuple[int, dict[str, float | None]]] = []
    model = setup.model()
    sink = SnapshotManager(
        folder,
        trial_id="t-1",
        architecture_signature=architecture_signature(model),
        head_config=model.head_config(),
    )
    trainer = setup.trainer(
        model,
        tracker=tracker,
        checkpoints=sink,
        epoch_callback=lambda epoch, metrics: calls.append((epoch, metrics)),
    )
    result = trainer.fit(setup.train, setup.validation)
    return Fitted(result, tracker, calls, sink, folder, trainer, _by_key(tracker))


# --- devices and precision ----------------------------------------------------------------------


def test_auto_device_is_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_device_is_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_this_machine_resolves_auto_to_a_real_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_config_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train\.device"):
        resolve_device(name)


def test_autocast_choices_on_cpu() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match=r"train\.precision.*fp16"):
        autocast(cpu, "fp16")
    bf16 = autocast(cpu, "bf16")
    assert isinstance(bf16, torch.autocast)
    with bf16:
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_enabled("cpu")
    with autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_the_device_runs_it_natively(fast: bool, expected: str) -> None:
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert resolve_precision("auto", device, fast_bf16=lambda _: fast) == expected
        for explicit in ("fp32", "bf16", "fp16"):
            assert resolve_precision(explicit, device, fast_bf16=lambda _: fast) == explicit


def test_this_cpu_gets_bf16_from_auto_exactly_when_it_has_avx512_bf16_or_amx() -> None:
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert has_fast_bf16(torch.device("cpu")) == native
    with autocast(torch.device("cpu"), "auto"):
        assert torch.is_autocast_enabled("cpu") == native


def test_cpu_helpers_missing_from_torch_mean_no_fast_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert not has_fast_bf16(torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_fit_records_the_precision_auto_became(setup: Setup) -> None:
    config = setup.config.with_train(precision="auto", max_epochs=1)
    tracker = NullRunTracker()
    trainer = setup.trainer(setup.model(), config, tracker=tracker)
    trainer.fit(setup.train, setup.validation)
    assert tracker.tags["precision"] == resolve_precision("auto", torch.device("cpu")) == trainer.precision
    assert tracker.tags["device"] == "cpu"


def test_fp16_on_cpu_is_refused_when_the_trainer_is_built(setup: Setup) -> None:
    config = setup.config.with_train(precision="fp16", device="cpu")
    with pytest.raises(ConfigError, match=r"train\.precision"):
        setup.trainer(setup.model(), config)


# --- data order -------------------------------------------------------------------------------------


def _windows(labels: list[int]) -> WindowFeatures:
    n = len(labels)
    return WindowFeatures(
        [[1, 2]] * n,
        [[0, 0]] * n,
        [[None, (0, 1)]] * n,
        [0] * n,
        [0] * n,
        labels,
        list(range(n)),
        pad_token_id=0,
    )


def test_epoch_order_is_a_deterministic_permutation() -> None:
    features = _windows([i % 3 == 0 for i in range(200)])
    order = epoch_order(features, seed=7, epoch=0, negative_sampling=1.0)
    assert sorted(order) == list(range(200))
    assert order != list(range(200))
    assert epoch_order(features, seed=7, epoch=0, negative_sampling=1.0) == order
    assert epoch_order(features, seed=7, epoch=1, negative_sampling=1.0) != order
    assert epoch_order(features, seed=8, epoch=0, negative_sampling=1.0) != order


def test_epoch_order_ignores_the_global_rng() -> None:
    features = _windows([i % 2 for i in range(100)])
    torch.manual_seed(1)
    first = epoch_order(features, seed=3, epoch=2, negative_sampling=0.5)
    torch.manual_seed(999)
    torch.rand(10)
    assert epoch_order(features, seed=3, epoch=2, negative_sampling=0.5) == first


@pytest.mark.parametrize("share", [0.1, 0.3, 0.7])
def test_negative_sampling_keeps_every_positive_and_a_share_of_negatives(share: float) -> None:
    labels = [1 if i % 10 == 0 else 0 for i in range(2000)]  # 200 positives, 1800 negatives
    features = _windows(labels)
    positives = {i for i, label in enumerate(labels) if label}
    kept_negatives: list[int] = []
    for epoch in range(3):
        order = epoch_order(features, seed=42, epoch=epoch, negative_sampling=share)
        assert len(order) == len(set(order))
        assert positives <= set(order)
        negatives = [i for i in order if not labels[i]]
        # binomial(1800, share): 5 standard deviations either side
        sd = math.sqrt(1800 * share * (1 - share))
        assert abs(len(negatives) - 1800 * share) < 5 * sd
        kept_negatives.append(len(negatives))
        assert order == epoch_order(features, seed=42, epoch=epoch, negative_sampling=share)
    sets = [set(epoch_order(features, seed=42, epoch=e, negative_sampling=share)) for e in range(2)]
    assert sets[0] != sets[1]  # a fresh share of negatives each epoch


def test_epoch_batches_group_lengths_over_the_same_windows_as_the_epoch_order(setup: Setup) -> None:
    train = dataclasses.replace(setup.config.train, batch_size=4, length_group_size=3, negative_sampling=0.5)
    lengths = [len(ids) for ids in setup.train.input_ids]
    order = epoch_order(setup.train, seed=train.seed, epoch=1, negative_sampling=0.5)
    grouped = epoch_batches(setup.train, train, epoch=1)
    assert sorted(i for batch in grouped for i in batch) == sorted(order)
    assert grouped == epoch_batches(setup.train, train, epoch=1)  # a function of (config, epoch)
    assert grouped != epoch_batches(setup.train, train, epoch=2)
    assert max(lengths[i] for i in grouped[0]) == max(lengths[i] for i in order)
    plain = epoch_batches(setup.train, dataclasses.replace(train, group_by_length=False), epoch=1)
    assert plain == [order[k : k + 4] for k in range(0, len(order), 4)]

    def padded(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    assert padded(grouped) < padded(plain)


def test_epoch_order_shuffles_positives_among_negatives() -> None:
    labels = [1] * 50 + [0] * 50
    order = epoch_order(_windows(labels), seed=0, epoch=0, negative_sampling=0.5)
    first_negative = next(k for k, i in enumerate(order) if not labels[i])
    assert first_negative < 25  # positives are not all up front


# --- fit ----------------------------------------------------------------------------------------------


def test_fit_returns_a_history_per_epoch(fitted: Fitted) -> None:
    result = fitted.result
    assert result.epochs_run == 2
    assert len(result.history) == 2
    assert result.best_epoch in (0, 1)
    values = [epoch[METRIC] for epoch in result.history]
    assert all(v is not None and math.isfinite(v) for v in values)
    assert result.best_value == max(values)  # type: ignore[type-var]
    assert result.best_epoch == values.index(result.best_value)  # earliest of any tie
    assert result.best_metrics == result.history[result.best_epoch]
    for metrics in result.history:
        assert 0.0 <= metrics[METRIC] <= 1.0  # type: ignore[operator]
        assert "criteria_f1_macro" in metrics and "evidence_token_f1" in metrics


def test_fit_logs_per_step_train_loss(fitted: Fitted, setup: Setup) -> None:
    train_loss = fitted.metrics_by_key["train_loss"]
    steps = [step for step, _ in train_loss]
    assert len(steps) >= 4
    assert steps == sorted(set(steps)), "steps must strictly increase"
    assert steps[0] == setup.config.train.log_every_n_steps
    assert all(math.isfinite(v) and v > 0 for _, v in train_loss)
    for key in ("train_loss_criteria", "train_loss_evidence", "learning_rate_encoder"):
        assert [step for step, _ in fitted.metrics_by_key[key]] == steps
    # the loss is the weighted sum of its parts (weights 1 and 1 here)
    parts = zip(
        train_loss,
        fitted.metrics_by_key["train_loss_criteria"],
        fitted.metrics_by_key["train_loss_evidence"],
        strict=True,
    )
    for (_, total), (_, crit), (_, evid) in parts:
        assert total == pytest.approx(crit + evid, rel=1e-5)
    # every step is a logging step or the last step of an epoch
    every = setup.config.train.log_every_n_steps
    irregular = [s for s in steps if s % every]
    assert len(irregular) <= 2


def test_fit_logs_validation_metrics_per_epoch(fitted: Fitted) -> None:
    val = fitted.metrics_by_key[f"val_{METRIC}"]
    assert [step for step, _ in val] == [0, 1]
    assert [v for _, v in val] == [h[METRIC] for h in fitted.result.history]
    for key in (
        "train_loss_epoch",
        "epoch_seconds",
        "val_seconds",
        "epoch",
        "val_criteria_f1_macro",
        "val_evidence_token_f1",
    ):
        assert [step for step, _ in fitted.metrics_by_key[key]] == [0, 1], key
    assert [v for _, v in fitted.metrics_by_key["epoch"]] == [0.0, 1.0]
    losses = [v for _, v in fitted.metrics_by_key["train_loss_epoch"]]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    # Where the time went (hpo/trial_timing.py reads these): training and validation of each epoch,
    # and the instants of the first batch (the end of a trial's set-up) and of the first optimizer step
    # done (the end of its start-up).
    assert all(v > 0 for key in ("epoch_seconds", "val_seconds") for _, v in fitted.metrics_by_key[key])
    trainer = fitted.trainer
    assert trainer.training_started_at is not None and trainer.first_step_at is not None
    assert trainer.training_started_at < trainer.first_step_at < time.perf_counter()


def test_epoch_callback_is_called_after_each_epoch(fitted: Fitted) -> None:
    assert [epoch for epoch, _ in fitted.calls] == [0, 1]
    assert [metrics for _, metrics in fitted.calls] == fitted.result.history


def test_checkpoints_are_saved_and_the_best_loads_into_a_fresh_model(fitted: Fitted, setup: Setup) -> None:
    result = fitted.result
    assert [state.epoch for state in fitted.sink.saved] == [0, 1]  # one per epoch
    best = fitted.sink.best()
    assert best is not None and best.epoch == result.best_epoch
    assert best.metric_name == METRIC and best.metric_value == result.best_value

    fresh = setup.model(seed=123)
    fresh.load_state_dict(fitted.sink.load_weights(best))
    best_state = fitted.sink.saved[result.best_epoch].model_state
    loaded = fresh.state_dict()
    assert loaded.keys() == best_state.keys()
    assert all(torch.equal(loaded[k], best_state[k]) for k in best_state)

    reference = setup.model(seed=5)
    reference.load_state_dict(best_state)
    assert setup.predict(fresh) == setup.predict(reference)


def test_interrupted_fit_resumes_from_its_checkpoint_with_identical_results(
    fitted: Fitted, setup: Setup, tmp_path: Path
) -> None:
    class Crash(Exception):
        pass

    def crash_after_first_epoch(epoch: int, metrics: dict[str, float | None]) -> None:
        if epoch == 0:
            raise Crash

    folder = tmp_path / "checkpoints"
    model = setup.model()
    with pytest.raises(Crash):
        setup.trainer(
            model, checkpoints=manager_for(folder, model), epoch_callback=crash_after_first_epoch
        ).fit(setup.train, setup.validation)
    # A new process: a freshly built model (its RNG draws differ), the same checkpoint folder.
    tracker, calls = NullRunTracker(), []
    model = setup.model(seed=999)
    trainer = setup.trainer(
        model,
        tracker=tracker,
        checkpoints=manager_for(folder, model),
        epoch_callback=lambda epoch, metrics: calls.append(epoch),
    )
    result = trainer.fit(setup.train, setup.validation)
    assert trainer.resumed_from is not None and trainer.resumed_from.epoch == 0
    assert calls == [0, 1]  # the restored epoch is reported again, then epoch 1 runs
    assert [k for k, _, step in tracker.metrics if k == f"val_{METRIC}"] == [f"val_{METRIC}"]  # only epoch 1
    assert result.history == fitted.result.history
    assert result.best_value == fitted.result.best_value and result.best_epoch == fitted.result.best_epoch
    resumed_losses = [(step, v) for k, v, step in tracker.metrics if k == "train_loss"]
    first_step = resumed_losses[0][0]
    assert first_step > fitted.metrics_by_key["train_loss"][0][0]  # epoch 0's steps were not re-run
    assert resumed_losses == [(s, v) for s, v in fitted.metrics_by_key["train_loss"] if s >= first_step]


def test_same_seed_gives_identical_metrics(fitted: Fitted, setup: Setup) -> None:
    tracker = NullRunTracker()
    result = setup.trainer(setup.model(), tracker=tracker).fit(setup.train, setup.validation)
    assert result.best_epoch == fitted.result.best_epoch
    for again, first in zip(result.history, fitted.result.history, strict=True):
        assert again.keys() == first.keys()
        for key, value in first.items():
            if value is None:
                assert again[key] is None, key
            else:
                assert again[key] is not None and abs(again[key] - value) < 1e-9, key  # type: ignore[operator]
    again_losses = _by_key(tracker)["train_loss"]
    assert [s for s, _ in again_losses] == [s for s, _ in fitted.metrics_by_key["train_loss"]]
    assert [v for _, v in again_losses] == pytest.approx(
        [v for _, v in fitted.metrics_by_key["train_loss"]], abs=1e-9
    )


def test_exception_from_the_epoch_callback_stops_training(setup: Setup, tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    seen: list[int] = []

    def callback(epoch: int, metrics: dict[str, float | None]) -> None:
        seen.append(epoch)
        raise Stop(f"pruned after epoch {epoch}")

    tracker = NullRunTracker()
    model = setup.model()
    sink = SnapshotManager(
        tmp_path / "run" / "checkpoints",
        trial_id="t",
        architecture_signature=architecture_signature(model),
        head_config=model.head_config(),
    )
    trainer = setup.trainer(model, tracker=tracker, checkpoints=sink, epoch_callback=callback)
    with pytest.raises(Stop, match="epoch 0"):
        trainer.fit(setup.train, setup.validation)
    assert seen == [0]
    assert [state.epoch for state in sink.saved] == [0]  # the epoch was checkpointed before the callback ran
    val_steps = [step for key, _, step in tracker.metrics if key == f"val_{METRIC}"]
    assert val_steps == [0]


def test_gradient_accumulation_runs_and_logs(setup: Setup) -> None:
    config = setup.config.with_train(gradient_accumulation_steps=2, max_epochs=1, log_every_n_steps=1)
    tracker = NullRunTracker()
    result = setup.trainer(setup.model(), config, tracker=tracker).fit(setup.train, setup.validation)
    assert result.epochs_run == 1
    assert result.best_value is not None and math.isfinite(result.best_value)

    train = config.train
    micro_batches = len(epoch_batches(setup.train, train, epoch=0))
    steps = [step for key, _, step in tracker.metrics if key == "train_loss"]
    assert steps == list(range(1, math.ceil(micro_batches / 2) + 1))
    assert all(math.isfinite(v) for key, v, _ in tracker.metrics if key == "train_loss")


def test_nan_loss_is_a_training_error(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    real = trainer_module.joint_loss

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        parts = real(*args, **kwargs)
        parts.total = parts.total * float("nan")
        return parts

    monkeypatch.setattr(trainer_module, "joint_loss", poisoned)
    tracker = NullRunTracker()
    config = setup.config.with_train(max_epochs=1)
    with pytest.raises(TrainingError, match="learning_rate") as caught:
        setup.trainer(setup.model(), config, tracker=tracker).fit(setup.train, setup.validation)
    assert "nan" in str(caught.value).lower()
    assert not [key for key, _, _ in tracker.metrics if key.startswith("val_")]


def test_empty_training_split_is_a_training_error(setup: Setup) -> None:
    empty = WindowFeatures([], [], [], [], [], [], [], pad_token_id=0)
    with pytest.raises(TrainingError, match="no windows"):
        setup.trainer(setup.model()).fit(empty, setup.validation)


def test_optimizer_groups_split_lr_and_weight_decay(setup: Setup) -> None:
    model = setup.model()
    optimizer = build_optimizer(model, setup.config.train)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = 0
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            seen += 1
            expected_lr = (
                setup.config.train.learning_rate_encoder
                if name.startswith("encoder.")
                else setup.config.train.learning_rate_heads
            )
            assert group["lr"] == expected_lr, name
            if name.endswith(".bias") or "LayerNorm" in name:
                assert group["weight_decay"] == 0.0, name
    assert seen == sum(1 for p in model.parameters() if p.requires_grad)


def test_negative_sampling_prior_is_undone_at_evaluation(setup: Setup) -> None:
    model = setup.model()
    full = setup.predict(model)
    sampled = setup.config.with_train(negative_sampling=0.25).train
    assert criteria_prior_offset(setup.config.with_train(negative_sampling=1.0).train) == 0.0
    shifted = setup.predict(model, criteria_logit_offset=criteria_prior_offset(sampled))
    for before, after in zip(full, shifted, strict=True):
        odds_before, odds_after = before.prob / (1 - before.prob), after.prob / (1 - after.prob)
        assert odds_after == pytest.approx(odds_before * 0.25, rel=1e-4)


# --- how the steps run: fast dropout, gradient checkpointing, compile; peak memory -----------------


def test_fit_tags_how_its_steps_ran_and_logs_peak_memory(fitted: Fitted) -> None:
    tags = fitted.tracker.tags
    assert (tags["fast_dropout"], tags["compiled"], tags["gradient_checkpointing"]) == (
        "true",
        "false",
        "false",
    )
    assert tags["rss_peak_scope"] in ("trial", "process")
    peaks = fitted.metrics_by_key["peak_rss_bytes"]
    assert [step for step, _ in peaks] == [0, 1] and all(v > 50e6 for _, v in peaks)
    assert "peak_cuda_allocated_bytes" not in fitted.metrics_by_key  # CPU


def _losses(setup: Setup, config: StudyConfig) -> tuple[list[float], dict[str, str]]:
    tracker = NullRunTracker()
    setup.trainer(setup.model(), config, tracker=tracker).fit(setup.train, setup.validation)
    return [v for _, v in _by_key(tracker)["train_loss"]], tracker.tags


def test_gradient_checkpointing_trains_exactly_as_without_it(setup: Setup) -> None:
    plain = setup.config.with_train(max_epochs=1, fast_dropout=False)
    losses, tags = _losses(setup, plain)
    checkpointed, tags_on = _losses(setup, plain.with_train(gradient_checkpointing=True))
    assert (tags["gradient_checkpointing"], tags_on["gradient_checkpointing"]) == ("false", "true")
    # Recomputed activations, the same dropout masks (the RNG state is replayed): the same steps.
    assert checkpointed == pytest.approx(losses, rel=1e-5)


def test_fast_dropout_is_off_when_asked_and_under_gradient_checkpointing(setup: Setup) -> None:
    _, tags = _losses(setup, setup.config.with_train(max_epochs=1, fast_dropout=False))
    assert tags["fast_dropout"] == "false"
    _, tags = _losses(setup, setup.config.with_train(max_epochs=1, gradient_checkpointing=True))
    # A checkpointed layer is recomputed in backward, outside the forward's mode: torch's dropout there.
    assert (tags["fast_dropout"], tags["gradient_checkpointing"]) == ("false", "true")
