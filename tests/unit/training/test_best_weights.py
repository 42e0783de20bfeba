"""Best weights on disk: round trip, hash check before loading, atomic replacement, clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from dsm5_hpo.errors import StorageError
from dsm5_hpo.storage.atomic import sha256_file
from dsm5_hpo.training.best_weights import (
    METADATA_FILE,
    WEIGHTS_FILE,
    BestWeightsWriter,
    NullBestWeights,
    load_best_weights,
    read_metadata,
)

METRICS = {"joint_score": 0.5, "criteria_auroc": None}


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def save(folder: Path, model: nn.Module, epoch: int = 0, value: float = 0.5) -> None:
    BestWeightsWriter(folder).save(
        model, epoch=epoch, step=10 * (epoch + 1), metric="joint_score", value=value, metrics=METRICS
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "trial" / "checkpoints" / "best"


@pytest.fixture
def load_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every safetensors load, to prove nothing is deserialized before the hash check."""
    calls: list[str] = []
    real = safetensors.torch.load_model

    def spy(model: nn.Module, filename: str, *args: object, **kwargs: object) -> object:
        calls.append(filename)
        return real(model, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_model", spy)
    return calls


def test_round_trip(folder: Path, load_spy: list[str]) -> None:
    saved = make_model(0)
    save(folder, saved, epoch=3, value=0.75)
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS_FILE, METADATA_FILE])

    fresh = make_model(1)
    assert not same_weights(saved, fresh)
    metadata = load_best_weights(fresh, folder)
    assert same_weights(saved, fresh)
    assert load_spy == [str(folder / WEIGHTS_FILE)]

    assert metadata == read_metadata(folder)
    assert metadata["epoch"] == 3
    assert metadata["step"] == 40
    assert metadata["metric"] == "joint_score"
    assert metadata["value"] == 0.75
    assert metadata["metrics"] == METRICS
    assert "created_at" in metadata
    entry = metadata["files"][WEIGHTS_FILE]
    assert entry["sha256"] == sha256_file(folder / WEIGHTS_FILE)
    assert entry["bytes"] == (folder / WEIGHTS_FILE).stat().st_size


def test_corrupted_weights_are_refused_before_loading(folder: Path, load_spy: list[str]) -> None:
    save(folder, make_model(0))
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) - 3] ^= 0xFF  # a byte of the tensor data: the file still parses
    weights.write_bytes(bytes(data))

    fresh = make_model(1)
    before = snapshot(fresh)
    with pytest.raises(StorageError, match="SHA-256") as caught:
        load_best_weights(fresh, folder)
    assert str(weights) in str(caught.value)
    assert load_spy == []
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_truncated_weights_are_refused(folder: Path, load_spy: list[str]) -> None:
    save(folder, make_model(0))
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(StorageError, match="SHA-256"):
        load_best_weights(make_model(1), folder)
    assert load_spy == []


def test_missing_weights_are_a_storage_error(folder: Path, load_spy: list[str]) -> None:
    save(folder, make_model(0))
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(StorageError, match="missing") as caught:
        load_best_weights(make_model(1), folder)
    assert str(folder / WEIGHTS_FILE) in str(caught.value)
    assert load_spy == []


def test_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="metadata"):
        load_best_weights(make_model(1), tmp_path / "never_written")


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",  # not even UTF-8
        b"[1, 2, 3]",  # JSON, but not an object
        b'{"epoch": 1}',  # an object without the file table
        b"",
    ],
)
def test_unreadable_metadata_is_a_storage_error(folder: Path, load_spy: list[str], content: bytes) -> None:
    save(folder, make_model(0))
    (folder / METADATA_FILE).write_bytes(content)
    with pytest.raises(StorageError) as caught:
        load_best_weights(make_model(1), folder)
    assert str(folder / METADATA_FILE) in str(caught.value)
    assert load_spy == []
    with pytest.raises(StorageError):
        read_metadata(folder)


def test_metadata_without_the_weights_hash_is_refused(folder: Path, load_spy: list[str]) -> None:
    save(folder, make_model(0))
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata["files"] = {}
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(StorageError, match="SHA-256"):
        load_best_weights(make_model(1), folder)
    assert load_spy == []


def test_second_save_replaces_the_first_without_leftovers(folder: Path) -> None:
    first, second = make_model(0), make_model(1)
    save(folder, first, epoch=0, value=0.4)
    save(folder, second, epoch=1, value=0.6)
    assert [p.name for p in folder.parent.iterdir()] == ["best"]  # no staging or .old folder
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS_FILE, METADATA_FILE])
    fresh = make_model(2)
    metadata = load_best_weights(fresh, folder)
    assert metadata["epoch"] == 1
    assert metadata["value"] == 0.6
    assert same_weights(fresh, second)


def test_save_creates_missing_parents(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "best"
    save(folder, make_model(0))
    assert (folder / WEIGHTS_FILE).is_file()


def test_failed_serialization_leaves_the_previous_best(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_model(0)
    save(folder, first, epoch=0)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot serialize")

    monkeypatch.setattr(safetensors.torch, "save_model", broken)
    with pytest.raises(RuntimeError, match="cannot serialize"):
        save(folder, make_model(1), epoch=1)
    assert [p.name for p in folder.parent.iterdir()] == ["best"]
    fresh = make_model(2)
    assert load_best_weights(fresh, folder)["epoch"] == 0
    assert same_weights(fresh, first)


def test_failed_swap_keeps_the_previous_best(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename of the new folder into place fails after the old one was moved aside."""
    first = make_model(0)
    save(folder, first, epoch=0)
    real_replace = os.replace

    def failing_replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        if Path(dst) == folder and Path(src).name.startswith(".best.") and Path(src).name != ".best.old":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StorageError, match="No space left") as caught:
        save(folder, make_model(1), epoch=1)
    assert str(folder) in str(caught.value)
    monkeypatch.setattr(os, "replace", real_replace)

    assert [p.name for p in folder.parent.iterdir()] == ["best"]
    fresh = make_model(2)
    assert load_best_weights(fresh, folder)["epoch"] == 0
    assert same_weights(fresh, first)


def test_crash_between_the_two_renames_is_recovered(folder: Path) -> None:
    first = make_model(0)
    save(folder, first, epoch=0)
    os.replace(folder, folder.parent / ".best.old")  # what a crash after the first rename leaves

    fresh = make_model(2)
    assert load_best_weights(fresh, folder)["epoch"] == 0
    assert same_weights(fresh, first)
    assert [p.name for p in folder.parent.iterdir()] == ["best"]

    os.replace(folder, folder.parent / ".best.old")
    second = make_model(1)
    save(folder, second, epoch=1)  # a later save does not delete the parked copy before committing
    assert [p.name for p in folder.parent.iterdir()] == ["best"]
    assert load_best_weights(fresh, folder)["epoch"] == 1
    assert same_weights(fresh, second)


def test_null_sink_keeps_nothing_but_remembers_epochs(tmp_path: Path) -> None:
    sink = NullBestWeights()
    for epoch in (0, 2):
        sink.save(make_model(0), epoch=epoch, step=1, metric="m", value=0.1, metrics={})
    assert sink.saved_epochs == [0, 2]
    assert list(tmp_path.iterdir()) == []


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "best"
    BestWeightsWriter(folder).save(nn.Linear(4, 2), epoch=0, step=1, metric="m", value=0.5, metrics={})
    with pytest.raises(StorageError, match="does not fit this model"):
        load_best_weights(nn.Linear(3, 2), folder)
