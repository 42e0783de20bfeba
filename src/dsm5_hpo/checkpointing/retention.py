"""Which checkpoints to keep: pure decisions (no I/O) that the checkpoint manager and the study apply.

Per trial (``choose_trial_checkpoints``), a checkpoint is kept when a rule protects it:

- *newest*: while the trial runs, the ``keep_last_n`` newest resume-capable checkpoints, and in
  any case the newest one (a running trial can always resume);
- *best*: checkpoints grouped by equal metric value, best first. The first group (the co-best)
  is always kept whole, however large. Further groups are kept whole while fewer than
  ``keep_best_k`` are kept and the total stays within ``keep_best_k_max``; the walk stops at the
  first group that does not fit (equal checkpoints are never split, and a worse one is never kept
  in place of a better one);
- *protected*: paths the caller names (the checkpoint resumed from, the one just written).

Everything else is deleted with the reason. Once the trial has ended, the newest rule no longer
applies and kept checkpoints lose their resume state (``strip_resume_state``: weights stay).

Per study (``choose_study_checkpoints``): over ``max_total_size``, trials are taken worst first
(by their best metric value) and their checkpoints deleted worst first, until the total fits (the
total counts unique bytes: each checkpoint's own files, and each blob once however many
checkpoints share it; deleting a checkpoint frees the blobs no other one references);
the study's best trial's co-best checkpoints and the running trial's resume checkpoint are never
deleted. Deciding again after applying a decision deletes nothing more.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from dsm5_hpo.checkpointing.metadata import CheckpointInfo
from dsm5_hpo.config import RetentionConfig


def tightened(policy: RetentionConfig) -> RetentionConfig:
    """The policy once the disk ran low (storage escalation step 2): the newest resume point while a
    trial runs, its single best group once it has ended. keep_all is left as is."""
    if policy.keep_all:
        return policy
    return dataclasses.replace(policy, keep_last_n=0, keep_best_k=1, keep_best_k_max=1)


@dataclass(frozen=True)
class Deletion:
    path: Path
    reason: str
    """Why no rule keeps it, for the log line that reports the deletion."""


@dataclass
class RetentionDecision:
    keep: set[Path] = field(default_factory=set)
    delete: list[Deletion] = field(default_factory=list)
    """Oldest first per trial; worst first across the study (the order deletions should happen)."""
    strip_resume_state: list[Path] = field(default_factory=list)
    """Kept checkpoints of an ended trial whose training_state.pt goes (weights stay)."""
    kept_because: dict[Path, list[str]] = field(default_factory=dict)
    """The rules keeping each kept path: 'newest', 'best', 'protected', 'study'."""


def newest_resume_checkpoints(infos: Sequence[CheckpointInfo], n: int) -> list[CheckpointInfo]:
    """The ``max(n, 1)`` newest resume-capable checkpoints (empty when there is none)."""
    capable = sorted((i for i in infos if i.resume_capable), key=lambda i: (i.epoch, i.step))
    return capable[-max(n, 1) :] if capable else []


def best_checkpoints(
    infos: Sequence[CheckpointInfo], keep_best_k: int, keep_best_k_max: int
) -> list[CheckpointInfo]:
    """The best checkpoints, whole tie groups only; see the module docstring for the exact rule."""
    ranked = sorted(infos, key=lambda i: -i.metric_value)
    kept: list[CheckpointInfo] = []
    for _, group_iter in groupby(ranked, key=lambda i: i.metric_value):
        group = list(group_iter)
        if kept and (len(kept) >= keep_best_k or len(kept) + len(group) > keep_best_k_max):
            break
        kept.extend(group)
    return kept


def co_best(infos: Sequence[CheckpointInfo]) -> list[CheckpointInfo]:
    """Every checkpoint tied for the highest metric value."""
    if not infos:
        return []
    top = max(i.metric_value for i in infos)
    return [i for i in infos if i.metric_value == top]


def choose_trial_checkpoints(
    infos: Sequence[CheckpointInfo],
    policy: RetentionConfig,
    *,
    protected: Collection[Path] = (),
    trial_running: bool = True,
) -> RetentionDecision:
    """What to keep, delete and strip among one trial's valid checkpoints."""
    decision = RetentionDecision()
    if policy.keep_all:
        decision.keep = {i.path for i in infos}
        decision.kept_because = {i.path: ["keep_all"] for i in infos}
        return decision
    reasons: dict[Path, list[str]] = {}
    if trial_running:
        for info in newest_resume_checkpoints(infos, policy.keep_last_n):
            reasons.setdefault(info.path, []).append("newest")
    for info in best_checkpoints(infos, policy.keep_best_k, policy.keep_best_k_max):
        reasons.setdefault(info.path, []).append("best")
    for info in infos:
        if info.path in protected:
            reasons.setdefault(info.path, []).append("protected")
    if trial_running:
        why = f"not among the {max(policy.keep_last_n, 1)} newest nor the {policy.keep_best_k} best"
    else:
        why = f"the trial has ended and it is not among its {policy.keep_best_k} best"
    for info in sorted(infos, key=lambda i: (i.epoch, i.step)):
        if info.path in reasons:
            decision.keep.add(info.path)
            # An ended trial is never resumed: its optimizer state is dead weight (protected stays whole).
            if not trial_running and info.resume_capable and info.path not in protected:
                decision.strip_resume_state.append(info.path)
        else:
            decision.delete.append(Deletion(info.path, why))
    decision.kept_because = reasons
    return decision


