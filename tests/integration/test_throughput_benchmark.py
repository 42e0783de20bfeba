"""benchmarks/throughput.py --quick runs end to end: both trainers train, on the same number of steps.

A smoke test only: the figures are timings, checked for sense, never for a speed target.
"""

from __future__ import annotations

import pytest

from conftest import run_benchmark

pytestmark = pytest.mark.integration


def test_quick_throughput_benchmark_prints_like_for_like_figures() -> None:
    lines, figures = run_benchmark("throughput.py", "--quick", "--precision", "fp32")
    assert figures["model"] == "tiny" and figures["precision_auto"] == "fp32"
    assert figures["optimizer_steps"] == 20 and figures["windows"] == 320
    # Against transformers.Trainer at its defaults (random batches) and at its best (length-grouped).
    assert set(figures["samples_per_s"]) == {"ours_fp32", "hf_best_fp32", "hf_default_fp32"}
    assert all(rate > 0 for rate in figures["samples_per_s"].values())
    rates = figures["samples_per_s"]
    assert abs(figures["ratio_vs_best_fp32"] - rates["ours_fp32"] / rates["hf_best_fp32"]) < 0.01
    assert abs(figures["ratio_vs_default_fp32"] - rates["ours_fp32"] / rates["hf_default_fp32"]) < 0.01
    assert "cpu_flags" in figures and any(
        "flags:" in line for line in lines
    )  # what decides the precision is printed
