"""What a checkpoint holds besides the weights, in a form ``torch.load(weights_only=True)`` accepts.

Everything needed to continue a trial exactly where an epoch ended: optimizer, scheduler, every
random number generator, progress and metrics. Only tensors, dicts, lists, tuples, ints, floats,
strings, bools and None go into the file, so loading it never runs pickled code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1

# Exact types (not isinstance: numpy.float64 is a float subclass that torch.load(weights_only=True)
# refuses) that the weights-only unpickler rebuilds without running code.
_SAFE_LEAVES: tuple[type, ...] = (int, float, bool, str, type(None), torch.Size, torch.dtype, torch.device)
_SAFE_TENSORS: tuple[type, ...] = (torch.Tensor, nn.Parameter)


@dataclass
class TrainingState:
    """Everything needed to continue a trial exactly where an epoch ended."""

    epoch: int
    """Last completed epoch (0-based)."""
    step: int
    """Global optimizer step after that epoch."""
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    rng_state: dict[str, Any]
    """From ``capture_rng_state()``."""
    best_value: float
    """Best optimization-metric value so far (-inf when none)."""
    best_epoch: int
    history: list[dict[str, float | None]]
    """Validation metrics of every epoch so far."""
    metrics: dict[str, float | None]
    """Validation metrics of this epoch."""
    metric_name: str
    metric_value: float
    """This epoch's optimization-metric value."""
    extra: dict[str, Any] = field(default_factory=dict)
    """E.g. data-order state; must hold only weights_only-loadable types (checked on save)."""
    frozen: frozenset[str] = frozenset()
    """model_state names of parameters training never changes (requires_grad off: frozen layers, a LoRA
    base). Not saved: a background save reads them where they are instead of copying them, and the
    manager digests them once per trial."""


