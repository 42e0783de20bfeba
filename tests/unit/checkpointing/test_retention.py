"""checkpointing/retention.py by hand: ties, keep_best_k_max, protected, ended trials, the study cap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from dsm5_hpo.checkpointing.metadata import CheckpointInfo
from dsm5_hpo.checkpointing.retention import choose_study_checkpoints, choose_trial_checkpoints
from dsm5_hpo.config import RetentionConfig, parse_size
from dsm5_hpo.errors import ConfigError


def infos(
    values: Sequence[float], *, trial: str = "t", size: int = 10, capable: bool = True
) -> list[CheckpointInfo]:
    return [
        CheckpointInfo(Path(f"{trial}/epoch_{e:04d}"), e, e, "m", v, "", size, "", capable)
        for e, v in enumerate(values)
    ]


def epochs(paths: set[Path] | list[Path]) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in paths)


def policy(**changes: object) -> RetentionConfig:
    return RetentionConfig(**changes)  # type: ignore[arg-type]


def test_default_keeps_the_newest_and_the_best_and_says_why_the_rest_goes() -> None:
    decision = choose_trial_checkpoints(infos([0.1, 0.9, 0.3, 0.2]), policy())
    assert epochs(decision.keep) == [1, 3]
    assert decision.kept_because[Path("t/epoch_0001")] == ["best"]
    assert decision.kept_because[Path("t/epoch_0003")] == ["newest"]
    assert [(epochs([d.path]), d.reason) for d in decision.delete] == [
        ([0], "not among the 1 newest nor the 1 best"),
        ([2], "not among the 1 newest nor the 1 best"),
    ]
    assert decision.strip_resume_state == []


def test_co_best_are_all_kept_even_past_keep_best_k_max() -> None:
    decision = choose_trial_checkpoints(infos([0.5, 0.5, 0.5, 0.1]), policy(keep_best_k=1, keep_best_k_max=1))
    assert epochs(decision.keep) == [0, 1, 2, 3]  # three co-best and the newest


def test_keep_best_k_takes_whole_tie_groups_within_keep_best_k_max() -> None:
    values = [0.9, 0.7, 0.7, 0.5, 0.1]
    # keep_best_k=2: 0.9, then the 0.7 pair fits within max 3 -> kept whole (3 best).
    assert epochs(choose_trial_checkpoints(infos(values), policy(keep_best_k=2, keep_best_k_max=3)).keep) == [
        0, 1, 2, 4,
    ]  # fmt: skip
    # max 2: the 0.7 pair would make 3, is never split, and nothing worse replaces it.
    assert epochs(choose_trial_checkpoints(infos(values), policy(keep_best_k=2, keep_best_k_max=2)).keep) == [
        0,
        4,
    ]
    # keep_best_k=3, max 4: 0.9, the 0.7 pair, then 3 reached.
    assert epochs(choose_trial_checkpoints(infos(values), policy(keep_best_k=3, keep_best_k_max=4)).keep) == [
        0, 1, 2, 4,
    ]  # fmt: skip


def test_protected_checkpoints_are_never_deleted() -> None:
    all_infos = infos([0.1, 0.9, 0.3, 0.2])
    resumed_from, just_written = Path("t/epoch_0000"), Path("t/epoch_0002")
    decision = choose_trial_checkpoints(all_infos, policy(), protected={resumed_from, just_written})
    assert epochs(decision.keep) == [0, 1, 2, 3]
    assert decision.kept_because[resumed_from] == ["protected"]


def test_a_running_trial_always_keeps_a_resume_checkpoint() -> None:
    decision = choose_trial_checkpoints(infos([0.9, 0.1, 0.2]), policy(keep_last_n=0))
    assert epochs(decision.keep) == [0, 2]  # the best, and the newest even with keep_last_n=0
    assert decision.kept_because[Path("t/epoch_0002")] == ["newest"]
    # The newest weights-only checkpoint is not a resume point: the newest resume-capable one is kept.
    mixed = [*infos([0.1, 0.2]), CheckpointInfo(Path("t/epoch_0002"), 2, 2, "m", 0.9, "", 1, "", False)]
    kept = choose_trial_checkpoints(mixed, policy()).keep
    assert kept == {Path("t/epoch_0001"), Path("t/epoch_0002")}


def test_an_ended_trial_keeps_its_best_weights_only() -> None:
    decision = choose_trial_checkpoints(infos([0.1, 0.9, 0.3]), policy(), trial_running=False)
    assert epochs(decision.keep) == [1]
    assert decision.strip_resume_state == [Path("t/epoch_0001")]
    assert {d.reason for d in decision.delete} == {"the trial has ended and it is not among its 1 best"}
    # Applied: deciding again changes nothing.
    stripped = [CheckpointInfo(Path("t/epoch_0001"), 1, 1, "m", 0.9, "", 10, "", False)]
    again = choose_trial_checkpoints(stripped, policy(), trial_running=False)
    assert again.delete == [] and again.strip_resume_state == [] and again.keep == {Path("t/epoch_0001")}


def test_keep_all_keeps_everything_whole() -> None:
    decision = choose_trial_checkpoints(infos([0.1, 0.9, 0.3]), policy(keep_all=True), trial_running=False)
    assert epochs(decision.keep) == [0, 1, 2] and decision.delete == [] and decision.strip_resume_state == []


def test_study_cap_deletes_worst_trials_first_and_stops_under_the_cap() -> None:
    trials = {
        "good": infos([0.8], trial="good"),
        "bad": infos([0.2, 0.1], trial="bad"),
        "mid": infos([0.5], trial="mid"),
        "best": infos([0.9, 0.9], trial="best"),
    }  # 60 bytes in all
    decision = choose_study_checkpoints(trials, "best", policy(max_total_size="35"), running_trial=None)
    assert [str(d.path) for d in decision.delete] == ["bad/epoch_0001", "bad/epoch_0000", "mid/epoch_0000"]
    assert "max_total_size 35" in decision.delete[0].reason and "trial bad" in decision.delete[0].reason
    assert sum(10 for _ in decision.keep) == 30


def test_study_cap_never_deletes_the_best_or_the_running_resume_checkpoint() -> None:
    trials = {"best": infos([0.9, 0.9, 0.3], trial="best"), "run": infos([0.1, 0.05], trial="run")}
    decision = choose_study_checkpoints(trials, "best", policy(max_total_size="1B"), running_trial="run")
    assert {str(p) for p in decision.keep} == {"best/epoch_0000", "best/epoch_0001", "run/epoch_0001"}
    again = {name: [i for i in found if i.path in decision.keep] for name, found in trials.items()}
    assert (
        choose_study_checkpoints(again, "best", policy(max_total_size="1B"), running_trial="run").delete == []
    )


def test_study_under_the_cap_or_without_one_deletes_nothing() -> None:
    trials = {"a": infos([0.1, 0.2], trial="a")}
    assert (
        choose_study_checkpoints(trials, "a", policy(max_total_size="20B"), running_trial=None).delete == []
    )
    assert choose_study_checkpoints(trials, None, policy(max_total_size="0"), running_trial=None).delete == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10GB", 10 * 10**9),
        ("500MB", 500 * 10**6),
        ("1.5GiB", 3 * 2**29),
        ("123", 123),
        ("2 kib", 2048),
        ("0", 0),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text, "k") == expected


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"max_total_size": "ten gigs"}, "retention_policy.max_total_size"),
        ({"keep_best_k": 0}, "retention_policy.keep_best_k"),
        ({"keep_best_k": 3, "keep_best_k_max": 2}, "retention_policy.keep_best_k_max"),
        ({"keep_last_n": -1}, "retention_policy.keep_last_n"),
        ({"min_interval_epochs": 0}, "retention_policy.min_interval_epochs"),
        ({"disk_space_threshold_percent": 100}, "retention_policy.disk_space_threshold_percent"),
    ],
)
def test_bad_policies_name_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        policy(**changes)
