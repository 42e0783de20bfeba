"""Where a parameter sits in the encoder: 0 = embeddings, 1..L = transformer layers bottom up.

One definition for the two things that go by depth: freezing and layer-wise learning-rate decay
(training/optimization.py), and which layers get LoRA adapters (models/lora.py).
"""

from __future__ import annotations

import re

from torch import nn

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def encoder_layers(model: nn.Module) -> int:
    """Transformer layers of ``model.encoder`` (a DualHeadModel's), from its Hugging Face config."""
    config = getattr(getattr(model, "encoder", None), "config", None)
    return int(getattr(config, "num_hidden_layers", 0) or 0)


def encoder_depth(name: str, layers: int) -> int | None:
    """Depth of an encoder parameter or module named as in a DualHeadModel (``encoder.`` first): 0 =
    embeddings, 1..layers = transformer layers, bottom up; ``layers`` + 1 for other encoder
    parameters; None for names outside the encoder. A LoRA adapter inside layer l
    (``...layer.3.attention.self.query.lora_A.default.weight``) is at that layer's depth."""
    if not name.startswith("encoder."):
        return None
    match = _LAYER.search(name)
    if match is not None:
        return int(match.group(1)) + 1
    if ".embeddings." in name or name.startswith("encoder.embeddings"):
        return 0
    return layers + 1
