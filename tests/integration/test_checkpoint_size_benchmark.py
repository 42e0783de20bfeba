"""benchmarks/checkpoint_size.py --quick runs end to end: four tiny-model studies (full, freeze_layers=4
and LoRA under the default retention policy, full under keep_all), measured on the filesystem.

A smoke test of the wiring, with figures checked for sense (the tiny model's proportions are not
MiniLM's, so the goals are not asserted): the filesystem agrees with the retention code's own
unique-byte count, every trial keeps its best model, and the temporary folder is removed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_benchmark

pytestmark = pytest.mark.integration


def test_quick_checkpoint_size_benchmark_measures_every_method_and_study(tmp_path: Path) -> None:
    lines, figures = run_benchmark(
        "checkpoint_size.py", "--quick", "--trials", "2", "--dir", str(tmp_path), timeout=300
    )
    assert figures["model"] == "tiny" and (figures["trials"], figures["epochs"]) == (2, 2)
    assert lines[0].startswith("machine: ") and lines[1].startswith("command: ")
    full = figures["full"]["checkpoint_bytes"]
    for method in ("freeze4", "lora"):
        # The shared tensors (frozen layers, LoRA base) are stored by the first checkpoint only.
        assert 0 < figures[method]["checkpoint_bytes"] < full / 10
        assert figures[method]["first_checkpoint_bytes"] > 10 * figures[method]["checkpoint_bytes"]
    for name in ("full", "freeze4", "lora", "full_keep_all"):
        study = figures[name]
        assert study["saves"] == 4
        assert study["retained_bytes"] == study["retained_unique_bytes_by_metadata"]
        assert study["trials_with_best_model"] == 2
        assert study["peak_bytes"] >= study["retained_bytes"] > 0
        assert study["retained_checkpoints"] == (4 if name == "full_keep_all" else 2)
    assert figures["full_keep_all"]["retained_bytes"] > figures["full"]["retained_bytes"]
    for goal in figures["goals"].values():
        assert goal["met"] == (goal["ratio"] <= goal["goal"])
    assert any("PASS" in line or "MISS" in line for line in lines)
    assert list(tmp_path.iterdir()) == []  # the temporary experiments folder is gone
