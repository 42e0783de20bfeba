"""benchmarks/study_overhead.py --quick runs end to end: a study through the train CLI, and the time
figures it measured read back (a smoke test: timings are checked for sense, never for a target)."""

from __future__ import annotations

import pytest

from conftest import run_benchmark

pytestmark = pytest.mark.integration


def test_quick_study_overhead_benchmark_reads_the_study_own_time_figures() -> None:
    lines, figures = run_benchmark("study_overhead.py", "--quick")
    assert lines[0].startswith("machine: ")
    after = figures["after"]
    assert "model=tiny" in figures["study"] and "before" not in figures
    assert after["training_s"] > 0 and after["evaluation_s"] > after["test_evaluation_s"] > 0
    total = after["training_s"] + after["evaluation_s"] + after["overhead_s"]
    assert total == pytest.approx(after["wall_time_s"], abs=0.05)
    assert 0 < after["overhead_fraction"] < 1
    assert len(after["startup_s"]) == len(after["teardown_s"]) == 2 and len(after["between_trials_s"]) == 1
    assert all(s > 0 for s in after["startup_s"] + after["teardown_s"])
    assert all(
        0 < setup < startup for setup, startup in zip(after["setup_s"], after["startup_s"], strict=True)
    )
    # The end of a trial late in a study (benchmarks/after_trial_costs.py), on 20 ended trials here.
    late = after["after_trial_late"]
    assert late["trials"] == 20 and late["retention_ms"] > 0 and late["ask_and_sample_ms"] > 0
    assert late["main_thread_ms"] >= late["retention_ms"]
    assert set(figures["goals"]) == {
        "overhead_fraction",
        "overhead_met",
        "startup_s",
        "startup_met",
        "setup_met",
    }