def unique_bytes(infos: Iterable[CheckpointInfo]) -> int:
    """Bytes on disk of these checkpoints together: their own files, plus each of their blobs once."""
    own, blobs = 0, dict[str, int]()
    for info in infos:
        own += info.own_bytes
        blobs.update(info.blobs)
    return own + sum(blobs.values())


def choose_study_checkpoints(
    trials: Mapping[str, Sequence[CheckpointInfo]],
    best_trial: str | None,
    policy: RetentionConfig,
    *,
    running_trial: str | None,
) -> RetentionDecision:
    """Deletions that bring the study's retained bytes under ``max_total_size``, worst trials first."""
    everything = [info for infos in trials.values() for info in infos]
    decision = RetentionDecision(keep={i.path for i in everything})
    cap = policy.max_total_bytes
    total = unique_bytes(everything)
    references = Counter(sha for info in everything for sha in info.blobs)
    if policy.keep_all or cap == 0 or total <= cap:
        return decision
    untouchable: set[Path] = set()
    if best_trial is not None:
        untouchable |= {i.path for i in co_best(trials.get(best_trial, ()))}
    if running_trial is not None:
        untouchable |= {i.path for i in newest_resume_checkpoints(trials.get(running_trial, ()), 1)}
    decision.kept_because = {path: ["study"] for path in untouchable}
    # Worst trial first (ties: by name, so the order is reproducible); inside it, worst and oldest first.
    order = sorted((max(i.metric_value for i in infos), name) for name, infos in trials.items() if infos)
    for trial_value, name in order:
        for info in sorted(trials[name], key=lambda i: (i.metric_value, i.epoch, i.step)):
            if total <= cap:
                return decision
            if info.path in untouchable:
                continue
            total -= info.own_bytes
            for sha, size in info.blobs.items():
                references[sha] -= 1
                total -= size if references[sha] == 0 else 0  # its last user goes: the blob is collected
            decision.keep.discard(info.path)
            decision.delete.append(
                Deletion(
                    info.path,
                    f"the study's checkpoints pass max_total_size {policy.max_total_size}: trial {name} "
                    f"is among the worst (best {info.metric_name}={trial_value:.6g})",
                )
            )
    return decision


def choose_study_best_only(
    trials: Mapping[str, Sequence[CheckpointInfo]],
    best_trial: str | None,
    *,
    running_trial: str | None,
) -> RetentionDecision:
    """Storage escalation's last step: keep the study's single best checkpoint and nothing else.

    The running trial is left out (its own manager keeps only its resume point by then); of the
    study's best trial, only its earliest co-best checkpoint stays. With no completed trial yet,
    every ended trial is treated alike and only the single best checkpoint among them stays.
    """
    ended = {name: infos for name, infos in trials.items() if name != running_trial and infos}
    decision = RetentionDecision(keep={i.path for infos in ended.values() for i in infos})
    if not ended:
        return decision
    pool = ended.get(best_trial, ()) if best_trial in ended else [i for v in ended.values() for i in v]
    single = min(co_best(pool), key=lambda i: (i.epoch, i.step), default=None) if pool else None
    decision.keep = {single.path} if single is not None else set()
    if single is not None:
        decision.kept_because = {single.path: ["study_best"]}
    order = sorted(
        (info for infos in ended.values() for info in infos),
        key=lambda i: (i.metric_value, i.epoch, str(i.path)),
    )
    for info in order:
        if single is None or info.path != single.path:
            decision.delete.append(
                Deletion(info.path, "the disk is full: only the study's single best checkpoint is kept")
            )
    return decision
