"""The pieces of a training step that do not depend on the trainer's state: the optimizer step
(unscale, clip, step, zero), the per-epoch progress bar, and the state a checkpoint saves."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dsm5_hpo.checkpointing.manager import TrainingState, capture_rng_state


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    max_grad_norm: float,
) -> None:
    """One optimizer step: unscale (fp16), clip to ``max_grad_norm`` (0 = off), step, zero the gradients."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def progress(batches: list[list[int]], epoch: int, max_epochs: int, *, enabled: bool) -> Iterator[list[int]]:
    """The epoch's batches, behind a progress bar when ``enabled`` (a terminal)."""
    if not enabled:
        return iter(batches)
    from tqdm import tqdm

    # One bar per epoch: "epoch 2/5" with its steps; the study's log line says which trial of how many.
    desc = f"epoch {epoch + 1}/{max_epochs}"
    return iter(tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True))


def training_state(
    model: torch.nn.Module,
    epoch: int,
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    best: tuple[float, int, list[dict[str, float | None]]],
    metrics: tuple[str, float, dict[str, float | None]],
) -> TrainingState:
    """What a checkpoint after ``epoch`` holds; ``best``: (value, epoch, history) so far; ``metrics``:
    (the optimized metric's name, its value, every validation metric) of this epoch."""
    best_value, best_epoch, history = best
    metric_name, metric_value, epoch_metrics = metrics
    return TrainingState(
        epoch=epoch,
        step=step,
        # Left where they are: the writer (or the asynchronous snapshot) copies each tensor to
        # host memory once; copying here too would copy a CUDA model's weights twice.
        model_state={k: v.detach() for k, v in model.state_dict().items()},
        frozen=frozenset(name for name, p in model.named_parameters() if not p.requires_grad),
        optimizer_state=optimizer.state_dict(),
        scheduler_state=scheduler.state_dict(),
        rng_state=capture_rng_state(),
        best_value=best_value,
        best_epoch=best_epoch,
        history=list(history),
        metrics=epoch_metrics,
        metric_name=metric_name,
        metric_value=metric_value,
    )
