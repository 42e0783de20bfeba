"""train.compile=auto: does torch.compile pay on this device, for this encoder and precision?

Measured, not guessed: a few forward + backward passes over the trial's own first batches, eager
and compiled, timed after a warm-up step each (the compiled one's warm-up is the compile). Compile
wins when its steady step is at least ``margin`` faster. The answer is remembered in a JSON file
(``<paths.cache_dir>/compile/probe.json``) under a key naming the device, torch, the encoder's shape,
the precision and the batch size, so a study pays for the probe once per machine, not per trial.

The probe leaves no trace in training: it runs on the trial's model without an optimizer step
(weights unchanged, gradients dropped), and the RNG states are restored afterwards, so a trial
trains the same whether the answer came from the file or from a fresh measurement.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsm5_hpo.storage.atomic import atomic_write_json

logger = logging.getLogger(__name__)

Step = Callable[[nn.Module, Any], None]
"""Runs forward, loss and backward of ``module`` on one batch (no optimizer step)."""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def probe_key(model: nn.Module, device: torch.device, precision: str, batch_size: int) -> str:
    """What the answer depends on: device, torch, the encoder's shape, precision and batch size."""
    encoder = getattr(model, "encoder", model)
    config = getattr(encoder, "config", None)
    shape = f"{type(encoder).__name__}-h{getattr(config, 'hidden_size', '?')}-l{getattr(config, 'num_hidden_layers', '?')}"
    return f"{device.type}:{device_name(device)}|torch {torch.__version__}|{shape}|{precision}|batch {batch_size}"


def _rng_states(device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _restore(states: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state_all(states[1])


@dataclass
class CompileProbe:
    file: Path | None
    """Where answers are remembered (None: measure every time)."""
    key: str
    margin: float = 0.05
    """Compile must make a steady step at least this much faster (5 %) to be chosen."""
    clock: Callable[[], float] = time.perf_counter
    measured: dict[str, float] = field(default_factory=dict)
    """eager_s and compiled_s per step (and compile_s) of a fresh measurement; empty when read back."""

    def remembered(self) -> bool | None:
        if self.file is None or not self.file.is_file():
            return None
        try:
            entry = json.loads(self.file.read_text(encoding="utf-8")).get(self.key)
        except (OSError, ValueError) as error:  # a damaged file is measured again, then rewritten
            logger.warning("cannot read %s (%s); measuring again", self.file, error)
            return None
        return bool(entry["compile"]) if isinstance(entry, dict) and "compile" in entry else None

    def decide(
        self,
        model: nn.Module,
        compile_model: Callable[[nn.Module], nn.Module],
        batches: Sequence[Any],
        step: Step,
        sync: Callable[[], None] = lambda: None,
    ) -> tuple[bool, nn.Module | None]:
        """(compile or not, the compiled module when it was built here). ``batches``: at least 2."""
        known = self.remembered()
        if known is not None:
            logger.info(
                "train.compile=auto: %s (remembered in %s)",
                "compiling" if known else "not compiling",
                self.file,
            )
            return known, None
        states = _rng_states(next(model.parameters()).device)
        try:
            eager, _ = self._time(model, batches, step, sync)
            compiled = compile_model(model)
            fast, compile_s = self._time(compiled, batches, step, sync)
        finally:
            model.zero_grad(set_to_none=True)
            _restore(states)
        wins = fast < (1.0 - self.margin) * eager
        self.measured = {"eager_s": eager, "compiled_s": fast, "compile_s": compile_s}
        logger.info(
            "train.compile=auto: a step takes %.3f s eager, %.3f s compiled (compile %.1f s): %s",
            eager,
            fast,
            compile_s,
            "compiling" if wins else "not compiling",
        )
        self._remember(wins)
        return wins, compiled if wins else None

    def _time(
        self, module: nn.Module, batches: Sequence[Any], step: Step, sync: Callable[[], None]
    ) -> tuple[float, float]:
        """(mean seconds of the steps after the first, seconds of the first)."""
        started = self.clock()
        step(module, batches[0])
        sync()
        first = self.clock() - started
        started = self.clock()
        for batch in batches[1:]:
            step(module, batch)
        sync()
        return (self.clock() - started) / max(1, len(batches) - 1), first

    def _remember(self, wins: bool) -> None:
        if self.file is None:
            return
        entries: dict[str, Any] = {}
        if self.file.is_file():
            try:
                entries = dict(json.loads(self.file.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                entries = {}
        entries[self.key] = {
            "compile": wins,
            **{k: round(v, 4) for k, v in self.measured.items()},
            "measured_at": datetime.now(UTC).isoformat(),
        }
        self.file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file, entries)
