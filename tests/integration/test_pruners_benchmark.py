"""benchmarks/pruners.py --quick runs end to end: a study per pruner, its figures in the last line.

A smoke test only: which pruner wins on 2 trials says nothing.
"""

from __future__ import annotations

import pytest

from conftest import run_benchmark

pytestmark = pytest.mark.integration


def test_quick_pruners_benchmark_prints_a_study_per_pruner() -> None:
    lines, figures = run_benchmark("pruners.py", "--quick")
    assert lines[0].startswith("machine: ")
    assert set(figures["pruners"]) == {"hyperband", "none"} and figures["winner"] in figures["pruners"]
    for name, study in figures["pruners"].items():
        assert study["trials_finished"] == 2 and study["failed"] == 0, name
        assert study["complete"] + study["pruned"] == 2 and study["best_value"] is not None, name
    assert figures["pruners"]["none"]["pruned"] == 0
