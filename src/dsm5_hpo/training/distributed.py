"""The processes of one DDP trial (train.distributed=ddp): who each one is, and what they agree on.

Every rank trains on its shard of the same epoch batches, with DistributedDataParallel averaging the
gradients; rank 0 alone validates, logs, checkpoints and runs the epoch callback, and its outcome
(a value, or the exception that stops the trial) reaches every rank, so all ranks end together with
the same FitResult. ``SINGLE_PROCESS`` (rank 0 of 1) makes every helper here the identity, so the
Trainer has one code path and a one-process trial computes exactly what it did before DDP existed.

Ranks start the way torchrun starts them: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
in the environment (``rank_environment`` builds them), then ``init_distributed``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from dsm5_hpo.errors import ConfigError, TrainingError
from dsm5_hpo.models.precision import resolve_device
from dsm5_hpo.utils.seeding import seed_everything

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What each rank's process needs in its environment (torchrun sets all five)."""
DEFAULT_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits in a collective: the others wait while rank 0 validates and commits a checkpoint."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in its trial: rank ``rank`` of ``world_size`` on ``device``."""

    rank: int = 0
    world_size: int = 1
    backend: str = ""
    """'gloo' (CPU) or 'nccl' (CUDA); '' = no process group (a single process)."""
    device: torch.device | None = None
    """The rank's training device (cuda:LOCAL_RANK or cpu); None = train.device decides."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, logs, checkpoints and decides on pruning."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def _comm_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo takes CPU ones.
        return self.device if self.backend == "nccl" and self.device is not None else torch.device("cpu")


SINGLE_PROCESS = DistributedContext()


def rank_environment(
    rank: int, world_size: int, master_port: int, master_addr: str = "127.0.0.1"
) -> dict[str, str]:
    """The environment variables rank ``rank`` of a one-machine trial starts with (LOCAL_RANK = RANK)."""
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }


def _environment(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise TrainingError(
            f"train.distributed=ddp: the environment variable {name} is not set; start each of the trial's "
            f"processes with {', '.join(ENVIRONMENT)} (torchrun sets them; see training/distributed.py)"
        )
    return value


def _environment_int(environ: Mapping[str, str], name: str) -> int:
    value = _environment(environ, name)
    try:
        return int(value)
    except ValueError:
        raise TrainingError(f"train.distributed=ddp: {name}={value!r} is not an integer") from None


def context_from_environment(
    device: str = "auto", environ: Mapping[str, str] | None = None
) -> DistributedContext:
    """This rank's context from the environment (no process group yet): cuda:LOCAL_RANK with NCCL when
    ``device`` (train.device) resolves to CUDA, else the CPU with gloo."""
    environ = os.environ if environ is None else environ
    rank, world_size, local_rank = (_environment_int(environ, name) for name in ENVIRONMENT[:3])
    for name in ENVIRONMENT[3:]:
        _environment(environ, name)  # init_distributed reads them: refuse a missing one here, by name
    if not 0 <= rank < world_size:
        raise TrainingError(
            f"train.distributed=ddp: RANK={rank} is outside 0..WORLD_SIZE-1 ({world_size - 1})"
        )
    if device.startswith("cuda:"):
        raise ConfigError(
            f"config key 'train.device': {device!r} with train.distributed=ddp; each process uses "
            "cuda:LOCAL_RANK: set train.device=cuda (or auto) and pick the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if resolve_device(device).type == "cuda":
        return DistributedContext(rank, world_size, "nccl", torch.device("cuda", local_rank))
    return DistributedContext(rank, world_size, "gloo", torch.device("cpu"))


def init_distributed(
    device: str = "auto",
    *,
    environ: Mapping[str, str] | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> DistributedContext:
    """Join the trial's process group (blocks until all WORLD_SIZE ranks have joined)."""
    environ = os.environ if environ is None else environ
    context = context_from_environment(device, environ)
    if context.device is not None and context.device.type == "cuda":
        torch.cuda.set_device(context.device)  # NCCL's collectives and broadcast_object_list use it
    # An explicit tcp:// address rather than env:// so that ``environ`` (not only os.environ) is what counts.
    dist.init_process_group(
        context.backend,
        init_method=f"tcp://{environ['MASTER_ADDR']}:{environ['MASTER_PORT']}",
        rank=context.rank,
        world_size=context.world_size,
        timeout=timeout,
    )
    logger.info(
        "rank %d of %d joined (%s on %s)", context.rank, context.world_size, context.backend, context.device
    )
    return context


