"""Reading switches from the environment the way the Hugging Face libraries do."""

from __future__ import annotations

import os
from collections.abc import Mapping

_TRUE = frozenset({"1", "ON", "YES", "TRUE"})


def env_flag(*names: str, environ: Mapping[str, str] = os.environ) -> bool:
    """True when any of ``names`` is set to 1, ON, YES or TRUE (any case), as huggingface_hub reads them."""
    return any(environ.get(name, "").strip().upper() in _TRUE for name in names)
