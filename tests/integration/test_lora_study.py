"""train.finetuning=lora end to end: a tiny study through the train CLI trains adapters, exports them
unmerged (export.merge_lora=false), and the predict CLI reads that export like a merged one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsm5_hpo.cli import predict
from dsm5_hpo.models.export import ADAPTER_FILE, INFO_FILE, TOKENIZER_DIR, export_model
from dsm5_hpo.models.loading import load_tokenizer
from dsm5_hpo.models.multi_task import DualHeadModel
from integration_helpers import FinishedStudy, run_study

pytestmark = pytest.mark.integration

POSTS = "I cannot sleep and I feel worthless every day.\nNothing is fun anymore and I barely eat.\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> FinishedStudy:
    return run_study(
        tmp_path_factory.mktemp("lora") / "experiments",
        model_cache,
        "train.finetuning=lora",
        "train.learning_rate_encoder=1e-3",
        "export.merge_lora=false",
    )


def _predict(model: Path, posts: Path, output: Path) -> list[dict[str, Any]]:
    """The predict CLI, in this process (a subprocess would spend seconds importing torch again)."""
    arguments = ["--model", str(model), "--input", str(posts), "--output", str(output)]
    code = predict.main([*arguments, "--format", "text", "--precision", "fp32"])
    assert code == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_a_lora_study_exports_its_adapter_and_predicts_like_the_merged_model(
    study: FinishedStudy, tmp_path: Path
) -> None:
    for config in study.experiments.glob("trial_*/config.yaml"):
        assert yaml.safe_load(config.read_text())["train"]["finetuning"] == "lora"
    exported = study.study_dir / "best_model"
    info = json.loads((exported / INFO_FILE).read_text())
    assert info["finetuning"] == "lora" and info["lora"]["merged"] is False
    assert (exported / ADAPTER_FILE).is_file() and (exported / TOKENIZER_DIR).is_dir()
    assert info["lora"]["base"]["files"]  # the base encoder's weights, by SHA-256

    # The same model exported merged, from the unmerged export loaded back.
    model = DualHeadModel.from_pretrained(exported)
    described = {k: v for k, v in info.items() if k not in ("format", "files", "heads", "head_config")}
    merged = export_model(
        model,
        load_tokenizer(exported / TOKENIZER_DIR),
        tmp_path / "merged" / "best_model",
        description=described,
    )
    posts = tmp_path / "posts.txt"
    posts.write_text(POSTS)
    unmerged_lines = _predict(exported, posts, tmp_path / "unmerged.jsonl")
    merged_lines = _predict(merged, posts, tmp_path / "merged.jsonl")
    assert len(unmerged_lines) == len(merged_lines) == 2
    for a, b in zip(unmerged_lines, merged_lines, strict=True):
        for x, y in zip(a["criteria"], b["criteria"], strict=True):
            assert abs(x["probability"] - y["probability"]) <= 1e-5
