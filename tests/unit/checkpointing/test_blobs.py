"""The blob store: content addressing, shared tensors stored once, verification, and collection that
never loses a referenced blob nor races a save in flight."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

from checkpoint_helpers import blob_names, small_state
from conftest import captured_logs
from dsm5_hpo.checkpointing import manager as manager_module
from dsm5_hpo.checkpointing import writer as writer_module
from dsm5_hpo.checkpointing.base_weights import BaseWeights
from dsm5_hpo.checkpointing.blob_gc import collect_garbage, mark
from dsm5_hpo.checkpointing.blobs import BlobError, BlobStore
from dsm5_hpo.checkpointing.manager import CheckpointManager, architecture_signature
from dsm5_hpo.checkpointing.metadata import checkpoint_sha256, peek_checkpoint, validate_metadata
from dsm5_hpo.checkpointing.size import estimate_checkpoint_bytes
from dsm5_hpo.checkpointing.tensor_io import blob_digest, load_tensor, put_tensor
from dsm5_hpo.checkpointing.training_state import TrainingState, snapshot
from dsm5_hpo.checkpointing.verify import read_weights
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.layout import ExperimentLayout
from dsm5_hpo.storage.atomic import sha256_file

HEADS = {"hidden_size": 3}


class Frozen(nn.Module):
    """A 'pretrained' layer that training never changes, under a 'head' that it does."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.base = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)


def manager(root: Path, trial: str, **policy: object) -> CheckpointManager:
    return CheckpointManager(
        root / f"trial_{trial}" / "checkpoints",
        trial_id=trial,
        architecture_signature=architecture_signature(Frozen()),
        head_config=HEADS,
        retention=RetentionConfig(**policy),  # type: ignore[arg-type]
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )


def trained(epoch: int) -> Frozen:
    """The model after ``epoch`` epochs: the head moved, the base did not."""
    model = Frozen()
    model.base.requires_grad_(False)  # as train.freeze_layers or LoRA leave the encoder
    with torch.no_grad():
        model.head.weight.add_(epoch + 1)
    return model


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    with captured_logs("dsm5_hpo.checkpointing") as logged:
        yield logged


def test_a_blob_is_the_safetensors_file_of_its_tensor_named_by_its_sha256(tmp_path: Path) -> None:
    store, tensor = BlobStore(tmp_path / "blobs"), torch.arange(12.0).reshape(3, 4)
    with store.shared():
        stored = put_tensor(store, tensor)
        again = put_tensor(store, tensor.clone())
    assert stored.written and not again.written  # the same content is one file
    path = store.path(stored.digest.sha256)
    assert path.read_bytes() == safetensors.torch.save({"t": tensor})
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stored.digest.sha256 == blob_digest(tensor).sha256
    assert torch.equal(load_tensor(store, stored.digest.sha256), tensor)
    assert stored.digest.bytes == path.stat().st_size


