"""Which device a run uses and at which precision it computes: resolved once, applied by autocast.

Training, evaluation and ``predict`` share it, so a model is evaluated at the precision it was trained at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from dsm5_hpo.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"config key 'train.device': {name!r} requested but CUDA is not available; use auto or cpu"
        )
    return torch.device(name)


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix math runs natively on ``device`` (so autocast to it is faster, not emulated).

    CUDA: compute capability 8.0+ (Ampere on). CPU: AVX512-BF16 or AMX tiles; without them oneDNN
    emulates bf16 and fp32 is faster. On the 2-core AVX512-BF16 machine here a MiniLM training
    step takes 0.44x the fp32 time under bf16 autocast (benchmarks/throughput.py --precision).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        # Private torch.cpu helpers: a torch without them is treated as having neither.
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_precision(
    precision: str, device: torch.device, fast_bf16: Callable[[torch.device], bool] = has_fast_bf16
) -> str:
    """'auto' -> 'bf16' where the device runs it natively, else 'fp32'; other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if fast_bf16(device) else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("config key 'train.precision': fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
