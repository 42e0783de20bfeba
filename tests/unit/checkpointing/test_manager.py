"""CheckpointManager: exact round trip, verification before loading, quarantine and fallback, pruning."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from checkpoint_helpers import blob_names, checkpoint_disk_bytes, weights_blob
from conftest import captured_logs
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.manager import (
    HASH_FILE,
    METADATA_FILE,
    QUARANTINE_DIR,
    STATE_FILE,
    CheckpointInfo,
    CheckpointManager,
    TrainingState,
    architecture_signature,
    capture_rng_state,
    restore_rng_state,
)
from dsm5_hpo.checkpointing.metadata import validate_metadata
from dsm5_hpo.checkpointing.null import NullCheckpointManager
from dsm5_hpo.checkpointing.retention import choose_trial_checkpoints
from dsm5_hpo.checkpointing.training_state import check_weights_only, snapshot
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.errors import StorageError
from dsm5_hpo.storage.atomic import sha256_file
from dsm5_hpo.storage.exhaustion import StorageExhaustedError

HEADS = {"criteria_head": "linear_cls", "hidden_size": 8}
LOGGER = "dsm5_hpo.checkpointing"  # the manager and verify.py (quarantine)


class Run:
    """A tiny model with dropout, AdamW and a LambdaLR schedule: everything a resume must restore."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.3), nn.LayerNorm(8), nn.Linear(8, 2))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.01)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0 / (1 + step))

    def step(self) -> None:
        """One optimizer step on random data: uses torch's RNG (data and dropout)."""
        loss = self.model(torch.randn(4, 6)).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()

    def state(self, epoch: int, value: float, **extra: Any) -> TrainingState:
        return TrainingState(
            epoch=epoch,
            step=10 * (epoch + 1),
            model_state=self.model.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=self.scheduler.state_dict(),
            rng_state=capture_rng_state(),
            best_value=value,
            best_epoch=epoch,
            history=[{"joint_score": value}] * (epoch + 1),
            metrics={"joint_score": value, "criteria_auroc": None},
            metric_name="joint_score",
            metric_value=value,
            **extra,
        )


def fixed_clock() -> Callable[[], datetime]:
    moments = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in range(10_000))
    return lambda: next(moments)


def manager_for(folder: Path, run: Run | None = None, **kwargs: Any) -> CheckpointManager:
    if "keep_last" in kwargs:  # the newest-N rule of the retention policy, the rest at defaults
        kwargs["retention"] = RetentionConfig(keep_last_n=kwargs.pop("keep_last"))
    options: dict[str, Any] = {
        "trial_id": "trial-1",
        "architecture_signature": architecture_signature((run or Run()).model),
        "head_config": HEADS,
        "clock": fixed_clock(),
        **kwargs,
    }
    return CheckpointManager(folder, **options)


