"""How a trial's steps run: the plan (compile, fast dropout, gradient checkpointing), the compile probe's
decision and memory, and the peak-memory readings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dsm5_hpo.config import TrainConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.training import memory
from dsm5_hpo.training.acceleration import COMPILED_LENGTH_MULTIPLE, plan_step
from dsm5_hpo.training.compile_probe import CompileProbe, probe_key

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("fast", "device", "compiled", "checkpointing", "expected"),
    [
        (True, "cpu", False, False, True),
        (False, "cpu", False, False, False),
        (True, "cuda", False, False, False),  # torch's own kernels are fast there
        (True, "cpu", True, False, False),  # compiled kernels draw their own masks
        (True, "cpu", False, True, False),  # recomputed layers must draw torch's masks again
    ],
)
def test_fast_dropout_only_where_it_is_safe_and_pays(
    fast: bool, device: str, compiled: bool, checkpointing: bool, expected: bool
) -> None:
    plan = plan_step(
        TrainConfig(fast_dropout=fast), torch.device(device), compiled=compiled, checkpointing=checkpointing
    )
    assert plan.fast_dropout is expected
    assert plan.length_multiple == (COMPILED_LENGTH_MULTIPLE if compiled else 1)
    assert plan.tags()["compiled"] == str(compiled).lower()


@pytest.mark.parametrize("bad", ["yes", "on", 2])
def test_compile_takes_false_true_or_auto(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"train\.compile"):
        TrainConfig(compile=bad)  # type: ignore[arg-type]


class Ticking:
    """A clock that the fake step advances: eager steps take ``eager`` s, compiled ones ``compiled``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _probe(tmp_path: Path, clock: Ticking, eager: float, compiled: float) -> tuple[CompileProbe, list[str]]:
    calls: list[str] = []
    model = nn.Linear(2, 2)
    probe = CompileProbe(tmp_path / "probe.json", "key", clock=clock)

    def step(module: nn.Module, batch: int) -> None:
        kind = "compiled" if module is not model else "eager"
        calls.append(kind)
        clock.now += {"eager": eager, "compiled": compiled}[kind] * (
            10 if batch == 0 and kind == "compiled" else 1
        )
        module(torch.ones(1, 2)).sum().backward()
        torch.rand(1)  # a draw the probe must give back

    torch.manual_seed(7)
    state = torch.get_rng_state()
    wins, built = probe.decide(model, lambda m: nn.Sequential(m), [0, 1, 2], step)
    assert torch.equal(torch.get_rng_state(), state)  # the probe leaves the RNG as it found it
    assert all(p.grad is None for p in model.parameters())  # and no gradient behind
    assert (built is not None) is wins
    return probe, calls


def test_the_probe_compiles_where_a_step_is_faster_and_remembers_it(tmp_path: Path) -> None:
    clock = Ticking()
    probe, calls = _probe(tmp_path, clock, eager=1.0, compiled=0.5)
    assert calls == ["eager"] * 3 + ["compiled"] * 3
    assert probe.measured == {"eager_s": 1.0, "compiled_s": 0.5, "compile_s": 5.0}
    entry = json.loads((tmp_path / "probe.json").read_text())["key"]
    assert entry["compile"] is True and entry["eager_s"] == 1.0
    again = CompileProbe(tmp_path / "probe.json", "key")
    assert again.remembered() is True
    wins, built = again.decide(
        nn.Linear(1, 1), lambda m: m, [0, 1], lambda m, b: pytest.fail("measured again")
    )
    assert (wins, built) == (True, None)


@pytest.mark.parametrize("compiled", [1.0, 0.97])
def test_the_probe_keeps_eager_unless_compile_wins_by_the_margin(tmp_path: Path, compiled: float) -> None:
    probe, _ = _probe(tmp_path, Ticking(), eager=1.0, compiled=compiled)
    assert probe.remembered() is False


def test_a_damaged_probe_file_is_measured_again(tmp_path: Path) -> None:
    (tmp_path / "probe.json").write_text("{not json")
    probe, calls = _probe(tmp_path, Ticking(), eager=1.0, compiled=0.5)
    assert len(calls) == 6 and probe.remembered() is True


def test_probe_keys_name_device_torch_encoder_precision_and_batch() -> None:
    key = probe_key(nn.Linear(2, 2), CPU, "bf16", 16)
    assert (
        key.startswith("cpu:")
        and torch.__version__ in key
        and "Linear" in key
        and key.endswith("bf16|batch 16")
    )
    assert probe_key(nn.Linear(2, 2), CPU, "fp32", 16) != key


def test_peak_rss_is_read_and_reset_where_linux_allows(tmp_path: Path) -> None:
    assert memory.peak_rss_bytes() > 10e6
    fake = tmp_path / "proc"
    fake.mkdir()
    (fake / "status").write_text("Name: x\nVmHWM:\t  2048 kB\nVmRSS: 1024 kB\n")
    assert memory.peak_rss_bytes(fake) == 2048 * 1024
    assert memory.reset_peaks(CPU, fake) is True and (fake / "clear_refs").read_text() == "5"
    assert memory.reset_peaks(CPU, tmp_path / "missing") is False
    assert memory.peak_rss_bytes(tmp_path / "missing") > 10e6  # getrusage's peak instead
    assert set(memory.peak_memory(CPU)) == {"peak_rss_bytes"}
