"""best_model/ of a LoRA model: merged (a plain encoder) or adapter + a hash-checked reference to the
base encoder; both load with from_pretrained and predict the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import compose_tiny
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.criteria import DESCRIPTIONS
from dsm5_hpo.errors import StorageError
from dsm5_hpo.inference.posts import Post
from dsm5_hpo.inference.predictor import Predictor, PredictSettings
from dsm5_hpo.models.export import (
    ADAPTER_FILE,
    ENCODER_DIR,
    HEADS_FILE,
    INFO_FILE,
    TOKENIZER_DIR,
    BaseEncoder,
    export_model,
)
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import DualHeadModel, build_model
from dsm5_hpo.storage.atomic import sha256_file

POSTS = [
    Post("p1", "I can't sleep at night and I feel worthless about everything I do.", 1),
    Post("p2", "Lost my appetite, nothing is fun anymore, I just stay in bed all day.", 2),
]


def description(config: StudyConfig) -> dict[str, Any]:
    criteria = list(config.data.criteria)
    return {
        "input_format": config.data.input_format,
        "criteria": criteria,
        "questions": {c: DESCRIPTIONS[c] for c in criteria},
        "match_threshold": 0.5,
        "null_score_margin": 0.0,
        "evidence_gating": "null_score",
        "max_length": config.data.max_length,
        "doc_stride": config.data.doc_stride,
        "max_answer_tokens": config.data.max_answer_tokens,
        "dropout": config.train.dropout,
    }


class Exports:
    def __init__(self, root: Path, model_cache: Path) -> None:
        self.config = compose_tiny(root / "experiments", model_cache, "train.finetuning=lora")
        self.base = resolve_model(self.config.model, cache_dir=model_cache).path
        torch.manual_seed(0)
        self.model = build_model(self.base, self.config).eval()
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():  # trained adapters: B away from its zero start, so merging matters
            for name, parameter in self.model.named_parameters():
                if ".lora_B." in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        tokenizer = load_tokenizer(self.base)
        self.merged = export_model(
            self.model, tokenizer, root / "merged" / "best_model", description=description(self.config)
        )
        self.unmerged = export_model(
            self.model,
            tokenizer,
            root / "unmerged" / "best_model",
            description=description(self.config),
            merge_lora=False,
            base=BaseEncoder(self.config.model, self.base),
        )


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Exports:
    return Exports(tmp_path_factory.mktemp("lora_export"), model_cache)


def info(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / INFO_FILE).read_text())
    return loaded


def test_the_merged_export_is_a_plain_encoder_beside_the_adapter(exports: Exports) -> None:
    described = info(exports.merged)
    assert {f"{ENCODER_DIR}/model.safetensors", HEADS_FILE, ADAPTER_FILE} <= set(described["files"])
    assert described["finetuning"] == "lora" and described["lora"]["merged"] is True
    assert described["lora"]["targets"] == exports.model.lora_targets
    model = DualHeadModel.from_pretrained(exports.merged)
    assert model.lora is None
    assert not any("lora_" in name or "base_layer" in name for name in model.state_dict())


def test_the_unmerged_export_refers_to_its_base_by_id_and_hash(exports: Exports) -> None:
    described = info(exports.unmerged)
    assert not (exports.unmerged / ENCODER_DIR).exists()
    assert (exports.unmerged / TOKENIZER_DIR).is_dir() and (exports.unmerged / ADAPTER_FILE).is_file()
    base = described["lora"]["base"]
    assert described["lora"]["merged"] is False
    assert (
        base["local_path"] == "tiny" and base["tiny"]["hidden_size"] == exports.config.model.tiny.hidden_size
    )
    assert base["files"] == {
        "model.safetensors": {
            "sha256": sha256_file(exports.base / "model.safetensors"),
            "bytes": (exports.base / "model.safetensors").stat().st_size,
        }
    }


def test_merged_and_unmerged_exports_predict_the_same(exports: Exports) -> None:
    settings = PredictSettings(device="cpu", precision="fp32")
    merged = list(Predictor(exports.merged, settings).predict(POSTS))
    unmerged = list(Predictor(exports.unmerged, settings).predict(POSTS))
    assert len(merged) == len(unmerged) == len(POSTS)
    for a, b in zip(merged, unmerged, strict=True):
        for x, y in zip(a["criteria"], b["criteria"], strict=True):
            assert x["criterion"] == y["criterion"]
            assert abs(x["probability"] - y["probability"]) <= 1e-5
            assert x["match"] == y["match"]
            if x["evidence"] is not None or y["evidence"] is not None:
                assert x["evidence"]["start"] == y["evidence"]["start"]
                assert abs(x["evidence"]["score"] - y["evidence"]["score"]) <= 1e-4
    # ...and the same as the model that was exported
    reference = DualHeadModel.from_pretrained(exports.unmerged)
    for name, tensor in exports.model.state_dict().items():
        assert torch.equal(reference.state_dict()[name], tensor), name


def test_a_base_whose_weights_changed_is_refused_naming_the_file_and_the_fix(
    exports: Exports, tmp_path: Path
) -> None:
    tampered = tmp_path / "base"
    shutil.copytree(exports.base, tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StorageError) as error:
        DualHeadModel.from_pretrained(exports.unmerged, base_path=tampered)
    message = str(error.value)
    assert str(weights) in message and "SHA-256" in message
    assert "base_path" in message and "export.merge_lora=true" in message


def test_a_base_without_its_weight_file_is_refused(exports: Exports, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    shutil.copytree(exports.base, empty, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(StorageError, match=r"model\.safetensors is missing.*--base-model"):
        Predictor(exports.unmerged, PredictSettings(device="cpu", base_model=empty))
