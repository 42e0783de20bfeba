"""One place that seeds every random number generator a run touches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) and ask for determinism.

    ``warn_only`` keeps CUDA kernels without a deterministic variant usable; on CPU every
    op we use is deterministic, which is what the same-seed-same-metrics guarantee relies on.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    # cuBLAS needs this workspace setting to be deterministic; it must be set before the first call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def torch_generator(seed: int) -> torch.Generator:
    """A CPU generator for data order, independent of the global RNG state."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