def test_a_damaged_or_missing_blob_is_refused_by_its_name(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with store.shared():
        sha = put_tensor(store, torch.ones(4)).digest.sha256
    data = bytearray(store.path(sha).read_bytes())
    data[-1] ^= 1
    store.path(sha).write_bytes(bytes(data))
    with pytest.raises(BlobError, match="SHA-256 mismatch"):
        load_tensor(store, sha)
    with pytest.raises(BlobError, match="SHA-256 mismatch"):
        store.verify(sha)
    store.path(sha).unlink()
    with pytest.raises(BlobError, match="missing"):
        load_tensor(store, sha)


def test_unchanged_tensors_are_stored_once_across_epochs_and_trials(tmp_path: Path) -> None:
    for trial in ("a", "b"):
        saver = manager(tmp_path, trial, keep_all=True)
        for epoch in range(3):
            saver.save(small_state(trained(epoch), epoch, 0.1 * epoch))
    layout = ExperimentLayout(tmp_path)
    checkpoints = sorted(tmp_path.glob("trial_*/checkpoints/epoch_*"))
    assert len(checkpoints) == 6
    # base.weight and base.bias (frozen): one blob each for all six; the head: one blob per epoch,
    # trials a and b reaching the same head weights at the same epoch.
    assert len(list(BlobStore(layout.blobs).names())) == 2 + 3
    first = peek_checkpoint(checkpoints[0])
    assert first.blobs and first.bytes == first.own_bytes + sum(first.blobs.values())


def test_collection_removes_only_what_no_checkpoint_references(tmp_path: Path) -> None:
    saver = manager(tmp_path, "a", keep_last_n=1, keep_best_k=1)
    for epoch, value in enumerate([0.9, 0.1, 0.2]):
        saver.save(small_state(trained(epoch), epoch, value))  # epoch 1 is pruned at epoch 2's save
    layout, store = ExperimentLayout(tmp_path), BlobStore(tmp_path / "blobs")
    referenced = set(mark(layout).referenced)
    assert {name for name, _ in store.names()} == referenced  # the pruning collected epoch 1's head
    orphan = put_orphan(store)
    assert collect_garbage(layout, dry_run=True).orphans == 1 and store.size(orphan) is not None
    collection = collect_garbage(layout)
    assert (collection.removed, collection.freed) == (1, blob_digest(torch.full((5,), 7.0)).bytes)
    assert {name for name, _ in store.names()} == referenced
    for checkpoint in saver.valid_checkpoints():  # hash-verified, blobs included
        assert set(checkpoint.blobs) <= referenced


def put_orphan(store: BlobStore) -> str:
    with store.shared():
        return put_tensor(store, torch.full((5,), 7.0)).digest.sha256


def test_collection_never_races_a_save_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save has written its blobs but not committed its checkpoint: nothing references them yet,
    and a collection must still leave them (it waits for the save, and gives up after its timeout)."""
    blobs_written, release = threading.Event(), threading.Event()
    real_commit = manager_module.commit_directory

    def slow_commit(staging: Path, target: Path) -> None:
        blobs_written.set()
        assert release.wait(10)
        real_commit(staging, target)

    monkeypatch.setattr(manager_module, "commit_directory", slow_commit)
    saver = manager(tmp_path, "a")
    thread = threading.Thread(target=saver.save, args=(small_state(trained(0), 0, 0.5),))
    thread.start()
    assert blobs_written.wait(10)
    store, layout = BlobStore(tmp_path / "blobs"), ExperimentLayout(tmp_path)
    in_flight = {name for name, _ in store.names()}
    assert in_flight and not list((tmp_path / "trial_a" / "checkpoints").glob("epoch_*"))  # not committed
    postponed = collect_garbage(layout, timeout_s=0.2)
    assert postponed.skipped == "saves in flight" and postponed.removed == 0
    assert {name for name, _ in store.names()} == in_flight
    release.set()
    thread.join(10)
    assert collect_garbage(layout).removed == 0
    (checkpoint,) = saver.valid_checkpoints()
    assert set(checkpoint.blobs) == in_flight


def test_unreadable_metadata_stops_the_sweep(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    saver = manager(tmp_path, "a", keep_all=True)
    saver.save(small_state(trained(0), 0, 0.5))
    orphan = put_orphan(BlobStore(tmp_path / "blobs"))
    (tmp_path / "trial_a" / "checkpoints" / "epoch_0000" / "metadata.json").write_text("{not json")
    collection = collect_garbage(ExperimentLayout(tmp_path))
    assert collection.removed == 0 and collection.skipped and "unreadable" in collection.skipped
    assert BlobStore(tmp_path / "blobs").size(orphan) is not None
    assert any("blob collection skipped" in r.getMessage() for r in records)


def test_a_damaged_blob_names_every_checkpoint_using_it_and_the_previous_checkpoint_is_used(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    a, b = manager(tmp_path, "a", keep_all=True), manager(tmp_path, "b", keep_all=True)
    a.save(small_state(trained(0), 0, 0.1))
    a.save(small_state(trained(1), 1, 0.2))
    b.save(small_state(trained(1), 0, 0.3))  # the same weights as a's epoch 1: the same blobs
    newest = tmp_path / "trial_a" / "checkpoints" / "epoch_0001"
    shared_head = json.loads((newest / "metadata.json").read_text())["tensors"]["head.weight"]["blob"]
    assert shared_head not in blob_names(tmp_path / "trial_a" / "checkpoints" / "epoch_0000")
    blob = BlobStore(tmp_path / "blobs").path(shared_head)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))

    loaded = manager(tmp_path, "a", keep_all=True).load_latest()
    assert loaded is not None and loaded.info.epoch == 0
    (error,) = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert str(blob) in error and "SHA-256 mismatch" in error
    assert str(newest) in error and str(tmp_path / "trial_b" / "checkpoints" / "epoch_0000") in error
    assert list((tmp_path / "trial_a" / "checkpoints" / "quarantine").glob("epoch_0001-*"))
    assert list((tmp_path / "blobs" / "quarantine").glob(f"{shared_head}-*"))  # kept as evidence
    # Trial b's checkpoint lost its blob: it is refused (missing) rather than loaded damaged ...
    assert manager(tmp_path, "b", keep_all=True).load_latest() is None
    # ... and a new save of the same weights writes the blob anew.
    a.save(small_state(trained(1), 1, 0.2))
    assert BlobStore(tmp_path / "blobs").size(shared_head) is not None
    BlobStore(tmp_path / "blobs").verify(shared_head)


def pretrained_folder(tmp_path: Path) -> Path:
    """A read-only model folder holding the 'pretrained' base, under the names a model file uses."""
    folder = tmp_path / "site-packages" / "model"
    folder.mkdir(parents=True)
    base = Frozen().base
    safetensors.torch.save_file(
        {"encoder.weight": base.weight.detach(), "encoder.bias": base.bias.detach()},
        folder / "model.safetensors",
    )
    return folder


def test_pretrained_tensors_are_read_in_place_not_copied(tmp_path: Path) -> None:
    folder = pretrained_folder(tmp_path / "models")
    root = tmp_path / "experiments"
    saver = manager(root, "a", keep_all=True)
    saver.base = BaseWeights(folder)
    info = saver.save(small_state(trained(0), 0, 0.5))
    assert info is not None
    metadata = json.loads((info.path / "metadata.json").read_text())
    entries = metadata["tensors"]
    assert entries["base.weight"]["base"] == {
        "file": str(folder / "model.safetensors"),
        "key": "encoder.weight",
    }
    assert "base" not in entries["head.weight"]
    store = BlobStore(root / "blobs")
    assert store.size(entries["base.weight"]["blob"]) is None  # not copied into the store
    assert set(info.blobs) == {entries["head.weight"]["blob"], entries["head.bias"]["blob"]}
    loaded = manager(root, "a").load_latest()
    assert loaded is not None
    for name, tensor in trained(0).state_dict().items():
        assert torch.equal(loaded.state.model_state[name], tensor), name
    collect_garbage(ExperimentLayout(root))  # in-place tensors are never the store's to collect
    assert manager(root, "a").load_latest() is not None


def test_a_changed_or_missing_pretrained_file_is_refused_with_the_fix(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    folder = pretrained_folder(tmp_path / "models")
    saver = manager(tmp_path / "experiments", "a", keep_all=True)
    saver.base = BaseWeights(folder)
    saver.save(small_state(trained(0), 0, 0.5))
    other = {"encoder.weight": torch.zeros(16, 16), "encoder.bias": torch.zeros(16)}
    safetensors.torch.save_file(other, folder / "model.safetensors")  # another package version
    assert manager(tmp_path / "experiments", "a").load_latest() is None
    (error,) = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert "model files changed" in error and "install the version it was trained from" in error
    assert not list((tmp_path / "experiments" / "blobs").glob("quarantine/*"))  # not the store's blob

    # A save after the change does not reference the changed file: the base is stored this time.
    saver.save(small_state(trained(0), 0, 0.5))
    entries = json.loads((saver.folder / "epoch_0000" / "metadata.json").read_text())["tensors"]
    assert "base" not in entries["base.weight"]
    (folder / "model.safetensors").unlink()
    assert manager(tmp_path / "experiments", "a").load_latest() is not None

    folder = pretrained_folder(tmp_path / "again")
    saver = manager(tmp_path / "elsewhere", "b", keep_all=True)  # a store without the base
    saver.base = BaseWeights(folder)
    saver.save(small_state(trained(2), 0, 0.5))
    (folder / "model.safetensors").unlink()
    assert manager(tmp_path / "elsewhere", "b").load_latest() is None
    assert (
        "reinstall the model package" in [r.getMessage() for r in records if r.levelno == logging.ERROR][-1]
    )


def test_a_format_1_checkpoint_still_loads(tmp_path: Path) -> None:
    """Checkpoints written before the blob store hold their weights in model.safetensors."""
    saver = manager(tmp_path, "a", keep_all=True)
    info = saver.save(small_state(trained(0), 0, 0.5))
    assert info is not None
    write_format_1(info.path)
    shutil.rmtree(tmp_path / "blobs")  # nothing of the new format is left to read from
    reader = manager(tmp_path, "a", keep_all=True)
    (valid,) = reader.valid_checkpoints()
    assert not valid.blobs and valid.bytes == sum(p.stat().st_size for p in valid.path.iterdir())
    loaded = reader.load_latest()
    assert loaded is not None
    for name, tensor in trained(0).state_dict().items():
        assert torch.equal(loaded.state.model_state[name], tensor), name
    assert torch.equal(reader.load_weights(valid)["head.weight"], trained(0).head.weight)
    # A later save of the same trial writes format 2.0 beside it.
    reader.save(small_state(trained(1), 1, 0.6))
    assert (
        json.loads((tmp_path / "trial_a" / "checkpoints" / "epoch_0001" / "metadata.json").read_text())[
            "schema_version"
        ]
        == "2.0"
    )


def write_format_1(checkpoint: Path) -> None:
    """Rewrite a checkpoint as format 1.0 wrote it: model.safetensors, files listing it, no tensors."""
    metadata = json.loads((checkpoint / "metadata.json").read_text())
    weights = read_weights(checkpoint)
    safetensors.torch.save_file(weights, checkpoint / "model.safetensors")
    legacy = {key: value for key, value in metadata.items() if key not in ("tensors", "checkpoint_sha256")}
    legacy["schema_version"] = "1.0"
    legacy["files"]["model.safetensors"] = {
        "sha256": sha256_file(checkpoint / "model.safetensors"),
        "bytes": (checkpoint / "model.safetensors").stat().st_size,
    }
    legacy["checkpoint_sha256"] = checkpoint_sha256(legacy)
    validate_metadata(legacy)
    (checkpoint / "metadata.json").write_text(json.dumps(legacy, indent=2))
    (checkpoint / ".hash").write_text(legacy["checkpoint_sha256"] + "\n")


def test_the_preflight_estimate_leaves_out_frozen_tensors_already_on_disk(tmp_path: Path) -> None:
    model = trained(0)
    model.base.requires_grad_(False)  # frozen, as train.freeze_layers or LoRA leave the encoder
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    saver = manager(tmp_path, "a", keep_all=True)
    base_bytes = sum(t.numel() * t.element_size() for t in model.base.state_dict().values())
    before = estimate_checkpoint_bytes(model, optimizer, on_disk=saver.on_disk)
    assert before == estimate_checkpoint_bytes(model, optimizer)  # nothing stored yet: all counted
    saver.save(small_state(model, 0, 0.5))
    after = estimate_checkpoint_bytes(model, optimizer, on_disk=saver.on_disk)
    assert before - after == base_bytes  # the frozen base is in the store: the next save adds none of it
    with torch.no_grad():
        model.head.weight.add_(1.0)  # trained tensors are always counted, stored or not
    assert estimate_checkpoint_bytes(model, optimizer, on_disk=saver.on_disk) == after


def test_frozen_tensors_are_not_copied_by_the_snapshot_nor_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained(0)
    model.base.requires_grad_(False)
    frozen = frozenset(name for name, p in model.named_parameters() if not p.requires_grad)
    assert frozen == {"base.weight", "base.bias"}

    def state(epoch: int) -> TrainingState:
        return dataclasses.replace(small_state(model, epoch, 0.1 * epoch), frozen=frozen)

    copied = snapshot(state(0))
    assert copied.model_state["base.weight"].data_ptr() == model.base.weight.data_ptr()  # referenced
    assert copied.model_state["head.weight"].data_ptr() != model.head.weight.data_ptr()  # copied

    digested: list[tuple[int, ...]] = []
    real = writer_module.blob_digest

    def counting(tensor: torch.Tensor) -> Any:
        digested.append(tuple(tensor.shape))
        return real(tensor)

    groups: list[list[str]] = []
    real_group = writer_module.group_digest

    def counting_group(tensors: Any) -> Any:
        groups.append(sorted(tensors))
        return real_group(tensors)

    monkeypatch.setattr(writer_module, "blob_digest", counting)
    monkeypatch.setattr(writer_module, "group_digest", counting_group)
    saver = manager(tmp_path, "a", keep_all=True)
    saver.asynchronous = True
    for epoch in range(3):
        with torch.no_grad():
            model.head.weight.add_(1.0)  # training moves the head only
        saver.save(state(epoch))
        saver.wait()
    assert digested.count((16, 16)) == 1  # the frozen base weight: digested at the first save only
    assert groups == [["head.bias", "head.weight"]] * 3  # the trained head: one blob, every save
    with torch.no_grad():
        model.base.weight.mul_(2.0)  # an in-place write (a resume's load_state_dict is one) ...
    saver.save(state(3))
    saver.wait()
    assert digested.count((16, 16)) == 2  # ... is seen by the version counter: digested again
    loaded = manager(tmp_path, "a", keep_all=True).load_latest()
    assert loaded is not None and torch.equal(loaded.state.model_state["base.weight"], model.base.weight)
