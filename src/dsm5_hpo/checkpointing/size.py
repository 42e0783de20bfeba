"""How big the next checkpoint will be, before it is written: what the disk guard reserves room for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# Per-parameter scalar state ("step" is a 0-d float32 or int64 tensor in torch's optimizers).
_STEP_BYTES = 8


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _slots_before_first_step(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> int:
    """How many param-sized state tensors the optimizer will create at its first step."""
    name = type(optimizer).__name__
    if name == "SGD":
        return 1 if group.get("momentum", 0) else 0  # momentum_buffer, or nothing at all
    if name == "RMSprop":
        return 1 + bool(group.get("momentum", 0)) + bool(group.get("centered", False))
    # Adam, AdamW, NAdam, RAdam, Adamax: two moments (+1 with amsgrad). Unknown optimizers get
    # the same guess: overestimating stops a job early, underestimating fills the disk mid-save.
    return 2 + bool(group.get("amsgrad", False))


def _optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    if optimizer.state:
        # After a step the state is real: sum it (params that never had a grad have no state).
        return sum(
            _tensor_bytes(value)
            for state in optimizer.state.values()
            for value in state.values()
            if isinstance(value, torch.Tensor)
        )
    total = 0
    for group in optimizer.param_groups:
        slots = _slots_before_first_step(optimizer, group)
        for param in group["params"]:
            if param.requires_grad and slots:
                total += slots * _tensor_bytes(param) + _STEP_BYTES
    return total


def nested_tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in a nested structure (a state dict, an optimizer's state, a payload)."""
    if isinstance(value, torch.Tensor):
        return _tensor_bytes(value)
    if isinstance(value, dict):
        return sum(nested_tensor_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(nested_tensor_bytes(item) for item in value)
    return 0


def estimate_checkpoint_bytes(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    metadata_bytes: int = 64_000,
    on_disk: Callable[[torch.Tensor], bool] = lambda tensor: False,
) -> int:
    """Bytes the next checkpoint will add to the disk: weights + optimizer state + metadata/RNG/scheduler
    slack.

    Weights are every ``state_dict`` entry (persistent buffers included), tied tensors counted
    once per name, except frozen parameters that ``on_disk`` says are stored already (the blob
    store, or the pretrained folder read in place): a save does not write those again. Trained
    parameters are always counted (they change every step).
    """
    parameters = dict(model.named_parameters())
    weights = 0
    for name, tensor in model.state_dict().items():
        parameter = parameters.get(name)
        if parameter is not None and not parameter.requires_grad and on_disk(tensor):
            continue
        weights += _tensor_bytes(tensor)
    state = _optimizer_bytes(optimizer) if optimizer is not None else 0
    return weights + state + metadata_bytes