def save_epochs(folder: Path, values: list[float], **kwargs: Any) -> tuple[Run, CheckpointManager]:
    run = Run()
    manager = manager_for(folder, run, **kwargs)
    for epoch, value in enumerate(values):
        run.step()
        manager.save(run.state(epoch, value))
    return run, manager


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("epoch_"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "trial" / "checkpoints"


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    with captured_logs(LOGGER) as logged:
        yield logged


@pytest.fixture
def deserialized(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file deserialized (safetensors or torch.load), to prove bad files never are."""
    calls: list[str] = []
    real_load_file, real_load = safetensors.torch.load_file, torch.load

    def load_file(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(path))
        return real_load_file(path, *args, **kwargs)

    def load(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(path))
        return real_load(path, *args, **kwargs)

    real_parse = safetensors.torch.load

    def parse(data: bytes) -> Any:  # a blob: named by the SHA-256 of what was parsed
        calls.append(f"blob:{hashlib.sha256(data).hexdigest()}")
        return real_parse(data)

    monkeypatch.setattr(safetensors.torch, "load_file", load_file)
    monkeypatch.setattr(safetensors.torch, "load", parse)
    monkeypatch.setattr(torch, "load", load)
    return calls


def parsed_blobs(deserialized: list[str]) -> set[str]:
    return {call.removeprefix("blob:") for call in deserialized if call.startswith("blob:")}


BLOB = "<the weights blob>"
"""A corruption of the weights: in format 2.0 a blob of the store, not a file of the checkpoint."""


def tmp_blobs(folder: Path) -> Path:
    return folder.parent.parent / "blobs"


def errors(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == logging.ERROR]


def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


# ---------------------------------------------------------------------------- round trip


def test_rng_state_round_trip_gives_the_same_next_numbers(tmp_path: Path) -> None:
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    np.random.standard_normal()
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert draws() != expected
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_round_trip_resumes_training_bit_exactly(folder: Path, deserialized: list[str]) -> None:
    run, _ = save_epochs(folder, [0.5])
    at_checkpoint = capture_rng_state()
    expected_draws = draws()
    restore_rng_state(at_checkpoint)
    # The uninterrupted run continues for two more steps.
    run.step()
    run.step()
    uninterrupted = {k: v.clone() for k, v in run.model.state_dict().items()}

    torch.manual_seed(1234)  # a fresh process: other weights, other RNG state
    resumed = Run(seed=7)
    loaded = manager_for(folder, resumed).load_latest()
    assert loaded is not None
    assert (loaded.info.epoch, loaded.info.step, loaded.state.epoch, loaded.state.step) == (0, 10, 0, 10)
    resumed.model.load_state_dict(loaded.state.model_state)
    resumed.optimizer.load_state_dict(loaded.state.optimizer_state)
    resumed.scheduler.load_state_dict(loaded.state.scheduler_state)
    restore_rng_state(loaded.state.rng_state)
    assert draws() == expected_draws
    restore_rng_state(loaded.state.rng_state)
    resumed.step()
    resumed.step()
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, uninterrupted[name]), name
    assert loaded.state.metrics == {"joint_score": 0.5, "criteria_auroc": None}
    assert loaded.state.history == [{"joint_score": 0.5}]
    assert all(t.device.type == "cpu" for t in loaded.state.model_state.values())
    files = [Path(p).name for p in deserialized if not p.startswith("blob:")]
    assert files == [STATE_FILE]
    assert parsed_blobs(deserialized) == set(blob_names(folder / "epoch_0000"))  # the weights


def test_one_directory_per_save_with_verifiable_files(folder: Path) -> None:
    run, manager = save_epochs(folder, [0.1, 0.2], keep_last=5)
    assert names(folder) == ["epoch_0000", "epoch_0001"]
    checkpoint = folder / "epoch_0001"
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted([STATE_FILE, METADATA_FILE, HASH_FILE])
    payload = torch.load(checkpoint / STATE_FILE, weights_only=True)
    assert payload["epoch"] == 1
    assert payload["rng_state"]["numpy"]["keys"].dtype == torch.int64
    metadata = json.loads((checkpoint / METADATA_FILE).read_text())
    validate_metadata(metadata)
    assert (checkpoint / HASH_FILE).read_text() == metadata["checkpoint_sha256"] + "\n"
    assert metadata["files"][STATE_FILE] == {
        "sha256": sha256_file(checkpoint / STATE_FILE),
        "bytes": (checkpoint / STATE_FILE).stat().st_size,
    }
    # The weights are blobs named by their SHA-256, one per state-dict entry.
    store = BlobStore(tmp_blobs(folder))
    assert sorted(metadata["tensors"]) == sorted(run.model.state_dict())
    for entry in metadata["tensors"].values():
        blob = store.path(entry["blob"])
        assert (sha256_file(blob), blob.stat().st_size) == (entry["blob"], entry["bytes"])
    assert metadata["trial_id"] == "trial-1"
    assert (metadata["epoch"], metadata["step"]) == (1, 20)
    assert metadata["metrics"] == {"joint_score": 0.2, "criteria_auroc": None}
    assert (metadata["metric_name"], metadata["metric_value"]) == ("joint_score", 0.2)
    assert metadata["created_at"] == "2026-01-01T00:00:01+00:00"
    assert metadata["head_config"] == HEADS
    assert metadata["architecture_signature"] == architecture_signature(run.model)
    assert metadata["code_version"]
    info = manager.valid_checkpoints()[-1]
    assert info.sha256 == metadata["checkpoint_sha256"]
    assert info.bytes == checkpoint_disk_bytes(checkpoint)


def test_non_finite_metrics_become_null_in_metadata_but_stay_in_the_state(folder: Path) -> None:
    run = Run()
    state = run.state(0, 0.5)
    state.metrics = {"joint_score": 0.5, "loss": math.nan, "big": math.inf, "np": np.float64(0.25)}
    manager_for(folder, run).save(state)
    metadata = json.loads((folder / "epoch_0000" / METADATA_FILE).read_text())
    assert metadata["metrics"] == {"joint_score": 0.5, "loss": None, "big": None, "np": 0.25}
    loaded = manager_for(folder, run).load_latest()
    assert loaded is not None
    assert math.isnan(loaded.state.metrics["loss"] or 0.0)
    assert loaded.state.metrics["big"] == math.inf


@pytest.mark.parametrize(("interval", "saved"), [(1, [0, 1, 2, 3, 4, 5]), (2, [1, 3, 5]), (3, [2, 5])])
def test_should_save_every_interval_epochs(folder: Path, interval: int, saved: list[int]) -> None:
    manager = manager_for(folder, interval_epochs=interval)
    assert [e for e in range(6) if manager.should_save(e)] == saved


def test_constructor_refuses_bad_settings(folder: Path) -> None:
    for kwargs in ({"interval_epochs": 0}, {"architecture_signature": "abc"}):
        with pytest.raises(ValueError):
            manager_for(folder, **kwargs)


# ---------------------------------------------------------------------------- corruption


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_metadata(key: str, value: object) -> Callable[[Path], None]:
    def edit(checkpoint: Path) -> None:
        metadata = json.loads((checkpoint / METADATA_FILE).read_text())
        metadata[key] = value
        (checkpoint / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

    return edit


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "flip a byte of the weights": (lambda c: flip_byte(weights_blob(c)), BLOB),
    "flip a byte of the training state": (lambda c: flip_byte(c / STATE_FILE), STATE_FILE),
    "truncate the training state": (
        lambda c: (c / STATE_FILE).write_bytes((c / STATE_FILE).read_bytes()[:-100]),
        STATE_FILE,
    ),
    "delete the weights": (lambda c: weights_blob(c).unlink(), BLOB),
    "delete the training state": (lambda c: (c / STATE_FILE).unlink(), STATE_FILE),
    "edit the epoch in metadata": (edit_metadata("epoch", 0), METADATA_FILE),
    "edit the metric in metadata": (edit_metadata("metric_value", 0.99), METADATA_FILE),
    "add a key to metadata": (edit_metadata("note", "x"), METADATA_FILE),
    "NaN in metadata": (edit_metadata("metric_value", math.nan), METADATA_FILE),
    "metadata not JSON": (lambda c: (c / METADATA_FILE).write_text("{not json"), METADATA_FILE),
    "delete metadata": (lambda c: (c / METADATA_FILE).unlink(), METADATA_FILE),
    "edit .hash": (lambda c: (c / HASH_FILE).write_text("0" * 64 + "\n"), HASH_FILE),
    "delete .hash": (lambda c: (c / HASH_FILE).unlink(), HASH_FILE),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_latest_is_quarantined_and_the_previous_one_loaded(
    folder: Path, corruption: str, records: list[logging.LogRecord], deserialized: list[str]
) -> None:
    save_epochs(folder, [0.1, 0.2], keep_last=2)
    corrupt, bad_file = CORRUPTIONS[corruption]
    latest = folder / "epoch_0001"
    bad_path = weights_blob(latest) if bad_file == BLOB else latest / bad_file
    good_blobs = set(blob_names(folder / "epoch_0000"))
    corrupt(latest)

    loaded = manager_for(folder).load_latest()
    assert loaded is not None
    assert loaded.info.epoch == 0
    assert loaded.state.epoch == 0
    # Nothing of the bad checkpoint was deserialized.
    assert all("epoch_0001" not in path for path in deserialized)
    assert parsed_blobs(deserialized) <= good_blobs
    (message,) = errors(records)
    assert str(latest) in message
    assert str(bad_path) in message
    assert names(folder) == ["epoch_0000"]
    (quarantined,) = (folder / QUARANTINE_DIR).iterdir()
    assert quarantined.name.startswith("epoch_0001-2026")
    assert manager_for(folder).load_latest() is not None  # stays resolved: no new ERROR
    assert len(errors(records)) == 1


def test_an_unreadable_file_counts_as_corrupt(
    folder: Path, records: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    save_epochs(folder, [0.1, 0.2], keep_last=2)
    from dsm5_hpo.checkpointing import verify as checkpoint_verify

    def failing_read(path: Path) -> str:
        if "epoch_0001" in str(path):
            raise OSError(5, "Input/output error")
        return sha256_file(path)

    monkeypatch.setattr(checkpoint_verify, "sha256_file", failing_read)
    loaded = manager_for(folder).load_latest()
    assert loaded is not None
    assert loaded.info.epoch == 0
    assert "Input/output error" in errors(records)[0]


def test_all_corrupted_starts_from_scratch(folder: Path, records: list[logging.LogRecord]) -> None:
    save_epochs(folder, [0.1, 0.2, 0.3], keep_last=3)
    for blob in [weights_blob(checkpoint) for checkpoint in folder.glob("epoch_*")]:
        flip_byte(blob)
    assert manager_for(folder).load_latest() is None
    assert len(errors(records)) == 3
    assert names(folder) == []
    assert len(list((folder / QUARANTINE_DIR).iterdir())) == 3


def test_no_checkpoints_at_all(folder: Path) -> None:
    manager = manager_for(folder)
    assert manager.load_latest() is None
    assert manager.valid_checkpoints() == []
    assert manager.best() is None


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        ({"architecture_signature": architecture_signature(nn.Linear(6, 8))}, "architecture signature"),
        ({"head_config": {**HEADS, "hidden_size": 16}}, "head config"),
    ],
)
def test_incompatible_checkpoints_are_refused_with_a_clear_message(
    folder: Path, records: list[logging.LogRecord], other: dict[str, Any], reason: str
) -> None:
    save_epochs(folder, [0.1])
    assert manager_for(folder, **other).load_latest() is None
    (message,) = errors(records)
    assert (
        f"checkpoint {folder / 'epoch_0000'} was written by a different model architecture/head config"
        in (message)
    )
    assert reason in message
    assert names(folder) == []
    assert len(list((folder / QUARANTINE_DIR).iterdir())) == 1


def test_a_checkpoint_of_another_trial_is_refused(folder: Path, records: list[logging.LogRecord]) -> None:
    save_epochs(folder, [0.1])
    assert manager_for(folder, trial_id="trial-2").load_latest() is None
    assert "belongs to trial trial-1" in errors(records)[0]


def test_stale_staging_is_ignored_on_load_and_removed_by_the_next_save(folder: Path) -> None:
    run, manager = save_epochs(folder, [0.1])
    # A crash just before the rename leaves a complete-looking staging dir of a later epoch.
    stale = folder / ".tmp-epoch_0005-abcd1234"
    stale.mkdir()
    for file in (folder / "epoch_0000").iterdir():
        (stale / file.name).write_bytes(file.read_bytes())
    loaded = manager.load_latest()
    assert loaded is not None
    assert loaded.info.epoch == 0
    assert [i.epoch for i in manager.valid_checkpoints()] == [0]
    manager.save(run.state(1, 0.2))
    assert not stale.exists()
    assert not list(folder.glob(".tmp-*"))


# ---------------------------------------------------------------------------- pruning and best


def test_retention_keeps_last_plus_best_with_ties() -> None:
    infos = [
        CheckpointInfo(Path(f"e{e}"), e, e, "m", v, "", 0, "")
        for e, v in enumerate([0.1, 0.5, 0.3, 0.5, 0.2])
    ]

    def keep(n: int) -> set[Path]:
        return choose_trial_checkpoints(infos, RetentionConfig(keep_last_n=n)).keep

    assert keep(1) == {Path("e4"), Path("e1"), Path("e3")}
    assert keep(2) == {Path("e4"), Path("e3"), Path("e1")}
    assert keep(3) == {Path("e4"), Path("e3"), Path("e2"), Path("e1")}
    assert keep(10) == {i.path for i in infos}
    assert choose_trial_checkpoints([], RetentionConfig()).keep == set()


def test_pruning_keeps_last_and_best_after_each_commit(
    folder: Path, records: list[logging.LogRecord]
) -> None:
    run, manager = save_epochs(folder, [0.1, 0.5, 0.3])
    assert names(folder) == ["epoch_0001", "epoch_0002"]
    manager.save(run.state(3, 0.5))  # ties with the best: both kept
    assert names(folder) == ["epoch_0001", "epoch_0003"]
    manager.save(run.state(4, 0.2))
    assert names(folder) == ["epoch_0001", "epoch_0003", "epoch_0004"]
    assert not list(folder.glob(".tmp-*"))
    messages = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert any(m.startswith(f"saved checkpoint {folder / 'epoch_0004'} (") for m in messages)
    assert any(m.startswith(f"pruned checkpoint {folder / 'epoch_0000'} (epoch 0") for m in messages)
    assert manager.best() == manager.valid_checkpoints()[0]  # tie: the earliest
    assert [info.epoch for info in manager.co_best()] == [1, 3]  # every co-best, earliest first


def test_the_checkpoint_just_written_is_never_pruned(folder: Path) -> None:
    run, manager = save_epochs(folder, [0.1, 0.9, 0.2])
    manager.save(run.state(0, 0.05))  # an older epoch, worse than all: still kept
    assert "epoch_0000" in names(folder)


def test_best_skips_and_quarantines_corrupted_weights(folder: Path, records: list[logging.LogRecord]) -> None:
    _, manager = save_epochs(folder, [0.1, 0.9, 0.5], keep_last=3)
    flip_byte(weights_blob(folder / "epoch_0001"))
    best = manager.best()
    assert best is not None
    assert (best.epoch, best.metric_value) == (2, 0.5)
    assert len(errors(records)) == 1
    assert [i.epoch for i in manager.valid_checkpoints()] == [0, 2]


def test_load_weights_verifies_first(folder: Path, records: list[logging.LogRecord]) -> None:
    run, manager = save_epochs(folder, [0.1, 0.2], keep_last=2)
    first, second = manager.valid_checkpoints()
    weights = manager.load_weights(second)
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())
    flip_byte(weights_blob(first.path))
    with pytest.raises(StorageError, match="SHA-256 mismatch"):
        manager.load_weights(first)
    with pytest.raises(StorageError, match="does not exist"):
        manager.load_weights(first)  # now in quarantine
    assert len(errors(records)) == 1


# ---------------------------------------------------------------------------- refusals and failures


def test_unloadable_state_is_refused_before_anything_is_written(folder: Path) -> None:
    run = Run()
    manager = manager_for(folder, run)
    with pytest.raises(TypeError, match=r"training state\['extra'\]\['seed'\]: numpy.float64"):
        manager.save(run.state(0, 0.5, extra={"seed": np.float64(1.0)}))
    state = run.state(0, 0.5)
    state.metric_value = math.nan
    with pytest.raises(ValueError, match="finite"):
        manager.save(state)
    with pytest.raises(ValueError, match=">= 0"):
        manager.save(run.state(-1, 0.5))
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_failed_write_leaves_no_staging_and_the_old_checkpoints(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, manager = save_epochs(folder, [0.1])
    from dsm5_hpo.checkpointing import writer as checkpoint_writer

    def broken_disk(obj: object, path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint_writer, "torch_save_hashed", broken_disk)
    with pytest.raises(StorageError, match="Input/output error") as caught:
        manager.save(run.state(1, 0.2))
    assert str(folder / "epoch_0001") in str(caught.value)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0000"]
    assert [i.epoch for i in manager.valid_checkpoints()] == [0]


def test_a_disk_that_fills_during_the_write_stops_with_the_exhaustion_report(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, manager = save_epochs(folder, [0.1])
    from dsm5_hpo.checkpointing import writer as checkpoint_writer

    def full_disk(obj: object, path: Path) -> None:
        path.write_bytes(b"partial")  # half a file, as a real ENOSPC leaves it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_writer, "torch_save_hashed", full_disk)
    with (
        captured_logs("dsm5_hpo.storage.space_guard") as records,
        pytest.raises(StorageExhaustedError) as caught,
    ):
        manager.save(run.state(1, 0.2))
    report = caught.value.report
    assert caught.value.exit_code == 4 and report["next_checkpoint_bytes"] > 0
    assert report["disk"]["total_bytes"] > 0 and report["commands"][0]["command"] == "make cleanup"
    assert isinstance(caught.value.__cause__, OSError)
    # Nothing partial: no staging directory, the earlier checkpoint untouched and valid.
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0000"]
    assert [i.epoch for i in manager.valid_checkpoints()] == [0]
    assert any(r.levelno == logging.ERROR and "not enough disk space" in r.getMessage() for r in records)


def test_saving_an_epoch_again_quarantines_the_old_copy(
    folder: Path, records: list[logging.LogRecord]
) -> None:
    run, manager = save_epochs(folder, [0.1])
    manager.save(run.state(0, 0.3))
    assert [i.metric_value for i in manager.valid_checkpoints()] == [0.3]
    assert len(list((folder / QUARANTINE_DIR).iterdir())) == 1
    assert any(r.levelno == logging.WARNING and "superseded" in r.getMessage() for r in records)


def test_check_weights_only_names_the_offending_object() -> None:
    check_weights_only({"a": [1, 2.0, None, "s", True, (torch.ones(1),)], 3: torch.Size([2])}, "x")
    for bad, where in [({"a": {1, 2}}, r"x\['a'\]"), ([np.int64(1)], r"x\[0\]"), ({object(): 1}, "x key")]:
        with pytest.raises(TypeError, match=where):
            check_weights_only(bad, "x")


# ---------------------------------------------------------------------------- signature and null


def test_architecture_signature() -> None:
    def build(hidden: int = 8) -> nn.Module:
        return nn.Sequential(nn.Linear(6, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, 2))

    torch.manual_seed(0)
    a = build()
    torch.manual_seed(1)
    assert architecture_signature(a) == architecture_signature(build())  # weights do not matter
    assert architecture_signature(a) != architecture_signature(build(hidden=9))
    assert architecture_signature(a) != architecture_signature(build().double())
    changed = build()
    changed[1] = nn.BatchNorm1d(8)  # same parameter shapes, another layer class (and buffers)
    assert architecture_signature(a) != architecture_signature(changed)
    assert len(architecture_signature(a)) == 64


def test_null_manager_keeps_nothing(tmp_path: Path) -> None:
    null = NullCheckpointManager()
    assert not null.should_save(0)
    info = null.save(Run().state(2, 0.5))
    assert (info.epoch, info.bytes) == (2, 0)
    assert null.saved_epochs == [2]
    assert null.load_latest() is None
    assert null.best() is None
    assert null.co_best() == []
    assert null.valid_checkpoints() == []
    with pytest.raises(StorageError, match="checkpointing is off"):
        null.load_weights(info)
    assert list(tmp_path.iterdir()) == []


def test_asynchronous_save_commits_a_snapshot_while_training_goes_on(folder: Path) -> None:
    run = Run()
    manager = manager_for(folder, run, asynchronous=True)
    run.step()
    expected = {k: v.clone() for k, v in run.model.state_dict().items()}
    assert manager.save(run.state(0, 0.5)) is None  # returns at once
    with torch.no_grad():  # training goes on and changes the weights in place
        for parameter in run.model.parameters():
            parameter.add_(1.0)
    info = manager.wait()
    assert info is not None and info.epoch == 0
    saved = manager.load_weights(info)
    assert all(torch.equal(saved[k], v) for k, v in expected.items())  # the state at save() time
    assert manager.wait() is None  # nothing in flight any more


def test_asynchronous_saves_run_one_at_a_time_in_order_reusing_host_memory(folder: Path) -> None:
    run = Run()
    buffers: dict[tuple[Any, ...], torch.Tensor] = {}
    manager = manager_for(folder, run, asynchronous=True, keep_last=3, snapshot_buffers=buffers)
    expected = []
    for epoch, value in enumerate([0.1, 0.2, 0.3]):
        run.step()
        expected.append({k: v.clone() for k, v in run.model.state_dict().items()})
        manager.save(run.state(epoch, value))
        if epoch == 0:
            first = {path: tensor.data_ptr() for path, tensor in buffers.items()}
    manager.wait()
    assert {path: tensor.data_ptr() for path, tensor in buffers.items()} == first  # same memory each time
    assert names(folder) == ["epoch_0000", "epoch_0001", "epoch_0002"]
    infos = manager.valid_checkpoints()
    assert [i.epoch for i in infos] == [0, 1, 2]
    for info, weights in zip(infos, expected, strict=True):  # reuse never leaked a later state into a save
        saved = manager.load_weights(info)
        assert all(torch.equal(saved[k], v) for k, v in weights.items())


def test_snapshot_buffers_of_an_earlier_model_are_dropped(folder: Path) -> None:
    # A study passes one buffer dict to every trial; trials may draw other encoders (search_space.model).
    buffers: dict[tuple[Any, ...], torch.Tensor] = {}
    small, large = Run(), Run()
    large.model = nn.Sequential(nn.Linear(6, 64), nn.LayerNorm(64), nn.Linear(64, 2))
    large.optimizer = torch.optim.AdamW(large.model.parameters(), lr=0.01)
    large.scheduler = torch.optim.lr_scheduler.LambdaLR(large.optimizer, lambda step: 1.0)

    def held() -> int:
        return sum(t.numel() * t.element_size() for t in buffers.values())

    for run in (small, large):
        run.step()
    snapshot(large.state(0, 0.1), buffers)
    large_bytes = held()
    snapshot(small.state(0, 0.1), buffers)
    small_bytes = held()
    # Only what the latest snapshot holds is kept: the larger model's buffers went with it.
    alone: dict[tuple[Any, ...], torch.Tensor] = {}
    snapshot(small.state(0, 0.1), alone)
    assert set(buffers) == set(alone) and small_bytes == sum(
        t.numel() * t.element_size() for t in alone.values()
    )
    assert small_bytes < large_bytes
    snapshot(small.state(1, 0.2), buffers)
    assert held() == small_bytes, "the same model again reuses exactly its own buffers"


def test_a_failed_background_save_is_raised_at_the_next_save_and_at_wait(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsm5_hpo.checkpointing import writer as checkpoint_writer

    run = Run()
    manager = manager_for(folder, run, asynchronous=True)

    def broken_disk(obj: object, path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint_writer, "torch_save_hashed", broken_disk)
    manager.save(run.state(0, 0.5))
    with pytest.raises(StorageError, match="Input/output error"):
        manager.save(run.state(1, 0.6))  # the first one's failure, before anything else happens
    assert not folder.exists() or not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    manager.save(run.state(1, 0.6))
    with pytest.raises(StorageError):
        manager.wait()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_fence_that_raises_stops_saves_and_pruning_before_anything_is_written(
    folder: Path, asynchronous: bool
) -> None:
    # A shared study's worker taken for dead: its trial's folder is another worker's from then on.
    class TakenOver(BaseException):
        pass

    run, manager = save_epochs(folder, [0.5, 0.6], asynchronous=asynchronous)
    manager.wait()
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    def fence() -> None:
        raise TakenOver

    manager.fence = fence
    run.step()
    with pytest.raises(TakenOver):
        manager.save(run.state(2, 0.9))
    with pytest.raises(TakenOver):
        manager.finish_trial()
    manager.wait()
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_the_end_of_a_trial_removes_what_a_killed_save_or_deletion_left(folder: Path) -> None:
    _, manager = save_epochs(folder, [0.5, 0.6])
    for name in (".tmp-deleted-epoch_0000-1a2b3c4d", ".tmp-epoch_0002-5e6f7a8b"):
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"x" * 64)
    manager.finish_trial()
    assert not list(folder.glob(".tmp-*")), "an ended trial has no next save to remove them"


def test_a_background_save_checks_the_fence_again_before_it_commits(folder: Path) -> None:
    # save() passed the fence; the trial is taken over while the snapshot waits for the writer thread.
    class TakenOver(BaseException):
        pass

    run, manager = save_epochs(folder, [0.5], asynchronous=True)
    manager.wait()
    calls: list[str] = []

    def fence() -> None:
        calls.append("check")
        if len(calls) > 1:
            raise TakenOver

    manager.fence = fence
    run.step()
    assert manager.save(run.state(1, 0.9)) is None
    with pytest.raises(TakenOver):
        manager.wait()
    assert names(folder) == ["epoch_0000"] and not list(folder.glob(".tmp-*"))
