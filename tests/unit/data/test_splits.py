"""dsm5_hpo.data.splits: deterministic, post-disjoint train/validation/test split from post_id and seed."""

from __future__ import annotations

import random

import pytest

from dsm5_hpo.config import SplitConfig
from dsm5_hpo.data.splits import Split, split_posts

DEFAULT = SplitConfig()  # 0.7 / 0.15 / 0.15
POST_IDS = [f"s_{i:05d}" for i in range(1000)]


def all_ids(split: Split) -> list[str]:
    return [*split.train, *split.validation, *split.test]


def test_split_is_disjoint_and_covers_every_post() -> None:
    split = split_posts(POST_IDS, 42, DEFAULT)
    ids = all_ids(split)
    assert len(ids) == len(set(ids)) == len(POST_IDS)
    assert set(ids) == set(POST_IDS)
    assert not set(split.train) & set(split.validation)
    assert not set(split.train) & set(split.test)
    assert not set(split.validation) & set(split.test)


def test_split_is_deterministic() -> None:
    assert split_posts(POST_IDS, 7, DEFAULT) == split_posts(list(POST_IDS), 7, SplitConfig())


def test_split_does_not_depend_on_input_order_or_container() -> None:
    shuffled = list(POST_IDS)
    random.Random(3).shuffle(shuffled)
    expected = split_posts(POST_IDS, 11, DEFAULT)
    assert split_posts(shuffled, 11, DEFAULT) == expected
    assert split_posts(reversed(POST_IDS), 11, DEFAULT) == expected
    assert split_posts(set(POST_IDS), 11, DEFAULT) == expected
    assert split_posts(dict.fromkeys(shuffled, "text"), 11, DEFAULT) == expected


def test_duplicate_ids_count_once() -> None:
    assert split_posts(POST_IDS + POST_IDS[:50], 5, DEFAULT) == split_posts(POST_IDS, 5, DEFAULT)


def test_different_seeds_give_different_splits() -> None:
    splits = [split_posts(POST_IDS, seed, DEFAULT) for seed in range(5)]
    tests = [frozenset(s.test) for s in splits]
    assert len(set(tests)) == len(tests)
    # ... but the same sizes: only membership moves.
    assert {(len(s.train), len(s.validation), len(s.test)) for s in splits} == {(700, 150, 150)}


@pytest.mark.parametrize(
    ("shares", "total"),
    [
        (SplitConfig(), 1000),
        (SplitConfig(), 240),
        (SplitConfig(train=0.8, validation=0.1, test=0.1), 1484),
        (SplitConfig(train=0.5, validation=0.25, test=0.25), 101),
    ],
)
def test_shares_are_respected(shares: SplitConfig, total: int) -> None:
    split = split_posts(POST_IDS[:total] if total <= len(POST_IDS) else map(str, range(total)), 0, shares)
    for name in ("train", "validation", "test"):
        assert abs(len(split.of(name)) - total * getattr(shares, name)) <= 1, name
    assert len(all_ids(split)) == total


def test_placement_is_uniform_across_ids() -> None:
    # Hash placement: the first half of the ids is not favoured, each part keeps about its share.
    split = split_posts(POST_IDS, 0, DEFAULT)
    assert len(split.train) == 700
    assert 0.6 < sum(1 for pid in split.train if int(pid[2:]) < 500) / 500 < 0.8


@pytest.mark.parametrize(
    ("total", "sizes"),
    [(0, (0, 0, 0)), (1, (1, 0, 0)), (2, (2, 0, 0)), (3, (1, 1, 1)), (4, (2, 1, 1)), (7, (5, 1, 1))],
)
def test_tiny_inputs(total: int, sizes: tuple[int, int, int]) -> None:
    split = split_posts(POST_IDS[:total], 1, DEFAULT)
    assert (len(split.train), len(split.validation), len(split.test)) == sizes
    assert sorted(all_ids(split)) == POST_IDS[:total]


@pytest.mark.parametrize("total", [3, 4, 5, 10])
def test_lopsided_shares_never_overlap(total: int) -> None:
    # test=0.9 of 3 posts rounds to 3 and validation is raised to 1: more than there are posts.
    shares = SplitConfig(train=0.05, validation=0.05, test=0.9)
    split = split_posts(POST_IDS[:total], 0, shares)
    ids = all_ids(split)
    assert len(ids) == len(set(ids)) == total
    assert len(split.validation) >= 1
    assert len(split.test) >= 1


def test_adding_posts_keeps_existing_relative_order() -> None:
    # Placement comes from each post's own hash: new posts slot in, old ones keep their order.
    small, large = split_posts(POST_IDS[:500], 9, DEFAULT), split_posts(POST_IDS, 9, DEFAULT)
    order = {pid: i for i, pid in enumerate(all_ids(large))}
    ranks = [order[pid] for pid in all_ids(small)]
    assert ranks == sorted(ranks)


def test_split_of_names_each_split() -> None:
    split = split_posts(POST_IDS[:10], 0, DEFAULT)
    assert split.of("train") == split.train
    assert split.of("validation") == split.validation
    assert split.of("test") == split.test
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        split.of("dev")
