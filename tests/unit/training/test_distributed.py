"""The DDP helpers that need no process group: sharding, the single-process context, the environment,
per-rank seeds, and what a Trainer on a rank other than 0 keeps (the collectives run in
tests/integration/test_ddp_training.py)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import compose_tiny
from dsm5_hpo.checkpointing.null import NullCheckpointManager
from dsm5_hpo.config import TrainConfig
from dsm5_hpo.errors import ConfigError, TrainingError
from dsm5_hpo.models.loading import resolve_model
from dsm5_hpo.models.multi_task import build_model
from dsm5_hpo.tracking.tracker import NullRunTracker
from dsm5_hpo.training import distributed as ddp
from dsm5_hpo.training.distributed import SINGLE_PROCESS, DistributedContext, shard_batches
from dsm5_hpo.training.epochs import optimizer_steps
from dsm5_hpo.training.trainer import Trainer


@pytest.fixture(autouse=True)
def _restored_rng_and_determinism() -> Iterator[None]:
    """seed_epoch reseeds the global RNGs and turns on deterministic algorithms: put both back."""
    state = torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_rng_state(state)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _batches(count: int) -> list[list[int]]:
    return [[2 * i, 2 * i + 1] for i in range(count)]


def test_one_process_keeps_every_batch_unpadded() -> None:
    shard = shard_batches(_batches(5), 0, 1)
    assert shard.batches == _batches(5) and shard.padding == 0


def test_an_uneven_epoch_is_padded_with_its_first_batches_at_the_end() -> None:
    batches = _batches(5)
    first, second = shard_batches(batches, 0, 2), shard_batches(batches, 1, 2)
    assert first.batches == [batches[0], batches[2], batches[4]] and first.padding == 0
    assert second.batches == [batches[1], batches[3], batches[0]] and second.padding == 1
    three = [shard_batches(batches, rank, 3) for rank in range(3)]
    assert [s.padding for s in three] == [0, 0, 1] and three[2].batches[-1] == batches[0]


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("accumulation", [1, 2, 3])
def test_shards_make_the_steps_of_one_process_accumulating_world_size_times_as_much(
    world_size: int, accumulation: int
) -> None:
    for count in range(1, 14):
        batches = _batches(count)
        shards = [shard_batches(batches, rank, world_size) for rank in range(world_size)]
        lengths = {len(shard.batches) for shard in shards}
        assert lengths == {math.ceil(count / world_size)}, "every rank runs as many backward passes"
        real = sorted(b for s in shards for b in s.batches[: len(s.batches) - s.padding])
        assert real == sorted(batches), "every batch trains once, none twice"
        # Local step j of every rank covers global batches [j*A*W, (j+1)*A*W): one process's step j
        # with gradient_accumulation_steps A*W, the last partial step included.
        group = accumulation * world_size
        for step in range(math.ceil(count / group)):
            local = range(step * accumulation, min((step + 1) * accumulation, len(shards[0].batches)))
            seen = sorted(s.batches[i] for s in shards for i in local if i < len(s.batches) - s.padding)
            assert seen == sorted(batches[step * group : (step + 1) * group])
        per_rank = optimizer_steps(
            [len(shards[0].batches)], TrainConfig(gradient_accumulation_steps=accumulation)
        )
        alone = optimizer_steps([count], TrainConfig(gradient_accumulation_steps=group))
        assert per_rank == alone, "the LR schedule has the same length"


def test_the_single_process_context_makes_every_helper_the_identity() -> None:
    assert (SINGLE_PROCESS.rank, SINGLE_PROCESS.world_size, SINGLE_PROCESS.backend) == (0, 1, "")
    assert SINGLE_PROCESS.is_main and not SINGLE_PROCESS.enabled and SINGLE_PROCESS.device is None
    value = {"a": [1.0]}
    assert ddp.broadcast_object(SINGLE_PROCESS, value) is value
    assert ddp.stop_flag(SINGLE_PROCESS, True) and not ddp.stop_flag(SINGLE_PROCESS, False)
    tensor = torch.ones(3)
    assert ddp.sum_over_ranks(SINGLE_PROCESS, tensor) is tensor
    model = nn.Linear(2, 2)
    assert ddp.wrap_model(SINGLE_PROCESS, model) is model
    with ddp.gradient_sync(model, False):  # no DDP: nothing to hold back
        pass
    assert ddp.on_main_rank(SINGLE_PROCESS, lambda: 7) == 7
    error = TrainingError("as it was")
    with pytest.raises(TrainingError) as raised:
        ddp.on_main_rank(SINGLE_PROCESS, lambda: (_ for _ in ()).throw(error))
    assert raised.value is error
    before = torch.get_rng_state()
    ddp.seed_epoch(SINGLE_PROCESS, 42, 3)
    ddp.barrier(SINGLE_PROCESS)
    ddp.close_distributed(SINGLE_PROCESS)
    assert torch.equal(torch.get_rng_state(), before), "one process keeps its RNG stream"


def _dropout_mask(context: DistributedContext, epoch: int) -> torch.Tensor:
    ddp.seed_epoch(context, 42, epoch)
    return nn.functional.dropout(torch.ones(64), p=0.5, training=True)


def test_each_rank_draws_its_own_dropout_and_the_same_again_for_the_same_epoch() -> None:
    ranks = [DistributedContext(rank, 2, "gloo", torch.device("cpu")) for rank in range(2)]
    first, second = (_dropout_mask(context, 0) for context in ranks)
    assert not torch.equal(first, second), "one seed would drop the same units on every rank"
    assert torch.equal(_dropout_mask(ranks[0], 0), first), "a resumed epoch draws what it drew before"
    assert not torch.equal(_dropout_mask(ranks[0], 1), first)
    seeds = {ddp.rank_seed(42, epoch, rank) for epoch in range(3) for rank in range(4)}
    assert len(seeds) == 12 and all(0 <= seed < 2**64 for seed in seeds)


def test_the_environment_gives_rank_world_size_and_a_cpu_gloo_context() -> None:
    environ = ddp.rank_environment(1, 2, 29501)
    assert environ == {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29501",
    }
    context = ddp.context_from_environment("cpu", environ)
    assert context == DistributedContext(1, 2, "gloo", torch.device("cpu"))
    assert not context.is_main and context.enabled


@pytest.mark.parametrize("missing", ddp.ENVIRONMENT)
def test_a_missing_environment_variable_is_named(missing: str) -> None:
    environ = {k: v for k, v in ddp.rank_environment(0, 2, 29501).items() if k != missing}
    with pytest.raises(TrainingError, match=rf"environment variable {missing} is not set.*torchrun"):
        ddp.context_from_environment("cpu", environ)


def test_bad_environment_values_and_a_pinned_gpu_are_refused() -> None:
    with pytest.raises(TrainingError, match=r"RANK='one' is not an integer"):
        ddp.context_from_environment("cpu", {**ddp.rank_environment(0, 2, 29501), "RANK": "one"})
    with pytest.raises(TrainingError, match=r"RANK=2 is outside 0..WORLD_SIZE-1 \(1\)"):
        ddp.context_from_environment("cpu", ddp.rank_environment(2, 2, 29501))
    with pytest.raises(ConfigError, match=r"'train\.device': 'cuda:1' .* CUDA_VISIBLE_DEVICES"):
        ddp.context_from_environment("cuda:1", ddp.rank_environment(0, 2, 29501))


class _Unpicklable(Exception):
    def __init__(self, required: str, also: str) -> None:
        super().__init__(f"{required} {also}")


def test_an_exception_that_cannot_travel_reaches_the_other_ranks_as_its_text() -> None:
    portable = ddp._portable(_Unpicklable("disk", "gone"))
    assert isinstance(portable, TrainingError) and "_Unpicklable: disk gone" in str(portable)
    fine = TrainingError("picklable")
    assert ddp._portable(fine) is fine and str(pickle.loads(pickle.dumps(fine))) == "picklable"


def test_only_rank_0_logs_checkpoints_calls_back_and_shows_progress(
    tmp_path: Path, model_cache: Path
) -> None:
    config = compose_tiny(tmp_path / "experiments", model_cache, "train.device=cpu")
    model = build_model(resolve_model(config.model, cache_dir=model_cache).path, config)
    tracker, checkpoints = NullRunTracker(), NullCheckpointManager()

    def trainer(rank: int) -> Trainer:
        return Trainer(
            model,
            config.train,
            criteria=config.data.criteria,
            metric="joint_score",
            max_answer_tokens=config.data.max_answer_tokens,
            tracker=tracker,
            epoch_callback=lambda epoch, metrics: None,
            checkpoints=checkpoints,
            progress=True,
            distributed=DistributedContext(
                rank, 2, "gloo", torch.device("cpu")
            ),  # no process group needed here
        )

    main, other = trainer(0), trainer(1)
    assert main.tracker is tracker and main.checkpoints is checkpoints and main.epoch_callback is not None
    assert main.progress and main.device == torch.device("cpu")
    assert other.tracker is not tracker and isinstance(other.tracker, NullRunTracker)
    assert other.checkpoints is not checkpoints and isinstance(other.checkpoints, NullCheckpointManager)
    assert other.epoch_callback is None and not other.progress
