"""`make cleanup`: what it lists, what --apply deletes, and everything it must never touch."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from checkpoint_helpers import small_state
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.manager import CheckpointManager, architecture_signature
from dsm5_hpo.checkpointing.metadata import peek_checkpoint
from dsm5_hpo.checkpointing.tensor_io import put_tensor
from dsm5_hpo.cli import cleanup as cleanup_cli
from dsm5_hpo.config import RetentionConfig, StudyConfig
from dsm5_hpo.hpo.cleanup import apply_cleanup, plan_cleanup
from dsm5_hpo.hpo.lock import study_lock
from dsm5_hpo.hpo.workers import WORKER, make_storage
from heartbeat_helpers import backdate


def _save_checkpoints(folder: Path, values: list[float]) -> None:
    """Real checkpoints (weights + resume state), all kept, as a keep_all study would leave them."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    manager = CheckpointManager(
        folder,
        trial_id=folder.parent.name,
        architecture_signature=architecture_signature(model),
        head_config={"criteria_head": "linear_cls", "hidden_size": 4},
        retention=RetentionConfig(keep_all=True),
    )
    for epoch, value in enumerate(values):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        manager.save(small_state(model, epoch, value, optimizer=optimizer, metric_name="joint_score"))


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _study(root: Path, study_id: str, **record: object) -> Path:
    study_dir = root / f"study_{study_id}"
    _write(study_dir / "study.json", {"study_id": study_id, "config": StudyConfig().to_dict(), **record})
    _write(study_dir / "evaluation_report.json", {"metrics": {}})
    (study_dir / "logs").mkdir()
    (study_dir / "logs" / "study.jsonl").write_text("{}\n")
    return study_dir


def _trial(root: Path, name: str, study_id: str, state: str, values: list[float]) -> Path:
    trial_dir = root / f"trial_{name}"
    _write(trial_dir / "trial.json", {"study_id": study_id, "state": state})
    _write(trial_dir / "validation_report.json", {"value": max(values) if values else None})
    _save_checkpoints(trial_dir / "checkpoints", values)
    return trial_dir


