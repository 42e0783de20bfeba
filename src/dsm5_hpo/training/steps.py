"""The pieces of a training step that do not depend on the trainer's state: the optimizer step
(unscale, clip, step, zero) and the per-epoch progress bar."""

from __future__ import annotations

from collections.abc import Iterator

import torch


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
