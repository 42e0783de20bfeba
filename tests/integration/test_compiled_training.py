"""train.compile on the CPU: a compiled trial trains, repeats itself exactly, and auto decides by measuring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_tiny
from dsm5_hpo.data.prepare import prepare_data
from dsm5_hpo.evaluation.prediction import EvaluationData
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import build_model
from dsm5_hpo.tracking.tracker import NullRunTracker
from dsm5_hpo.training.trainer import Trainer
from dsm5_hpo.utils.seeding import seed_everything

pytestmark = pytest.mark.integration


def _fit(tmp: Path, cache: Path, *overrides: str) -> tuple[list[float], list[float], dict[str, str]]:
    config = compose_tiny(tmp / "experiments", cache, "train.device=cpu", *overrides)
    path = resolve_model(config.model, cache_dir=cache).path
    data = prepare_data(config.data, load_tokenizer(path), seed=config.train.seed)
    seed_everything(config.train.seed)
    model = build_model(path, config)
    tracker = NullRunTracker()
    trainer = Trainer(
        model,
        config.train,
        criteria=data.criteria,
        metric=config.hpo.metric,
        max_answer_tokens=config.data.max_answer_tokens,
        tracker=tracker,
        progress=False,
        compile_cache=tmp / "compile",
    )
    validation = data.splits["validation"]
    trainer.fit(data.splits["train"].features, EvaluationData(validation.examples, validation.features))
    losses = [v for k, v, _ in tracker.metrics if k == "train_loss"]
    values = [v for k, v, _ in tracker.metrics if k == f"val_{config.hpo.metric}"]
    return losses, values, tracker.tags


def test_a_compiled_trial_trains_repeats_itself_and_auto_measures_once(
    tmp_path: Path, model_cache: Path
) -> None:
    # One test: the runs after the first hit inductor's disk cache (tmp_path/compile), which keeps it cheap.
    torch.set_num_threads(1)
    first = _fit(tmp_path, model_cache, "train.compile=true")
    again = _fit(tmp_path, model_cache, "train.compile=true")
    assert first[2]["compiled"] == "true" and first[2]["fast_dropout"] == "false"
    assert all(torch.isfinite(torch.tensor(first[0])))
    # Resume exactness holds to the resume test's tolerance: a compiled run repeats itself.
    assert again[0] == pytest.approx(first[0], abs=1e-6)
    assert again[1] == pytest.approx(first[1], abs=1e-6)

    _, _, tags = _fit(tmp_path, model_cache, "train.compile=auto", "train.max_epochs=1")
    probe_file = tmp_path / "compile" / "probe.json"
    written = probe_file.read_text()
    (entry,) = json.loads(written).values()
    assert tags["compiled"] == str(entry["compile"]).lower()
    assert entry["eager_s"] > 0 and entry["compiled_s"] > 0 and entry["compile_s"] > 0
    _, _, remembered = _fit(tmp_path, model_cache, "train.compile=auto", "train.max_epochs=1")
    assert remembered["compiled"] == tags["compiled"]
    assert probe_file.read_text() == written  # read back, not measured again