@pytest.fixture
def experiments(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "experiments"
    _study(root, "A", state="INTERRUPTED")
    ended = _trial(root, "ended", "A", "COMPLETE", [0.1, 0.5, 0.3])
    stopped = _trial(root, "stopped", "A", "INTERRUPTED", [0.2, 0.1, 0.1])
    (stopped / "checkpoints" / ".tmp-epoch_0003-crash").mkdir()
    (stopped / "checkpoints" / ".tmp-epoch_0003-crash" / "model.safetensors").write_bytes(b"x" * 100)
    quarantined = stopped / "checkpoints" / "quarantine" / "epoch_0001-20260101T000000Z"
    quarantined.mkdir(parents=True)
    (quarantined / "model.safetensors").write_bytes(b"y" * 50)
    _trial(root, "orphan", "gone", "COMPLETE", [0.4])
    # An export of the best model interrupted before its rename (the export itself is kept).
    (root / "study_A" / ".tmp-best_model-1a2b3c4d" / "encoder").mkdir(parents=True)
    (root / "study_A" / ".tmp-best_model-1a2b3c4d" / "encoder" / "model.safetensors").write_bytes(b"z" * 80)
    (root / "study_A" / "best_model").mkdir()
    (root / "study_A" / "best_model" / "heads.safetensors").write_bytes(b"h" * 10)
    (root / "mlflow_db").mkdir()
    (root / "mlflow_db" / "mlflow.db").write_bytes(b"sqlite")
    # A study run by a live process right now (this one): left alone, its trials are not orphans.
    live = _study(root, "B", state="RUNNING")
    _trial(root, "live", "B", "RUNNING", [0.1, 0.2])
    # A link pointing out of the experiments directory, with checkpoints behind it.
    outside = tmp_path / "outside"
    _trial(outside, "elsewhere", "gone", "COMPLETE", [0.1, 0.2])
    (root / "trial_linked").symlink_to(outside / "trial_elsewhere")
    assert ended.is_dir()
    with study_lock(live):  # study B is driven by a live process (this one) for the whole test
        yield root


def _listing(plan) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    root = plan.root
    return {(str(item.path.relative_to(root)), item.action) for item in plan.items}


def test_plan_lists_what_the_policy_and_the_leftovers_allow(experiments: Path) -> None:
    plan = plan_cleanup(experiments)
    assert _listing(plan) == {
        # Ended trial: only its best stays, as weights.
        ("trial_ended/checkpoints/epoch_0000", "delete"),
        ("trial_ended/checkpoints/epoch_0002", "delete"),
        ("trial_ended/checkpoints/epoch_0001", "strip"),
        # Stopped (resumable) trial: its newest (resume point) and its best stay whole.
        ("trial_stopped/checkpoints/epoch_0001", "delete"),
        ("trial_stopped/checkpoints/.tmp-epoch_0003-crash", "delete"),
        ("trial_stopped/checkpoints/quarantine/epoch_0001-20260101T000000Z", "delete"),
        # A trial whose study is gone.
        ("trial_orphan/checkpoints", "delete"),
        # The half-written export.
        ("study_A/.tmp-best_model-1a2b3c4d", "delete"),
    }
    skipped = {path.name: why for path, why in plan.skipped}
    assert "running now" in skipped["study_B"] and "outside" in skipped["trial_linked"]
    assert plan.total_bytes == sum(item.bytes for item in plan.items) > 0
    # A dry run deletes nothing.
    assert (experiments / "trial_ended" / "checkpoints" / "epoch_0000").is_dir()


def test_apply_deletes_exactly_the_plan_and_nothing_else(experiments: Path, tmp_path: Path) -> None:
    keep = [
        experiments / "mlflow_db" / "mlflow.db",
        experiments / "study_A" / "study.json",
        experiments / "study_A" / "evaluation_report.json",
        experiments / "study_A" / "logs" / "study.jsonl",
        experiments / "study_A" / "best_model" / "heads.safetensors",
        experiments / "trial_ended" / "trial.json",
        experiments / "trial_ended" / "validation_report.json",
        experiments / "trial_orphan" / "trial.json",
        experiments / "trial_live" / "checkpoints" / "epoch_0000",
        experiments / "trial_stopped" / "checkpoints" / "epoch_0000",
        experiments / "trial_stopped" / "checkpoints" / "epoch_0002",
        tmp_path / "outside" / "trial_elsewhere" / "checkpoints" / "epoch_0000",
    ]
    plan = plan_cleanup(experiments)
    freed = apply_cleanup(plan)
    assert freed == plan.total_bytes
    for path in keep:
        assert path.exists(), path
    for item in plan.items:
        if item.action == "delete":
            assert not item.path.exists(), item.path
    best = peek_checkpoint(experiments / "trial_ended" / "checkpoints" / "epoch_0001")
    assert best.metric_value == 0.5 and not best.resume_capable  # weights kept, resume state gone
    assert not (experiments / "trial_ended" / "checkpoints" / "epoch_0001" / "training_state.pt").exists()
    # Idempotent: nothing more to do.
    assert plan_cleanup(experiments).items == []


def test_one_study_only(experiments: Path) -> None:
    plan = plan_cleanup(experiments, study_id="A")
    assert not any("orphan" in str(item.path) for item in plan.items)
    assert ("trial_ended/checkpoints/epoch_0000", "delete") in _listing(plan)


def test_cli_dry_run_then_apply(experiments: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cleanup_cli.main(["--experiments-dir", str(experiments)]) == 0
    text = out.getvalue()
    assert "dry run" in text and "would free" in text and "make cleanup APPLY=1" in text
    assert (experiments / "trial_orphan" / "checkpoints").is_dir()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cleanup_cli.main(["--experiments-dir", str(experiments), "--apply"]) == 0
    assert "freed" in out.getvalue() and not (experiments / "trial_orphan" / "checkpoints").exists()


def test_cli_refuses_a_missing_directory_or_study(
    tmp_path: Path, experiments: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cleanup_cli.main(["--experiments-dir", str(tmp_path / "nope")]) == 2
    assert "--experiments-dir" in capsys.readouterr().err
    assert cleanup_cli.main(["--experiments-dir", str(experiments), "--study-id", "Z"]) == 2
    assert "study Z not found" in capsys.readouterr().err


def test_a_shared_study_is_left_alone_while_a_worker_beats_and_cleaned_once_none_does(tmp_path: Path) -> None:
    # A shared study has no lock file: its workers (maybe on other machines) show life by heartbeats.
    root = tmp_path / "experiments"
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    config = StudyConfig().hpo
    storage = make_storage(dataclasses.replace(config, storage=url, study_name="shared"))
    study = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    running = study.ask()
    running.set_user_attr(WORKER, "gpu-box:4242")
    storage.record_heartbeat(running._trial_id)
    _study(root, "S", state="RUNNING", shared=True, optuna_storage=url, study_name="shared")
    trial_dir = _trial(root, "inflight", "S", "RUNNING", [0.1])
    staging = trial_dir / "checkpoints" / ".tmp-epoch_0001-inflight"  # a save in flight on that worker
    staging.mkdir()

    plan = plan_cleanup(root)
    skipped = {path.name: why for path, why in plan.skipped}
    assert "running now" in skipped["study_S"] and "gpu-box:4242" in skipped["study_S"]
    assert not [item for item in plan.items if trial_dir in item.path.parents]

    backdate(storage, running._trial_id, 3600)  # the worker died an hour ago
    plan = plan_cleanup(root)
    assert "study_S" not in {path.name for path, _ in plan.skipped}
    assert (staging, "delete") in {(item.path, item.action) for item in plan.items}


def test_blobs_no_kept_checkpoint_references_are_listed_and_collected(experiments: Path) -> None:
    store = BlobStore(experiments / "blobs")
    with store.shared():  # a blob a killed save left behind, and one only the orphaned trial uses
        left = put_tensor(store, torch.full((64,), 3.0)).digest
    orphan_trial = experiments / "trial_orphan" / "checkpoints" / "epoch_0000"
    metadata = json.loads((orphan_trial / "metadata.json").read_text())
    own = put_tensor(store, torch.full((32,), 5.0)).digest
    metadata["tensors"]["unique"] = {"blob": own.sha256, "bytes": own.bytes}
    (orphan_trial / "metadata.json").write_text(json.dumps(metadata))  # its references, as GC reads them
    before = {name for name, _ in store.names()}

    plan = plan_cleanup(experiments)
    (collect,) = [item for item in plan.items if item.action == "collect"]
    assert collect.path == store.root and collect.bytes == left.bytes + own.bytes
    assert plan.items[-1] is collect  # after the deletions it counts on
    assert "2 blob(s)" in collect.reason
    assert {name for name, _ in store.names()} == before  # a dry run deletes nothing

    freed = apply_cleanup(plan)
    assert freed >= left.bytes + own.bytes
    assert {name for name, _ in store.names()} == before - {left.sha256, own.sha256}
    for checkpoint in experiments.glob("trial_*/checkpoints/epoch_*"):  # what stays still verifies
        for sha in peek_checkpoint(checkpoint).blobs:
            store.verify(sha)
    assert not [item for item in plan_cleanup(experiments).items if item.action == "collect"]
