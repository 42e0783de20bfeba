"""How the training step runs fast on its device: compiled or not, fast CPU dropout or not, gradient
checkpointing or not (train.compile, train.fast_dropout, train.gradient_checkpointing).

Decided once per trial, before the first step; the model's weights, its state dict and what
evaluation computes are the same whatever is decided here (evaluation runs the plain module).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dsm5_hpo.config import TrainConfig
from dsm5_hpo.models.fast_dropout import FastDropout
from dsm5_hpo.training.compile_probe import CompileProbe, Step, probe_key

logger = logging.getLogger(__name__)

COMPILED_LENGTH_MULTIPLE = 8
"""Windows are padded to a multiple of this under compile: one dynamic graph, aligned kernels."""


@dataclass(frozen=True)
class StepPlan:
    """What the step loop uses: the module to call, the context its forward runs in, the padding."""

    compiled: bool
    fast_dropout: bool
    gradient_checkpointing: bool
    length_multiple: int = 1

    def forward_context(self) -> contextlib.AbstractContextManager[object]:
        return FastDropout() if self.fast_dropout else contextlib.nullcontext()

    def tags(self) -> dict[str, str]:
        """What was decided, for the trial's MLflow tags (the metrics depend on it)."""
        return {
            "compiled": str(self.compiled).lower(),
            "fast_dropout": str(self.fast_dropout).lower(),
            "gradient_checkpointing": str(self.gradient_checkpointing).lower(),
        }


def enable_gradient_checkpointing(model: nn.Module) -> bool:
    """Turn on the encoder's own activation checkpointing (transformers); False when it has none."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            # Non-reentrant: works with frozen inputs (LoRA) and keeps the RNG state for dropout.
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            return True
    logger.warning("train.gradient_checkpointing: %s has none; training without it", type(model).__name__)
    return False


def plan_step(config: TrainConfig, device: torch.device, *, compiled: bool, checkpointing: bool) -> StepPlan:
    """How the trial's steps run, once train.compile is resolved (``compiled``; see CompileProbe) and
    gradient checkpointing is on or not (``checkpointing``: enable_gradient_checkpointing's answer)."""
    # Compiled kernels draw their own dropout; a checkpointed layer is recomputed in backward outside
    # the forward's context, where its masks must be drawn the same way again: torch's own then.
    fast = config.fast_dropout and device.type == "cpu" and not compiled and not checkpointing
    return StepPlan(
        compiled=compiled,
        fast_dropout=fast,
        gradient_checkpointing=checkpointing,
        length_multiple=COMPILED_LENGTH_MULTIPLE if compiled else 1,
    )


def compiled_forward(model: nn.Module, cache_dir: Path | None) -> nn.Module:
    """``torch.compile`` of ``model`` with a dynamic sequence length: one graph for every batch shape
    of the trial instead of one per length. Inductor's on-disk cache (in ``cache_dir`` when given)
    makes the next trial's and a resume's compile a cache hit."""
    if cache_dir is not None:
        import os

        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))
    compiled: nn.Module = torch.compile(model, dynamic=True)  # type: ignore[assignment]
    return compiled


def prepare_forward(
    model: nn.Module,
    forward: nn.Module,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    *,
    batches: Sequence[list[int]],
    probe_step: Step,
    single_process: bool,
    cache: Path | None,
) -> tuple[StepPlan, nn.Module]:
    """Turn on gradient checkpointing, resolve train.compile (``auto``: a CompileProbe over ``batches``,
    the first of the trial's, with ``probe_step``), and return the plan and the module the steps call:
    ``forward`` (the model, or its DDP wrapper) or its compiled version."""
    checkpointing = config.gradient_checkpointing and enable_gradient_checkpointing(model)
    wanted, compiled = config.compile is True, None
    if config.compile == "auto":
        probe = CompileProbe(
            cache / "probe.json" if cache else None, probe_key(model, device, precision, config.batch_size)
        )
        if not single_process or len(batches) < 2:
            # Every rank of a DDP trial must decide alike, without timing alone: only a remembered answer.
            wanted = bool(probe.remembered())
        else:
            sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else lambda: None
            wanted, compiled = probe.decide(
                model, lambda module: compiled_forward(module, cache), batches, probe_step, sync
            )
    plan = plan_step(config, device, compiled=wanted, checkpointing=checkpointing)
    if not plan.compiled:
        return plan, forward
    logger.info("training through torch.compile (dynamic sequence length)")
    return plan, compiled if compiled is not None else compiled_forward(forward, cache)
