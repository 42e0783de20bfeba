"""Storage exhaustion: largest artifacts, the report and its error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from dsm5_hpo.errors import ResumableStop, StorageError
from dsm5_hpo.storage.exhaustion import (
    StorageExhaustedError,
    exhaustion_report_dict,
    format_exhaustion_report,
    largest_artifacts,
)
from dsm5_hpo.storage.monitor import DiskStatus, format_bytes


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def experiments(tmp_path: Path) -> Path:
    root = tmp_path / "experiments"
    checkpoints = root / "trial_a" / "checkpoints"
    write(checkpoints / "epoch_0001" / "weights.safetensors", 3000)
    write(checkpoints / "epoch_0001" / "training_state.pt", 2000)
    write(checkpoints / "epoch_0001" / "metadata.json", 100)
    write(checkpoints / "epoch_0001" / ".hash", 65)
    write(checkpoints / "epoch_0002" / "weights.safetensors", 1000)
    write(checkpoints / "epoch_0002" / ".hash", 65)  # a .hash alone marks a checkpoint
    write(checkpoints / ".tmp-epoch_0003-x1" / "weights.safetensors", 700)  # stale staging dir
    write(root / "trial_a" / "logs" / "train.jsonl", 4000)
    write(root / "study_s" / "optuna.db", 1500)
    write(root / "mlflow_db" / "mlflow.db", 2500)
    write(root / "study_s" / "study.json", 10)
    outside = tmp_path / "elsewhere"
    write(outside / "huge.bin", 100_000)
    (root / "link_to_file").symlink_to(outside / "huge.bin")
    (root / "link_to_dir").symlink_to(outside, target_is_directory=True)
    (checkpoints / "epoch_0001" / "extra").symlink_to(outside / "huge.bin")  # not counted in the dir
    return root


def test_largest_artifacts_groups_checkpoints_and_ignores_symlinks(experiments: Path) -> None:
    checkpoints = experiments / "trial_a" / "checkpoints"
    assert largest_artifacts(experiments) == [
        (5165, checkpoints / "epoch_0001"),
        (4000, experiments / "trial_a" / "logs" / "train.jsonl"),
        (2500, experiments / "mlflow_db" / "mlflow.db"),
        (1500, experiments / "study_s" / "optuna.db"),
        (1065, checkpoints / "epoch_0002"),
        (700, checkpoints / ".tmp-epoch_0003-x1"),
        (10, experiments / "study_s" / "study.json"),
    ]
    assert [size for size, _ in largest_artifacts(experiments, n=2)] == [5165, 4000]


def test_largest_artifacts_of_a_missing_dir_or_a_checkpoint(tmp_path: Path, experiments: Path) -> None:
    assert largest_artifacts(tmp_path / "nope") == []
    epoch = experiments / "trial_a" / "checkpoints" / "epoch_0002"
    assert largest_artifacts(epoch) == [(1065, epoch)]


def status() -> DiskStatus:
    total, free = 20 * 1024**3, 300 * 1024**2
    return DiskStatus(Path("/mnt/exp"), total=total, used=total - free, free=free, checked_at=1.0)


def test_report_text_has_every_required_item(experiments: Path) -> None:
    artifacts = largest_artifacts(experiments)
    needed = 2 * 1024**3
    disk = status()
    text = format_exhaustion_report(disk, needed, artifacts, experiments_dir=experiments, study_id="abc123")
    for value in (disk.total, disk.used, disk.free, needed):
        assert format_bytes(value) in text and f"{value:,} bytes" in text
    assert "20.0 GiB" in text and "300.0 MiB" in text and "2.0 GiB" in text
    assert "1.5% free" in text and "abc123" in text and str(experiments) in text
    for size, path in artifacts:
        assert any(str(path) in line and format_bytes(size) in line for line in text.splitlines())
    lines = [line.strip() for line in text.splitlines()]
    for command in (
        "make cleanup",
        "make cleanup APPLY=1",
        "python -m dsm5_hpo.cli.cleanup --study-id abc123 --apply",
        'make resume ARGS="--study-id abc123"',
        'make train ARGS="retention_policy.max_total_size=5GB paths.experiments_dir=/bigger/disk/experiments"',
    ):
        assert command in lines, command


def test_report_without_study_or_artifacts() -> None:
    text = format_exhaustion_report(status(), 10, [], experiments_dir=Path("/e"), study_id=None)
    assert "(none found)" in text
    assert "make resume" in [line.strip() for line in text.splitlines()] and "--study-id" not in text
    assert "retention_policy.max_total_size=1GB" in text  # never a 0GB cap


def test_report_dict_is_json_serializable_and_matches(experiments: Path) -> None:
    artifacts = largest_artifacts(experiments, n=3)
    report = exhaustion_report_dict(
        status(), 2 * 1024**3, artifacts, experiments_dir=experiments, study_id="abc123"
    )
    assert json.loads(json.dumps(report)) == report
    assert report["disk"]["free_bytes"] == 300 * 1024**2 and report["disk"]["level"] == "critical"
    assert report["next_checkpoint_bytes"] == 2 * 1024**3
    assert report["shortfall_bytes"] == 2 * 1024**3 - 300 * 1024**2
    assert report["largest_artifacts"][0] == {
        "bytes": 5165,
        "path": str(experiments / "trial_a" / "checkpoints" / "epoch_0001"),
    }
    commands = [c["command"] for c in report["commands"]]
    assert commands[:2] == ["make cleanup", "make cleanup APPLY=1"]


def test_storage_exhausted_error(experiments: Path) -> None:
    artifacts = largest_artifacts(experiments)
    error = StorageExhaustedError.from_status(
        status(), 2 * 1024**3, artifacts, experiments_dir=experiments, study_id="abc123"
    )
    # A resumable stop, not an Exception: no trial is failed and no `except Exception` swallows it.
    assert isinstance(error, ResumableStop) and not isinstance(error, Exception)
    assert error.exit_code == StorageError.exit_code == 4 and error.state == "STORAGE_EXHAUSTED"
    assert str(error) == format_exhaustion_report(
        status(), 2 * 1024**3, artifacts, experiments_dir=experiments, study_id="abc123"
    )
    assert error.report["study_id"] == "abc123"
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.report == error.report
