"""benchmarks/padding.py runs end to end: the padding share of the trainer's own batches, grouped by
length and not, and the ceiling it leaves for packing."""

from __future__ import annotations

import pytest

from conftest import run_benchmark

pytestmark = pytest.mark.integration


def test_padding_benchmark_counts_the_tokens_of_the_trainer_batches() -> None:
    lines, figures = run_benchmark("padding.py", "data.max_posts=60", timeout=300)
    assert lines[0].startswith("machine: ")
    grouped, random = figures["grouped"], figures["random"]
    # The same windows over the same epochs: only the batching differs.
    assert grouped["real_tokens"] == random["real_tokens"] > 0
    assert random["computed_tokens"] > grouped["computed_tokens"] >= grouped["real_tokens"]
    for counts in (grouped, random):
        assert counts["padding_fraction"] == pytest.approx(
            1 - counts["real_tokens"] / counts["computed_tokens"], abs=1e-4
        )
    assert figures["packing_ceiling"] == grouped["padding_fraction"]
