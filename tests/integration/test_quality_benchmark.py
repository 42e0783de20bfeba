"""benchmarks/quality.py --quick runs end to end: a tiny-model study through the train CLI, both
TF-IDF baselines on the study's own split, and the ratios. A smoke test of the wiring: the tiny random
model is not expected to be good; the baselines' figures are checked for sense."""

from __future__ import annotations

import pytest

from conftest import run_benchmark

pytestmark = pytest.mark.integration


def test_quick_quality_benchmark_compares_the_study_with_both_baselines() -> None:
    lines, figures = run_benchmark("quality.py", "--quick", timeout=900)
    assert figures["model"] == "tiny" and figures["precision"] in ("fp32", "bf16")
    assert figures["posts"] == {"train": 12, "validation": 6, "test": 6}
    assert figures["study_seconds"] > 0
    for split in ("validation", "test"):
        for key in ("criteria_f1_macro", "criteria_auroc", "evidence_has_answer_token_f1"):
            values = {
                who: figures[f"{split}_{key}_{who}"] for who in ("model", "tfidf_post", "tfidf_sentence")
            }
            assert all(v is None or 0.0 <= v <= 1.0 for v in values.values()), (split, key, values)
            best = max(v for who, v in values.items() if who != "model" and v is not None)
            ratio = figures[f"{split}_{key}_ratio"]
            assert (
                ratio is None
                if not best or values["model"] is None
                else abs(ratio - values["model"] / best) < 1e-2
            )
        # A post-level classifier gives no evidence; the sentence-level one does.
        assert figures[f"{split}_evidence_has_answer_token_f1_tfidf_post"] == 0.0
        assert figures[f"{split}_evidence_has_answer_token_f1_tfidf_sentence"] > 0.0
    table = "\n".join(lines[:-1])
    assert "criteria macro F1" in table and "model/best" in table and "precision" in lines[0]
