"""A crash at any step of a checkpoint save leaves the old set of valid checkpoints or the new one.

Every primitive a save goes through (each buffer written, each fsync, each rename, each directory
removal) is a numbered step; a save is interrupted at step k by a simulated power cut (a
BaseException no cleanup code catches: what is on disk stays as it is) or by an I/O error.
Afterwards a fresh manager, as a resumed process would, must find either the old checkpoints or
the new one plus what retention keeps, and never a half checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dsm5_hpo.checkpointing.io import HashingWriter
from dsm5_hpo.checkpointing.manager import (
    QUARANTINE_DIR,
    CheckpointInfo,
    CheckpointManager,
    TrainingState,
    architecture_signature,
    capture_rng_state,
)
from dsm5_hpo.checkpointing.retention import choose_trial_checkpoints
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.errors import StorageError

MODEL = nn.Linear(3, 2)
OPTIMIZER = torch.optim.AdamW(MODEL.parameters())
MODEL(torch.ones(1, 3)).sum().backward()
OPTIMIZER.step()


class PowerCut(BaseException):
    """Not an Exception: a save's cleanup (``except Exception``) does not run, as after a real crash."""


class Steps:
    """Counts the primitive steps of a save and fails the ``fail_at``-th one."""

    def __init__(self, fail_at: int | None = None, error: Callable[[], BaseException] = PowerCut) -> None:
        self.fail_at = fail_at
        self.error = error
        self.names: list[str] = []

    def step(self, name: str) -> None:
        if len(self.names) == self.fail_at:
            raise self.error()
        self.names.append(name)


