"""Invariants of checkpointing/retention.py on random checkpoint sets (pure: hundreds of cases per second)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dsm5_hpo.checkpointing.metadata import CheckpointInfo
from dsm5_hpo.checkpointing.retention import (
    RetentionDecision,
    choose_study_best_only,
    choose_study_checkpoints,
    choose_trial_checkpoints,
    co_best,
    tightened,
)
from dsm5_hpo.config import RetentionConfig

# Few distinct values, so ties are common.
VALUES = st.sampled_from([0.1, 0.2, 0.5, 0.5, 0.9])


@st.composite
def trial_checkpoints(draw: st.DrawFn, name: str = "t") -> list[CheckpointInfo]:
    n = draw(st.integers(0, 8))
    epochs = sorted(draw(st.sets(st.integers(0, 30), min_size=n, max_size=n)))
    return [
        CheckpointInfo(
            Path(f"{name}/epoch_{e:04d}"),
            e,
            e,
            "m",
            draw(VALUES),
            "",
            draw(st.integers(1, 100)),
            "",
            draw(st.booleans()),
        )
        for e in epochs
    ]


@st.composite
def policies(draw: st.DrawFn) -> RetentionConfig:
    k = draw(st.integers(1, 3))
    return RetentionConfig(
        keep_last_n=draw(st.integers(0, 3)),
        keep_best_k=k,
        keep_best_k_max=k + draw(st.integers(0, 2)),
        max_total_size=str(draw(st.integers(0, 600))),
    )


def apply(infos: list[CheckpointInfo], decision: RetentionDecision) -> list[CheckpointInfo]:
    """What is on disk once ``decision`` is applied (deletions gone, stripped ones weights-only)."""
    deleted = {d.path for d in decision.delete}
    stripped = set(decision.strip_resume_state)
    return [
        replace(i, resume_capable=i.resume_capable and i.path not in stripped)
        for i in infos
        if i.path not in deleted
    ]


def study_of(
    trials: list[list[CheckpointInfo]], data: st.DataObject
) -> tuple[dict[str, list[CheckpointInfo]], str | None, str | None]:
    """The trials named trial0..N (paths made unique), a best trial and a running one (or None)."""
    named = {
        f"trial{n}": [replace(i, path=Path(f"trial{n}") / i.path.name) for i in infos]
        for n, infos in enumerate(trials)
    }
    names = sorted(named)
    return named, data.draw(st.none() | st.sampled_from(names)), data.draw(st.none() | st.sampled_from(names))


@settings(max_examples=300, deadline=None)
@given(infos=trial_checkpoints(), policy=policies(), running=st.booleans(), data=st.data())
def test_trial_decision_invariants(
    infos: list[CheckpointInfo], policy: RetentionConfig, running: bool, data: st.DataObject
) -> None:
    paths = {i.path for i in infos}
    protected = set(data.draw(st.sets(st.sampled_from(sorted(paths)))) if paths else set())
    decision = choose_trial_checkpoints(infos, policy, protected=protected, trial_running=running)
    deleted = {d.path for d in decision.delete}
    # Every checkpoint is kept or deleted, never both; nothing protected is deleted.
    assert decision.keep | deleted == paths and not decision.keep & deleted
    assert not deleted & protected
    assert set(decision.strip_resume_state) <= decision.keep
    # Nothing is kept that no rule protects.
    assert set(decision.kept_because) == decision.keep and all(decision.kept_because.values())
    # All co-best are kept.
    assert {i.path for i in co_best(infos)} <= decision.keep
    # A running trial keeps its newest resume-capable checkpoint (when it has one).
    capable = [i for i in infos if i.resume_capable]
    if running and capable:
        assert max(capable, key=lambda i: i.epoch).path in decision.keep
        assert decision.strip_resume_state == []
    # Idempotent: deciding again on what is left deletes and strips nothing more.
    left = apply(infos, decision)
    again = choose_trial_checkpoints(left, policy, protected=protected, trial_running=running)
    assert again.delete == [] and again.strip_resume_state == [] and again.keep == decision.keep


@settings(max_examples=300, deadline=None)
@given(
    trials=st.lists(trial_checkpoints(), min_size=1, max_size=5),
    policy=policies(),
    data=st.data(),
)
def test_study_decision_invariants(
    trials: list[list[CheckpointInfo]], policy: RetentionConfig, data: st.DataObject
) -> None:
    named, best, running = study_of(trials, data)
    decision = choose_study_checkpoints(named, best, policy, running_trial=running)
    deleted = {d.path for d in decision.delete}
    everything = {i.path: i for infos in named.values() for i in infos}
    assert decision.keep | deleted == set(everything) and not decision.keep & deleted
    # The study's best is never deleted, nor the running trial's resume checkpoint.
    if best is not None:
        assert {i.path for i in co_best(named[best])} <= decision.keep
    capable = [i for i in named.get(running or "", []) if i.resume_capable]
    if capable:
        assert max(capable, key=lambda i: i.epoch).path in decision.keep
    # Deletions stop as soon as the total fits: without the last one it would not have fit.
    cap, kept_bytes = policy.max_total_bytes, sum(everything[p].bytes for p in decision.keep)
    if decision.delete:
        assert kept_bytes + everything[decision.delete[-1].path].bytes > cap
    # Idempotent.
    left = {name: [i for i in infos if i.path in decision.keep] for name, infos in named.items()}
    assert choose_study_checkpoints(left, best, policy, running_trial=running).delete == []


@settings(max_examples=300, deadline=None)
@given(infos=trial_checkpoints(), policy=policies(), running=st.booleans())
def test_tightened_policy_keeps_the_resume_point_and_the_co_best_only(
    infos: list[CheckpointInfo], policy: RetentionConfig, running: bool
) -> None:
    decision = choose_trial_checkpoints(infos, tightened(policy), trial_running=running)
    capable = sorted((i for i in infos if i.resume_capable), key=lambda i: i.epoch)
    expected = {i.path for i in co_best(infos)} | ({capable[-1].path} if running and capable else set())
    assert decision.keep == expected
    # Tightening never keeps more than the policy it tightens.
    assert decision.keep <= choose_trial_checkpoints(infos, policy, trial_running=running).keep


@settings(max_examples=300, deadline=None)
@given(trials=st.lists(trial_checkpoints(), min_size=1, max_size=5), data=st.data())
def test_study_best_only_keeps_exactly_one_checkpoint_of_the_ended_trials(
    trials: list[list[CheckpointInfo]], data: st.DataObject
) -> None:
    named, best, running = study_of(trials, data)
    decision = choose_study_best_only(named, best, running_trial=running)
    deleted = {d.path for d in decision.delete}
    ended = {i.path: i for name, infos in named.items() if name != running for i in infos}
    # The running trial is never touched; of the ended trials exactly one checkpoint stays.
    assert deleted <= set(ended) and decision.keep | deleted == set(ended)
    assert len(decision.keep) == (1 if ended else 0)
    # It is one of the study's best trial's co-best when that trial has checkpoints.
    if best is not None and best != running and named[best]:
        assert decision.keep <= {i.path for i in co_best(named[best])}
    elif ended:
        (kept,) = decision.keep
        assert ended[kept].metric_value == max(i.metric_value for i in ended.values())
    # Idempotent.
    left = {name: [i for i in infos if i.path not in deleted] for name, infos in named.items()}
    assert choose_study_best_only(left, best, running_trial=running).delete == []
