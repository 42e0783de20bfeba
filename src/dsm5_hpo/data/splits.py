"""Deterministic, post-disjoint train/validation/test split.

Each post's place is decided by a hash of (seed, post_id), never by row order, so the same
posts land in the same split whether the rows came from the hub or from local CSVs, and
adding posts to the data does not reshuffle the existing ones more than the cut points move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from dsm5_hpo.config import SplitConfig


@dataclass(frozen=True)
class Split:
    """Post ids of each split, each sorted by their split hash."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def of(self, name: str) -> tuple[str, ...]:
        if name not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {name!r}")
        ids: tuple[str, ...] = getattr(self, name)
        return ids


def _rank_key(seed: int, post_id: str) -> str:
    return hashlib.sha256(f"{seed}\x00{post_id}".encode()).hexdigest()


def split_posts(post_ids: Iterable[str], seed: int, shares: SplitConfig) -> Split:
    """Cut the hash-ordered posts at the configured shares (validation and test at least 1 post each
    when there are 3 posts or more)."""
    ordered = sorted(set(post_ids), key=lambda pid: (_rank_key(seed, pid), pid))
    total = len(ordered)
    n_validation = round(total * shares.validation)
    n_test = round(total * shares.test)
    if total >= 3:
        n_validation, n_test = max(1, n_validation), max(1, n_test)
    # Lopsided shares (e.g. test 0.9 of 3 posts) can round past the total: clamp, or the
    # slices below would overlap (a negative n_train cuts from the end).
    n_validation = min(n_validation, total)
    n_test = min(n_test, total - n_validation)
    n_train = total - n_validation - n_test
    return Split(
        train=tuple(ordered[:n_train]),
        validation=tuple(ordered[n_train : n_train + n_validation]),
        test=tuple(ordered[n_train + n_validation :]),
    )
