"""LoRA fine-tuning (train.finetuning=lora): low-rank adapters on the encoder, with peft.

peft's ``inject_adapter_in_model`` replaces each target ``nn.Linear`` of the encoder, in place, by a
LoRA layer that keeps the original as ``base_layer`` and adds ``lora_A`` (rank x in) and ``lora_B``
(out x rank), output ``base(x) + (alpha / rank) x B(A(dropout(x)))``, and freezes every other
encoder weight. B starts at zero, so the wrapped encoder computes exactly what the plain one does
until it trains. The encoder stays the same Hugging Face model object (``encoder.config``, forward
and ``state_dict`` work as before); its parameter names gain ``.base_layer`` and
``.lora_A.default`` / ``.lora_B.default``, the same for every model built with the same settings,
so checkpoints (``model.state_dict()``) load back into a freshly built model.

Targets: by default every linear projection inside the encoder's attention blocks, found by module
type (a module whose class name ends in ``Attention``: BertAttention, RobertaAttention,
DebertaV2Attention, DistilBertSelfAttention, ...), i.e. query, key, value and the attention output;
``train.lora_target_modules`` lists module-name suffixes instead.

``train.freeze_layers`` with LoRA: the frozen layers get no adapter at all. An adapter there would
never train, so it would stay at its zero start and add nothing but compute, memory and checkpoint
bytes; leaving it out gives the same function for less.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from dsm5_hpo.config import TrainConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.models.depth import encoder_depth

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"
"""peft's name for the one adapter (it appears in the parameter names: ``lora_A.default.weight``)."""


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    """train.lora_rank."""
    alpha: float
    """train.lora_alpha (the adapter's output is scaled by alpha / rank)."""
    dropout: float
    """train.lora_dropout."""
    target_modules: tuple[str, ...] = ()
    """Module-name suffixes (an exact module name is its own suffix); empty = the attention projections."""
    frozen_layers: int = 0
    """train.freeze_layers: no adapter in the embeddings or the lowest N layers (module docstring)."""

    @classmethod
    def from_train(cls, train: TrainConfig) -> LoraSettings | None:
        """The LoRA settings of a train config; None with finetuning=full."""
        if train.finetuning != "lora":
            return None
        return cls(
            rank=train.lora_rank,
            alpha=train.lora_alpha,
            dropout=train.lora_dropout,
            target_modules=tuple(train.lora_target_modules),
            frozen_layers=train.freeze_layers,
        )


def attention_projections(encoder: nn.Module) -> list[str]:
    """Names (in ``encoder``) of the linear layers inside its attention blocks: every ``nn.Linear``
    under a module whose class name ends in ``Attention``. Matching the type rather than names
    (query/key/value, query_proj/..., q_lin/...) is what makes one rule fit every encoder family."""
    blocks = [name for name, module in encoder.named_modules() if type(module).__name__.endswith("Attention")]
    return [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear) and any(name.startswith(f"{block}.") for block in blocks)
    ]


def _matching(encoder: nn.Module, suffixes: tuple[str, ...]) -> list[str]:
    """Modules named ``suffix`` or ending in ``.suffix`` (peft's own list matching); refuses a suffix
    that matches nothing, naming the key."""
    names = [name for name, _ in encoder.named_modules() if name]
    found: list[str] = []
    for suffix in suffixes:
        hits = [name for name in names if name == suffix or name.endswith(f".{suffix}")]
        if not hits:
            examples = ", ".join(attention_projections(encoder)[:4]) or ", ".join(names[:4])
            raise ConfigError(
                f"config key 'train.lora_target_modules': {suffix!r} names no module of the encoder "
                f"({type(encoder).__name__}); give module-name suffixes such as {examples}, or [] for "
                "the attention projections"
            )
        found += [name for name in hits if name not in found]
    return found


def target_names(encoder: nn.Module, settings: LoraSettings) -> list[str]:
    """The modules of ``encoder`` that get an adapter, outside the frozen layers."""
    if settings.target_modules:
        names = _matching(encoder, settings.target_modules)
    else:
        names = attention_projections(encoder)
        if not names:
            raise ConfigError(
                f"config key 'train.lora_target_modules': the encoder ({type(encoder).__name__}) has no "
                "linear layer inside a module whose class name ends in 'Attention'; list the modules to "
                "adapt by name suffix (e.g. [query, value])"
            )
    layers = int(getattr(getattr(encoder, "config", None), "num_hidden_layers", 0) or 0)
    if settings.frozen_layers == 0:
        return names

    def frozen(name: str) -> bool:
        depth = encoder_depth(f"encoder.{name}.", layers)
        return depth is not None and depth <= settings.frozen_layers

    return [name for name in names if not frozen(name)]


def add_lora(encoder: nn.Module, settings: LoraSettings) -> list[str]:
    """Put LoRA adapters into ``encoder`` (in place) and freeze the rest of it; returns the adapted
    module names. When every target sits in a frozen layer, no adapter is added and the whole encoder
    is frozen (only the heads train)."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = target_names(encoder, settings)
    if not targets:
        encoder.requires_grad_(False)
        logger.info(
            "LoRA: every target module is in the %d frozen layers: no adapter, the encoder is frozen",
            settings.frozen_layers,
        )
        return []
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft annotates int; alpha / r is all it does
        lora_dropout=settings.dropout,
        target_modules=targets,  # full names: peft matches each exactly, nothing else
        bias="none",
    )
    inject_adapter_in_model(config, encoder, adapter_name=ADAPTER_NAME)
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in encoder.parameters())
    logger.info(
        "LoRA: adapters (rank %d, alpha %g) on %d modules; %d of the encoder's %d parameters train",
        settings.rank,
        settings.alpha,
        len(targets),
        trainable,
        total,
    )
    return targets


def _lora_layers(module: nn.Module) -> list[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    return [(name, child) for name, child in module.named_modules() if isinstance(child, LoraLayer)]


def adapter_keys(model: nn.Module) -> list[str]:
    """The ``state_dict`` keys of ``model`` that belong to LoRA adapters (everything under a LoRA layer
    but its ``base_layer``), found by module type, not by guessing from names."""
    prefixes = [f"{name}." for name, _ in _lora_layers(model)]
    return [
        key
        for key in model.state_dict()
        if any(key.startswith(prefix) and not key.startswith(f"{prefix}base_layer.") for prefix in prefixes)
    ]


def merged_copy(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` with every adapter merged into the weight it adapts (W + alpha/r x B A)
    and the LoRA layers replaced by those plain layers: the original encoder's module tree, loadable
    by ``AutoModel.from_pretrained`` once saved. ``encoder`` itself is left as it is (it may go on
    training or be exported again)."""
    merged = copy.deepcopy(encoder)
    for name, layer in _lora_layers(merged):
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent), child, layer.get_base_layer())
    if hasattr(merged, "peft_config"):  # set by peft on injection; a plain encoder has none
        del merged.peft_config
    return merged