def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's (legacy global) and torch's (CPU and every CUDA device) RNGs."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": int(version),
            "state": tuple(int(x) for x in internal),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # uint32 words, widened losslessly
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every RNG back where ``capture_rng_state`` found it: the next random numbers are the same."""
    python = state["python"]
    random.setstate((int(python["version"]), tuple(int(x) for x in python["state"]), python["gauss_next"]))
    legacy = state["numpy"]
    np.random.set_state(
        (
            str(legacy["name"]),
            legacy["keys"].numpy().astype(np.uint32),
            int(legacy["pos"]),
            int(legacy["has_gauss"]),
            float(legacy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch_cpu"])
    cuda_states: list[torch.Tensor] = list(state.get("torch_cuda", []))
    if not torch.cuda.is_available():
        if cuda_states:
            logger.warning("checkpoint holds CUDA RNG states but CUDA is not available: not restored")
        return
    devices = torch.cuda.device_count()
    if len(cuda_states) != devices:
        logger.warning(
            "checkpoint holds %d CUDA RNG states, this machine has %d devices: restoring the first %d",
            len(cuda_states),
            devices,
            min(devices, len(cuda_states)),
        )
    for device, cuda_state in enumerate(cuda_states[:devices]):
        torch.cuda.set_rng_state(cuda_state, device)


def architecture_signature(model: nn.Module) -> str:
    """SHA-256 of the model's structure: module class names and every parameter/buffer's name, shape, dtype.

    Equal for two identically built models whatever their weights or device; different when a
    layer, a shape or a dtype changes. Class names are unqualified, so moving a class between
    modules (a library upgrade) does not invalidate checkpoints.
    """
    modules = sorted((name, type(module).__qualname__) for name, module in model.named_modules())
    tensors = sorted(
        (name, list(tensor.shape), str(tensor.dtype))
        for name, tensor in chain(
            model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
        )
    )
    text = json.dumps({"modules": modules, "tensors": tensors}, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_weights_only(value: object, where: str) -> None:
    """Raise TypeError naming the path of the first object that weights_only loading would refuse."""
    if type(value) in _SAFE_LEAVES or type(value) in _SAFE_TENSORS:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():  # type: ignore[attr-defined]
            check_weights_only(key, f"{where} key {key!r}")
            check_weights_only(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):  # type: ignore[arg-type]
            check_weights_only(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where}: {type(value).__module__}.{type(value).__qualname__} cannot be loaded with "
        "torch.load(weights_only=True); store tensors, dicts, lists, tuples, ints, floats, str, bool or None"
    )


def _plain_metrics(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {str(k): None if v is None else float(v) for k, v in metrics.items()}


def _cloned(value: Any, buffers: dict[tuple[Any, ...], torch.Tensor], path: tuple[Any, ...]) -> Any:
    if isinstance(value, torch.Tensor):
        source = value.detach()
        buffer = buffers.get(path)
        if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
            # Pinned host memory makes device-to-host copies of CUDA tensors run at full speed.
            buffer = torch.empty(source.shape, dtype=source.dtype, device="cpu", pin_memory=source.is_cuda)
            buffers[path] = buffer
        return buffer.copy_(source)
    if isinstance(value, dict):
        return {key: _cloned(item, buffers, (*path, key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cloned(item, buffers, (*path, i)) for i, item in enumerate(value))
    return value


def snapshot(
    state: TrainingState, buffers: dict[tuple[Any, ...], torch.Tensor] | None = None
) -> TrainingState:
    """A copy of ``state`` in host memory that training can no longer change (for a background save).

    Every tensor is copied (weights, optimizer moments, RNG states) but the frozen weights, which
    training cannot change (``TrainingState.frozen``: referenced as they are); the rest is plain data,
    copied as nested containers. ``buffers`` (kept by the caller between saves) are reused for
    tensors of the same place, shape and dtype: after the first save no memory is allocated, so
    the copy runs at memory speed instead of paying a page fault per 4 KiB of fresh memory. The
    caller must not snapshot again while a save of the previous snapshot is still running.
    """
    reuse = buffers if buffers is not None else {}
    changing = {f.name: getattr(state, f.name) for f in fields(TrainingState)}
    changing["model_state"] = {k: v for k, v in state.model_state.items() if k not in state.frozen}
    copied = TrainingState(**{name: _cloned(value, reuse, (name,)) for name, value in changing.items()})
    # Frozen tensors cannot change while the save runs: referenced, not copied (a LoRA base stays put).
    copied.model_state = {k: copied.model_state.get(k, v) for k, v in state.model_state.items()}
    # Buffers this snapshot did not use belong to an earlier model (another encoder drawn by the search
    # space, other heads): dropped, so pinned host memory holds one model's state, not one per model seen.
    used = _tensor_paths(copied, ()) - {("model_state", name) for name in state.frozen}
    for path in [path for path in reuse if path not in used]:
        del reuse[path]
    return copied


def _tensor_paths(value: Any, path: tuple[Any, ...]) -> set[tuple[Any, ...]]:
    """The buffer keys of every tensor in ``value`` (as _cloned names them)."""
    if isinstance(value, TrainingState):
        return {p for f in fields(TrainingState) for p in _tensor_paths(getattr(value, f.name), (f.name,))}
    if isinstance(value, torch.Tensor):
        return {path}
    if isinstance(value, dict):
        return {p for key, item in value.items() for p in _tensor_paths(item, (*path, key))}
    if isinstance(value, list | tuple):
        return {p for i, item in enumerate(value) for p in _tensor_paths(item, (*path, i))}
    return set()


def state_payload(state: TrainingState) -> dict[str, Any]:
    """The training state without the model weights, as plain weights_only-loadable types."""
    payload: dict[str, Any] = {
        "format_version": STATE_FORMAT_VERSION,
        "epoch": int(state.epoch),
        "step": int(state.step),
        "optimizer_state": state.optimizer_state,
        "scheduler_state": state.scheduler_state,
        "rng_state": state.rng_state,
        "best_value": float(state.best_value),
        "best_epoch": int(state.best_epoch),
        # Metrics often arrive as numpy scalars: plain floats load with weights_only.
        "history": [_plain_metrics(m) for m in state.history],
        "metrics": _plain_metrics(state.metrics),
        "metric_name": str(state.metric_name),
        "metric_value": float(state.metric_value),
        "extra": state.extra,
    }
    check_weights_only(payload, "training state")
    if payload["epoch"] < 0 or payload["step"] < 0:
        raise ValueError(f"epoch ({state.epoch}) and step ({state.step}) must be >= 0")
    if not math.isfinite(payload["metric_value"]):
        raise ValueError(
            f"metric {state.metric_name!r} is {state.metric_value}: a checkpoint needs a finite value"
        )
    return payload


def state_from_payload(payload: object, model_state: dict[str, torch.Tensor]) -> TrainingState:
    """Rebuild a TrainingState from ``state_payload``'s output; ValueError when it is not one."""
    if not isinstance(payload, dict):
        raise ValueError(f"expected a dict, found {type(payload).__name__}")
    if payload.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(f"format_version {payload.get('format_version')!r}, expected {STATE_FORMAT_VERSION}")
    names = [
        "epoch", "step", "optimizer_state", "scheduler_state", "rng_state", "best_value", "best_epoch",
        "history", "metrics", "metric_name", "metric_value", "extra",
    ]  # fmt: skip
    missing = [name for name in names if name not in payload]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return TrainingState(model_state=model_state, **{name: payload[name] for name in names})
