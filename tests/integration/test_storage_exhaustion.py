"""A study on a disk too small for it: escalation saves it, or it stops with exit 4 and a report.

The experiments directory is a real tmpfs of a chosen size (mounting needs root; skipped with the
reason elsewhere). Sizes are computed from the tiny model's real checkpoint sizes, so each test
knows which escalation step has to happen. The MLflow database lives outside the tmpfs so that
the test can check that every metric logged before the stop is still there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from checkpoint_helpers import checkpoint_disk_bytes
from conftest import CONFIG_FILE, REPO_ROOT, TINY_OVERRIDES

pytestmark = pytest.mark.integration

MiB = 1 << 20


def _mount_tmpfs(target: Path, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes on ``target``; the reason when it cannot be done here."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(size)`` mounts a fresh tmpfs and returns its path; unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        target = tmp_path / f"tmpfs{len(mounted)}"
        reason = _mount_tmpfs(target, size)
        if reason is not None:
            pytest.skip(f"needs a tmpfs: {reason}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _overrides(experiments: Path, cache: Path, mlflow_db: Path, *extra: str) -> list[str]:
    return [
        *TINY_OVERRIDES,
        "tracking=mlflow_sqlite",
        f"tracking.uri=sqlite:///{mlflow_db}",
        f"paths.experiments_dir={experiments}",
        f"paths.cache_dir={cache}",
        "retention_policy.max_total_size=0",
        *extra,
    ]


def _train(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dsm5_hpo.cli.train", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@dataclass(frozen=True)
class Sizes:
    full: int
    """A checkpoint with resume state (weights, optimizer, RNG, ...), in bytes."""
    weights: int
    """Its weights file alone (what an ended trial keeps)."""
    cache: Path
    """Where the tiny model was built (outside the tmpfs, reused)."""


@pytest.fixture(scope="module")
def sizes(tmp_path_factory: pytest.TempPathFactory) -> Sizes:
    """The tiny model's checkpoint sizes, measured on a real save."""
    root = tmp_path_factory.mktemp("sizes")
    cache = root / "cache"
    done = _train(
        "--config",
        str(CONFIG_FILE),
        *_overrides(root / "exp", cache, root / "mlflow.db", "hpo.n_trials=1", "train.max_epochs=1"),
        "retention_policy=keep_all",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (checkpoint,) = (root / "exp").glob("trial_*/checkpoints/epoch_0000")
    full = checkpoint_disk_bytes(checkpoint)  # its files and its blobs (experiments/blobs/)
    return Sizes(full, full - sum(f.stat().st_size for f in checkpoint.iterdir()), cache)


def _assert_all_checkpoints_valid(experiments: Path) -> list[Path]:
    """No staging leftovers, and every file of every checkpoint matches its SHA-256."""
    assert not list(experiments.rglob(".tmp-*")), "a partial checkpoint was left behind"
    checkpoints = sorted(experiments.glob("trial_*/checkpoints/epoch_*"))
    for checkpoint in checkpoints:
        metadata = json.loads((checkpoint / "metadata.json").read_text())
        for name, entry in metadata["files"].items():
            assert hashlib.sha256((checkpoint / name).read_bytes()).hexdigest() == entry["sha256"], checkpoint
        sidecar = (checkpoint / ".hash").read_text().strip()
        assert sidecar == metadata["checkpoint_sha256"]
    return checkpoints


def _json_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_study_that_cannot_fit_stops_with_exit_4_and_the_report_then_resumes(
    tmpfs: Callable[[int], Path], sizes: Sizes, tmp_path: Path
) -> None:
    full = sizes.full
    # Room for one full checkpoint and half of the next: epoch 1 cannot be saved, whatever is pruned
    # (epoch 0 is the trial's resume point and its best).
    size = full + full // 2 + 2 * MiB
    experiments = tmpfs(size)
    mlflow_db = tmp_path / "mlflow.db"
    overrides = _overrides(experiments, sizes.cache, mlflow_db, "hpo.n_trials=1", "train.max_epochs=2")
    done = _train("--config", str(CONFIG_FILE), *overrides)
    assert done.returncode == 4, done.stdout + done.stderr

    # The report, on stdout: disk total/used/free, the space needed, the largest artifacts, commands.
    out = done.stdout
    for item in ("total", "used", "free", "next checkpoint needs", "largest artifacts under", "make cleanup",
                 "make cleanup APPLY=1", "make resume", "retention_policy.max_total_size="):  # fmt: skip
        assert item in out, f"{item!r} missing from the report:\n{out}"
    assert "storage escalation step 3" in out  # every step was tried first
    assert "make resume" in done.stderr and "Traceback" not in done.stderr

    # ... and in the study's JSON log, as data.
    (study_dir,) = experiments.glob("study_*")
    (record,) = [r for r in _json_records(study_dir / "logs" / "study.jsonl") if "report" in r]
    report = record["report"]
    assert record["level"] == "ERROR" and isinstance(report, dict)
    assert (
        report["disk"]["total_bytes"] > 0 and report["disk"]["free_bytes"] < report["next_checkpoint_bytes"]
    )
    assert report["next_checkpoint_bytes"] >= full - 64 * 1024
    assert 1 <= len(report["largest_artifacts"]) <= 10
    assert {c["command"] for c in report["commands"]} >= {"make cleanup", "make cleanup APPLY=1"}

    # No partial checkpoint; the earlier checkpoint is whole and valid; the study can be resumed.
    checkpoints = _assert_all_checkpoints_valid(experiments)
    assert [c.name for c in checkpoints] == ["epoch_0000"]
    study = json.loads((study_dir / "study.json").read_text())
    assert study["state"] == "STORAGE_EXHAUSTED"
    (trial_dir,) = experiments.glob("trial_*")
    assert json.loads((trial_dir / "trial.json").read_text())["state"] == "STORAGE_EXHAUSTED"

    # Every metric logged before the stop is in MLflow: both epochs' validation metrics.
    client = MlflowClient(f"sqlite:///{mlflow_db}")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    (run,) = runs
    history = client.get_metric_history(run.info.run_id, "val_joint_score")
    assert sorted(m.step for m in history) == [0, 1]

    # Freeing space (here: growing the tmpfs) and resuming finishes the same study from epoch 0.
    subprocess.run(["mount", "-o", f"remount,size={size + 2 * full}", str(experiments)], check=True)
    resumed = _train("--resume", f"paths.experiments_dir={experiments}")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "loaded checkpoint" in resumed.stdout and "epoch_0000" in resumed.stdout
    assert json.loads((study_dir / "study.json").read_text())["state"] == "COMPLETE"
    assert (study_dir / "evaluation_report.json").is_file()
    history = client.get_metric_history(run.info.run_id, "val_joint_score")
    assert sorted(m.step for m in history) == [0, 1]  # epoch 1 re-run, not logged twice
    _assert_all_checkpoints_valid(experiments)


def test_escalation_makes_room_and_the_study_completes(
    tmpfs: Callable[[int], Path], sizes: Sizes, tmp_path: Path
) -> None:
    full, weights = sizes.full, sizes.weights
    # A running trial needs two full checkpoints at its peak (resume point + the new one), and each
    # ended trial keeps at least its best weights. With room for one ended trial's weights only,
    # the third trial's last save fits only after step 3 keeps the study's single best checkpoint.
    size = 2 * full + weights + 1 * MiB + 3 * MiB // 2
    experiments = tmpfs(size)
    overrides = _overrides(
        experiments,
        sizes.cache,
        tmp_path / "mlflow.db",
        "hpo.n_trials=3",
        "train.max_epochs=2",
    )
    done = _train("--config", str(CONFIG_FILE), *overrides)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "storage escalation step 3" in done.stdout
    assert "the disk is full: only the study's single best checkpoint is kept" in done.stdout
    (study_dir,) = experiments.glob("study_*")
    study = json.loads((study_dir / "study.json").read_text())
    assert study["state"] == "COMPLETE"
    report = json.loads((study_dir / "evaluation_report.json").read_text())
    assert report["best_trial_id"] == study["best_trial_id"] and report["checkpoints"]
    _assert_all_checkpoints_valid(experiments)
    # The study's best trial still has its best weights (the test evaluation read them).
    assert list(experiments.glob(f"trial_{study['best_trial_id']}/checkpoints/epoch_*"))