@contextlib.contextmanager
def injected(steps: Steps) -> Iterator[None]:
    real_write, real_fsync, real_replace, real_rmtree = (
        HashingWriter.write,
        os.fsync,
        os.replace,
        shutil.rmtree,
    )

    def write(self: HashingWriter, data: Any) -> int:
        steps.step("write")
        return real_write(self, data)

    def fsync(fd: int) -> None:
        steps.step("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        steps.step(f"replace {src} -> {dst}")
        real_replace(src, dst)

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if len(steps.names) == steps.fail_at:  # a crash half-way through a delete
            for file in sorted(Path(path).rglob("*"))[:1]:
                file.unlink()
        steps.step(f"rmtree {path}")
        real_rmtree(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HashingWriter, "write", write)
        patch.setattr(os, "fsync", fsync)
        patch.setattr(os, "replace", replace)
        patch.setattr(shutil, "rmtree", rmtree)
        yield


def manager(root: Path, keep_last: int) -> CheckpointManager:
    """The trial's manager in experiments folder ``root`` (its blobs are ``root/blobs``)."""
    return CheckpointManager(
        root / "trial" / "checkpoints",
        trial_id="trial-1",
        architecture_signature=architecture_signature(MODEL),
        head_config={"hidden_size": 2},
        retention=RetentionConfig(keep_last_n=keep_last),
    )


def state(epoch: int, value: float) -> TrainingState:
    return TrainingState(
        epoch=epoch,
        step=epoch + 1,
        # Other weights each epoch, as training gives: every save writes new blobs.
        model_state={name: tensor + epoch for name, tensor in MODEL.state_dict().items()},
        optimizer_state=OPTIMIZER.state_dict(),
        scheduler_state={"last_epoch": epoch},
        rng_state=capture_rng_state(),
        best_value=value,
        best_epoch=epoch,
        history=[],
        metrics={"m": value},
        metric_name="m",
        metric_value=value,
    )


def valid_epochs(folder: Path, keep_last: int) -> set[int]:
    return {info.epoch for info in manager(folder, keep_last).valid_checkpoints()}


def check_crash_at(template: Path, work: Path, keep_last: int, new_value: float, steps: Steps) -> None:
    """Copy ``template`` (an experiments folder with the old checkpoints and their blobs) to ``work``,
    crash a save there, check what is left."""
    shutil.copytree(template, work)
    old = valid_epochs(work, keep_last)
    old_infos = manager(work, keep_last).valid_checkpoints()
    new_epoch = max(old, default=-1) + 1
    with contextlib.suppress(PowerCut, StorageError, OSError), injected(steps):
        manager(work, keep_last).save(state(new_epoch, new_value))
    folder = work / "trial" / "checkpoints"
    new_path = folder / f"epoch_{new_epoch:04d}"
    retained = choose_trial_checkpoints(
        [*old_infos, CheckpointInfo(new_path, new_epoch, 0, "m", new_value, "", 0, "")],
        RetentionConfig(keep_last_n=keep_last),
        protected={new_path},
    ).keep
    kept = {int(p.name.split("_")[1]) for p in retained} | {new_epoch}

    after = valid_epochs(work, keep_last)
    where = f"interrupted at step {steps.fail_at}: {steps.names[-1:] or 'start'}"
    assert after == old or (kept <= after <= old | {new_epoch}), where
    assert not (folder / QUARANTINE_DIR).exists(), f"a half checkpoint was visible ({where})"
    # The trial goes on: the next save commits, and no staging directory survives it.
    manager(work, keep_last).save(state(new_epoch + 1, 0.0))
    assert new_epoch + 1 in valid_epochs(work, keep_last)
    assert not list(folder.glob(".tmp-*"))


def build_template(root: Path, values: list[float], keep_last: int) -> None:
    (root / "trial" / "checkpoints").mkdir(parents=True)
    for epoch, value in enumerate(values):
        manager(root, keep_last).save(state(epoch, value))


def count_steps(template: Path, scratch: Path, keep_last: int, new_value: float) -> list[str]:
    shutil.copytree(template, scratch)
    steps = Steps()
    epoch = (
        max((int(p.name[6:]) for p in (scratch / "trial" / "checkpoints").glob("epoch_*")), default=-1) + 1
    )
    with injected(steps):
        manager(scratch, keep_last).save(state(epoch, new_value))
    return steps.names


@pytest.mark.parametrize("error", [PowerCut, lambda: OSError(5, "Input/output error")])
def test_every_step_of_one_save(tmp_path: Path, error: Callable[[], BaseException]) -> None:
    """Every step of a save that also prunes (two old checkpoints, one of which goes).

    Within a run of writes to one file only the first and the last are interrupted: the ones
    between leave the same kind of partial file in the staging directory.
    """
    template = tmp_path / "template"
    build_template(template, [0.5, 0.1], keep_last=1)  # epoch 0 is best, epoch 1 is last
    names = count_steps(template, tmp_path / "count", keep_last=1, new_value=0.2)
    assert any(n.startswith("replace") for n in names) and any(n.startswith("rmtree") for n in names)
    padded = ["", *names, ""]  # padded[k + 1] is step k; skip a write between two writes
    distinct = [k for k in range(len(names) + 1) if padded[k : k + 3] != ["write"] * 3]
    assert len(distinct) < len(names) / 2
    for k in distinct:
        check_crash_at(template, tmp_path / f"crash{k}", 1, 0.2, Steps(k, error))


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.1, 0.3, 0.5]), max_size=3),
    new_value=st.sampled_from([0.0, 0.3, 0.9]),
    keep_last=st.integers(1, 2),
    power_cut=st.booleans(),
    data=st.data(),
)
def test_any_crash_leaves_the_old_or_the_new_set(
    values: list[float], new_value: float, keep_last: int, power_cut: bool, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        build_template(root / "template", values, keep_last)
        names = count_steps(root / "template", root / "count", keep_last, new_value)
        fail_at = data.draw(st.integers(0, len(names)), label="fail_at")
        error: Callable[[], BaseException] = PowerCut if power_cut else (lambda: OSError(28, "No space left"))
        check_crash_at(root / "template", root / "work", keep_last, new_value, Steps(fail_at, error))
