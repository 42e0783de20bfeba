"""The space guard's escalation: in order, stopping at the first step that makes room, else exit 4."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pytest

from conftest import captured_logs
from dsm5_hpo.checkpointing.retention import tightened
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.storage.exhaustion import StorageExhaustedError
from dsm5_hpo.storage.monitor import DiskStatus
from dsm5_hpo.storage.space_guard import (
    RESERVE_BYTES,
    STEP_BEST_ONLY,
    STEP_STUDY_BEST,
    NullSpaceGuard,
    SpaceGuard,
    assess,
)

MB = 1 << 20


class FakeDisk:
    """A disk of ``total`` bytes whose free space the escalation steps change."""

    def __init__(self, total: int, free: int) -> None:
        self.total, self.free, self.reads = total, free, 0

    def __enter__(self) -> FakeDisk:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def status(self) -> DiskStatus:
        return self.check_now()

    def check_now(self) -> DiskStatus:
        self.reads += 1
        return DiskStatus(Path("/exp"), self.total, self.total - self.free, self.free, 0.0)


def guard(
    disk: FakeDisk, steps: list[str], frees: dict[str, int], tmp_path: Path, **kwargs: object
) -> SpaceGuard:
    def study_step(step: int) -> int:
        name = {STEP_BEST_ONLY: "best_only", STEP_STUDY_BEST: "study_best"}[step]
        steps.append(name)
        disk.free += frees.get(name, 0)
        return frees.get(name, 0)

    return SpaceGuard(
        disk,
        tmp_path,
        threshold_percent=10.0,
        study_id="s1",
        prune_study=study_step,
        **kwargs,  # type: ignore[arg-type]
    )


def trial_step(disk: FakeDisk, steps: list[str], freed: int) -> Callable[[], int]:
    def prune() -> int:
        steps.append("trial")
        disk.free += freed
        return freed

    return prune


def test_assess_fit_and_threshold() -> None:
    status = DiskStatus(Path("/"), 100 * MB, 95 * MB, 5 * MB, 0.0)
    assert assess(status, 4 * MB - RESERVE_BYTES, 1.0).ok
    assert assess(status, 4 * MB, 1.0).fits and not assess(status, 4 * MB + 1, 1.0).fits  # the reserve counts
    verdict = assess(status, MB, 10.0)
    assert verdict.fits and verdict.low and not verdict.ok


def test_no_escalation_when_there_is_room(tmp_path: Path) -> None:
    disk, steps = FakeDisk(1000 * MB, 500 * MB), []
    guard(disk, steps, {}, tmp_path).ensure_room(100 * MB, trial_step(disk, steps, 0))
    assert steps == [] and disk.reads == 1


@pytest.mark.parametrize(
    ("frees", "expected_steps", "level"),
    [
        ({"trial": 200 * MB}, ["trial"], 1),
        ({"best_only": 200 * MB}, ["trial", "best_only"], STEP_BEST_ONLY),
        ({"study_best": 200 * MB}, ["trial", "best_only", "study_best"], STEP_STUDY_BEST),
    ],
)
def test_escalation_stops_at_the_first_step_that_makes_room(
    tmp_path: Path, frees: dict[str, int], expected_steps: list[str], level: int
) -> None:
    disk, steps = FakeDisk(1000 * MB, 50 * MB), []
    space = guard(disk, steps, frees, tmp_path)
    with captured_logs("dsm5_hpo.storage.space_guard") as records:
        space.ensure_room(100 * MB, trial_step(disk, steps, frees.get("trial", 0)))
    assert steps == expected_steps and space.level == level
    escalations = [r for r in records if "escalation step" in r.getMessage()]
    assert len(escalations) == len(expected_steps) and all(r.levelno == logging.WARNING for r in escalations)


def test_low_but_fitting_writes_anyway_with_a_warning(tmp_path: Path) -> None:
    disk, steps = FakeDisk(1000 * MB, 60 * MB), []  # 6% free < 10%, but 10 MB fits
    with captured_logs("dsm5_hpo.storage.space_guard") as records:
        guard(disk, steps, {}, tmp_path).ensure_room(10 * MB, trial_step(disk, steps, 0))
    assert steps == ["trial", "best_only", "study_best"]
    assert "writing the" in records[-1].getMessage() and records[-1].levelno == logging.WARNING


def test_nothing_left_to_prune_raises_the_exhaustion_report(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 4096)
    disk, steps = FakeDisk(1000 * MB, 50 * MB), []
    space = guard(disk, steps, {"trial": MB}, tmp_path)
    with (
        captured_logs("dsm5_hpo.storage.space_guard") as records,
        pytest.raises(StorageExhaustedError) as caught,
    ):
        space.ensure_room(100 * MB, trial_step(disk, steps, MB))
    report = caught.value.report
    assert steps == ["trial", "best_only", "study_best"]
    assert report["next_checkpoint_bytes"] == 100 * MB and report["disk"]["free_bytes"] == 51 * MB
    assert report["study_id"] == "s1" and report["largest_artifacts"][0]["path"] == str(tmp_path / "big.bin")
    error = [r for r in records if r.levelno == logging.ERROR]
    assert len(error) == 1 and getattr(error[0], "report", None) == report


def test_keep_all_never_prunes_it_stops(tmp_path: Path) -> None:
    disk, steps = FakeDisk(1000 * MB, 50 * MB), []
    space = guard(disk, steps, {"trial": 500 * MB}, tmp_path, escalate=False)
    with pytest.raises(StorageExhaustedError):
        space.ensure_room(100 * MB, trial_step(disk, steps, 500 * MB))
    assert steps == []


def test_policy_is_tightened_from_step_two_on(tmp_path: Path) -> None:
    base = RetentionConfig(keep_last_n=3, keep_best_k=2, keep_best_k_max=4)
    disk, steps = FakeDisk(1000 * MB, 50 * MB), []
    space = guard(disk, steps, {"trial": 100 * MB}, tmp_path)
    space.ensure_room(100 * MB, trial_step(disk, steps, 100 * MB))
    assert not space.best_only  # step 1 made room: nothing sticky
    disk.free = 50 * MB
    space = guard(disk, steps, {"best_only": 100 * MB}, tmp_path)
    space.ensure_room(100 * MB, trial_step(disk, steps, 0))
    assert space.best_only
    tight = tightened(base)  # what the checkpoint manager applies once best_only holds
    assert (tight.keep_last_n, tight.keep_best_k, tight.keep_best_k_max) == (0, 1, 1)
    assert tightened(RetentionConfig(keep_all=True)).keep_all


def test_null_guard_checks_nothing_but_reports_the_real_disk(tmp_path: Path) -> None:
    null = NullSpaceGuard(tmp_path)
    null.ensure_room(1 << 62, lambda: pytest.fail("the null guard never prunes"))  # type: ignore[arg-type]
    error = null.exhausted(123)
    assert error.report["disk"]["total_bytes"] > 0 and error.report["next_checkpoint_bytes"] == 123


def test_concurrent_trials_keep_room_for_each_one_s_next_checkpoint(tmp_path: Path) -> None:
    # 300 MB free of 1000: one 100 MB checkpoint fits above the 10 % threshold, four at once do not.
    disk, steps = FakeDisk(1000 * MB, 300 * MB), []
    guard(disk, steps, {}, tmp_path).ensure_room(100 * MB, trial_step(disk, steps, 0))
    assert steps == []
    space = guard(disk, steps, {"best_only": 200 * MB}, tmp_path, concurrent=4)
    with captured_logs("dsm5_hpo.storage.space_guard") as records:
        space.ensure_room(100 * MB, trial_step(disk, steps, 0))
    assert steps == ["trial", "best_only"]  # pruned until 4 x 100 MB fit
    assert "kept for the 4 trials writing at once" in records[0].getMessage()


def test_concurrent_trials_that_cannot_all_fit_still_write_the_one_that_does(tmp_path: Path) -> None:
    disk, steps = FakeDisk(1000 * MB, 300 * MB), []
    space = guard(disk, steps, {}, tmp_path, concurrent=4)  # nothing to prune: 400 MB never fit
    with captured_logs("dsm5_hpo.storage.space_guard") as records:
        space.ensure_room(100 * MB, trial_step(disk, steps, 0))
    assert steps == ["trial", "best_only", "study_best"]
    assert "writing the" in records[-1].getMessage()
    with pytest.raises(StorageExhaustedError):
        space.ensure_room(400 * MB, trial_step(disk, steps, 0))  # this trial's own does not fit: stop
