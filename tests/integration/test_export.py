"""The study's best model is exported to study_<uuid>/best_model and loads, hash-verified, without the study."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsm5_hpo.data.criteria import CRITERIA
from dsm5_hpo.errors import StorageError
from dsm5_hpo.models.export import HEADS_FILE, INFO_FILE, read_info
from dsm5_hpo.models.multi_task import DualHeadModel
from integration_helpers import FinishedStudy

pytestmark = pytest.mark.integration

# Runs in a fresh interpreter: the exported folder and the trial's saved config are all it gets.
FRESH_PROCESS = """
import json, sys, dataclasses
from pathlib import Path
import torch
from dsm5_hpo.cli.evaluate import _trial_config
from dsm5_hpo.data.prepare import prepare_data
from dsm5_hpo.models.loading import load_tokenizer
from dsm5_hpo.models.multi_task import DualHeadModel
from dsm5_hpo.evaluation.prediction import EvaluationData, evaluate_model

folder, trial_dir = Path(sys.argv[1]), Path(sys.argv[2])
model = DualHeadModel.from_pretrained(folder)
info = model.export_info
config = _trial_config(trial_dir)
train = dataclasses.replace(
    config.train, match_threshold=info["match_threshold"], null_score_margin=info["null_score_margin"]
)
data = prepare_data(config.data, load_tokenizer(folder / "encoder"), seed=config.train.seed)
test = data.splits["test"]
result = evaluate_model(
    model, EvaluationData(test.examples, test.features), train, device=torch.device("cpu"),
    criteria=info["criteria"], max_answer_tokens=info["max_answer_tokens"],
)
print(json.dumps(result.metrics))
"""


@pytest.fixture(scope="module")
def exported(finished_study: FinishedStudy) -> Path:
    folder = finished_study.study_dir / "best_model"
    assert folder.is_dir()
    return folder


def test_the_export_holds_encoder_heads_and_a_described_file_table(
    exported: Path, finished_study: FinishedStudy
) -> None:
    info = json.loads((exported / INFO_FILE).read_text())
    assert {"encoder/config.json", "encoder/model.safetensors", HEADS_FILE} <= set(info["files"])
    assert any(name.startswith("encoder/tokenizer") for name in info["files"])
    report = finished_study.report
    assert info["trial_id"] == report["best_trial_id"] and info["study_id"] == report["study_id"]
    assert info["match_threshold"] == report["resolved_config"]["train"]["match_threshold"]
    assert info["criteria"] == list(CRITERIA)  # data.include_special_case is off
    assert info["input_format"] == "binary_pairs" and set(info["questions"]) == set(info["criteria"])
    assert read_info(exported) == info
    assert not list(exported.parent.glob(".tmp-best_model-*"))


def test_a_fresh_process_gets_the_in_study_test_metrics(
    exported: Path, finished_study: FinishedStudy
) -> None:
    trial_dir = finished_study.experiments / f"trial_{finished_study.report['best_trial_id']}"
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(exported), str(trial_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics == pytest.approx(finished_study.report["test_metrics"])


@pytest.mark.parametrize("damage", ["flip_heads", "delete_encoder_weights", "bad_info"])
def test_a_damaged_export_is_refused_naming_the_file(exported: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "best_model"
    shutil.copytree(exported, copy)
    if damage == "flip_heads":
        blob = bytearray((copy / HEADS_FILE).read_bytes())
        blob[-1] ^= 0xFF
        (copy / HEADS_FILE).write_bytes(bytes(blob))
        expected = HEADS_FILE
    elif damage == "delete_encoder_weights":
        (copy / "encoder" / "model.safetensors").unlink()
        expected = "encoder/model.safetensors"
    else:
        (copy / INFO_FILE).write_text("{")
        expected = INFO_FILE
    with pytest.raises(StorageError, match=expected.replace(".", r"\.")):
        DualHeadModel.from_pretrained(copy)


def test_a_full_disk_during_export_keeps_the_previous_export_and_leaves_no_staging(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from dsm5_hpo.models import export as export_module

    model = DualHeadModel.from_pretrained(exported)
    target = tmp_path / "best_model"
    shutil.copytree(exported, target)
    before = read_info(target)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module, "save_file", disk_full)
    from dsm5_hpo.models.loading import load_tokenizer

    tokenizer = load_tokenizer(exported / "encoder")
    with pytest.raises(StorageError, match=r"cannot export the best model to .*No space left on device"):
        export_module.export_model(model, tokenizer, target, description={"input_format": "binary_pairs"})
    assert read_info(target) == before  # the previous export, whole and verified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model"]  # no .tmp-best_model-* left