def close_distributed(context: DistributedContext) -> None:
    """Leave the process group (nothing for a single process or when it is gone already)."""
    if context.backend and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_process(
    device: str = "auto", *, environ: Mapping[str, str] | None = None
) -> Iterator[DistributedContext]:
    """``init_distributed`` for the block, ``close_distributed`` after it, whatever happens."""
    context = init_distributed(device, environ=environ)
    try:
        yield context
    finally:
        close_distributed(context)


@dataclass(frozen=True)
class Shard:
    """One rank's micro-batches of an epoch; the last ``padding`` of them are filler (loss weight 0)."""

    batches: list[list[int]]
    padding: int = 0


def shard_batches(batches: Sequence[list[int]], rank: int, world_size: int) -> Shard:
    """Rank ``rank``'s batches: every world_size-th one, starting at its rank.

    Every rank must run the same number of backward passes (each is an all-reduce), so when the
    count does not divide, the remainder is PADDED, not dropped: the ranks short of a batch repeat
    the epoch's first batches with loss weight 0 (a zero gradient in the average). So every window
    still trains once per epoch, and the step over batches k..k+world_size-1 is exactly the step of
    one process with gradient_accumulation_steps x world_size, partial last step included.
    """
    if world_size == 1:
        return Shard(list(batches))
    missing = -len(batches) % world_size
    padded = [*batches, *(batches[i % len(batches)] for i in range(missing))]
    mine = padded[rank::world_size]
    real = len(range(rank, len(batches), world_size))
    return Shard(mine, len(mine) - real)


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A 64-bit seed of (seed, epoch, rank): distinct per rank, the same on every run."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}:{rank}".encode()).digest()[:8], "little")


def seed_epoch(context: DistributedContext, seed: int, epoch: int) -> None:
    """DDP: seed the global RNGs (dropout) of this rank for ``epoch``; one process: nothing.

    Reseeding per (seed, epoch, rank) keeps the ranks' dropout masks distinct (one seed would drop
    the same units on every rank) and makes resuming at epoch e draw what the uninterrupted run drew,
    without saving every rank's RNG state in rank 0's checkpoint.
    """
    if context.enabled:
        seed_everything(rank_seed(seed, epoch, context.rank))


def wrap_model(context: DistributedContext, model: nn.Module) -> nn.Module:
    """The module that training runs forward through: DDP across the ranks, or ``model`` itself."""
    if not context.enabled:
        return model
    device_ids = (
        [context.device.index] if context.device is not None and context.device.type == "cuda" else None
    )
    # find_unused_parameters: AutoModel keeps its pooler, and which head parameters a forward uses
    # depends on the heads config; DDP must not wait for gradients that never come.
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[object]:
    """Around a backward pass: DDP all-reduces only when ``sync`` (an accumulation group's last batch)."""
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def sum_over_ranks(context: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (a new tensor; ``values`` itself for one process)."""
    if not context.enabled:
        return values
    total = values.detach().to(context._comm_device, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(values.device)


def stop_flag(context: DistributedContext, stop: bool) -> bool:
    """True on every rank when any rank passes True: a stop decided on rank 0 (pruning, a signal, an
    error) reaches the others, which pass False. One process: ``stop``."""
    if not context.enabled:
        return stop
    flag = torch.tensor([int(stop)], dtype=torch.int32, device=context._comm_device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def broadcast_object(context: DistributedContext, value: T) -> T:
    """Rank 0's ``value`` on every rank (the others' ``value`` is ignored); pickled, so keep it small."""
    if not context.enabled:
        return value
    holder: list[object] = [value if context.is_main else None]
    dist.broadcast_object_list(holder, src=0, device=context._comm_device)
    return holder[0]  # type: ignore[return-value]


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier(
            device_ids=[context.device.index] if context.backend == "nccl" and context.device else None
        )


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (optuna.TrialPruned does), else a TrainingError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any pickling failure: send its text instead
        return TrainingError(f"rank 0 stopped the trial: {type(error).__name__}: {error}")
    return error


def on_main_rank(context: DistributedContext, action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 only; every rank returns its value, or raises what it raised.

    The other ranks wait in the collectives meanwhile (they are the barrier). Rank 0 re-raises its
    own exception (with its traceback); the others raise a copy, so e.g. optuna.TrialPruned stops
    every rank at the same epoch. One process: ``action()``, exceptions untouched.
    """
    if not context.enabled:
        return action()
    value: T | None = None
    error: BaseException | None = None
    if context.is_main:
        try:
            value = action()
        except BaseException as caught:  # noqa: BLE001 - re-raised below; Interrupted must stop the others too
            error = caught
    if stop_flag(context, error is not None):
        copied = broadcast_object(context, _portable(error) if error is not None else None)
        raise error if error is not None else copied or TrainingError("rank 0 stopped the trial")
    return broadcast_object(context, value)  # type: ignore[return-value]
