"""contracts/checkpoint_metadata.schema.json: a valid schema, met by real metadata, enforced on save."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from torch import nn

from conftest import REPO_ROOT
from dsm5_hpo.checkpointing.manager import (
    METADATA_FILE,
    CheckpointManager,
    TrainingState,
    architecture_signature,
    capture_rng_state,
)
from dsm5_hpo.checkpointing.metadata import SCHEMA_FILE, validate_metadata, weights_only_metadata


def state(epoch: int = 0, metric_name: str = "joint_score") -> TrainingState:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    return TrainingState(
        epoch=epoch,
        step=4,
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        scheduler_state={},
        rng_state=capture_rng_state(),
        best_value=0.5,
        best_epoch=epoch,
        history=[{metric_name: 0.5}],
        metrics={metric_name: 0.5, "criteria_auroc": None},
        metric_name=metric_name,
        metric_value=0.5,
    )


def manager(folder: Path) -> CheckpointManager:
    return CheckpointManager(
        folder,
        trial_id="trial-1",
        architecture_signature=architecture_signature(nn.Linear(3, 2)),
        head_config={"criteria_head": "linear_cls", "hidden_size": 384},
    )


@pytest.fixture
def metadata(tmp_path: Path) -> dict[str, Any]:
    info = manager(tmp_path / "trial" / "checkpoints").save(state())
    loaded: dict[str, Any] = json.loads((info.path / METADATA_FILE).read_text(encoding="utf-8"))
    return loaded


def test_schema_file_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA_FILE == REPO_ROOT / "contracts" / "checkpoint_metadata.schema.json"
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


def test_real_metadata_meets_the_contract(metadata: dict[str, Any]) -> None:
    validate_metadata(metadata)
    schema = json.loads(SCHEMA_FILE.read_text())
    assert set(metadata) == set(schema["required"]) | {"tensors"} == set(schema["properties"])
    assert metadata["schema_version"] == "2.0" and set(metadata["tensors"]) == {"weight", "bias"}


def test_format_1_metadata_is_still_valid(metadata: dict[str, Any]) -> None:
    """Checkpoints written before the blob store (weights in model.safetensors) are still read."""
    legacy = copy.deepcopy(metadata)
    legacy["schema_version"] = "1.0"
    legacy.pop("tensors")
    legacy["files"]["model.safetensors"] = {"sha256": "0" * 64, "bytes": 10}
    validate_metadata(legacy)
    legacy["files"].pop("model.safetensors")
    with pytest.raises(jsonschema.ValidationError, match=r"model\.safetensors"):
        validate_metadata(legacy)


BREAKAGES: list[Callable[[dict[str, Any]], object]] = [
    lambda m: m.pop("checkpoint_sha256"),
    lambda m: m.pop("architecture_signature"),
    lambda m: m.update(checkpoint_sha256="not-a-hash"),
    lambda m: m.update(checkpoint_sha256="A" * 64),  # upper-case hex is not what we write
    lambda m: m.update(architecture_signature="0" * 63),
    lambda m: m["files"]["training_state.pt"].update(sha256="xyz"),
    lambda m: m["files"]["training_state.pt"].update(bytes=-1),
    lambda m: m["files"]["training_state.pt"].pop("bytes"),
    lambda m: m["tensors"]["weight"].update(blob="xyz"),
    lambda m: m["tensors"]["weight"].update(bytes=-1),
    lambda m: m["tensors"]["weight"].pop("blob"),
    lambda m: m["tensors"]["weight"].update(path="/elsewhere"),
    lambda m: m.update(schema_version="1.0"),  # 1.0 has model.safetensors and no tensors
    lambda m: m["files"].pop("training_state.pt"),
    lambda m: m.update(resume_capable=False),  # weights-only must not list training_state.pt
    lambda m: m.update(resume_capable="yes"),
    lambda m: m.pop("resume_capable"),
    lambda m: m.pop("tensors"),
    lambda m: m["files"].update({"../escape.bin": m["files"]["training_state.pt"]}),
    lambda m: m["files"].update({"sub/dir.bin": m["files"]["training_state.pt"]}),
    lambda m: m.update(epoch=-1),
    lambda m: m.update(epoch="3"),
    lambda m: m.update(step=1.5),
    lambda m: m["metrics"].update(joint_score="high"),
    lambda m: m.update(metric_value=None),
    lambda m: m.update(metric_name=""),
    lambda m: m.update(trial_id=""),
    lambda m: m.update(head_config=[]),
    lambda m: m.update(schema_version="3.0"),
    lambda m: m.update(unexpected=1),
]


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_metadata_is_refused(
    metadata: dict[str, Any], breakage: Callable[[dict[str, Any]], object]
) -> None:
    broken = copy.deepcopy(metadata)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate_metadata(broken)


def test_metadata_breaking_the_contract_is_never_committed(tmp_path: Path) -> None:
    with pytest.raises(jsonschema.ValidationError, match="metric_name"):
        manager(tmp_path / "trial" / "checkpoints").save(state(metric_name=""))
    assert list((tmp_path / "trial" / "checkpoints").iterdir()) == []  # no checkpoint, no staging directory


def test_weights_only_metadata_meets_the_contract(metadata: dict[str, Any]) -> None:
    stripped = weights_only_metadata(metadata)
    validate_metadata(stripped)
    assert stripped["resume_capable"] is False and set(stripped["files"]) == set()
    assert stripped["tensors"] == metadata["tensors"]  # the weights stay
    assert stripped["checkpoint_sha256"] != metadata["checkpoint_sha256"]
