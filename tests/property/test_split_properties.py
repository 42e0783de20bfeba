"""Invariants of dsm5_hpo.data.splits.split_posts over random post-id sets, seeds and shares."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dsm5_hpo.config import SplitConfig
from dsm5_hpo.data.splits import split_posts

POST_IDS = st.lists(st.text(min_size=1, max_size=12), max_size=60)
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def shares(draw: st.DrawFn) -> SplitConfig:
    """Any valid shares, lopsided ones included."""
    validation = draw(st.sampled_from([0.01, 0.05, 0.15, 0.45]) | st.floats(0.01, 0.98))
    room = 0.99 - validation
    test = draw(st.sampled_from([0.01, room / 2, room]) | st.floats(0.01, room))
    return SplitConfig(train=1.0 - validation - test, validation=validation, test=test)


@settings(max_examples=200, deadline=None)
@given(post_ids=POST_IDS, seed=SEEDS, config=st.one_of(st.just(SplitConfig()), shares()))
@example(post_ids=["a", "b", "c"], seed=0, config=SplitConfig(train=0.05, validation=0.05, test=0.9))
def test_split_is_a_partition_of_the_input(post_ids: list[str], seed: int, config: SplitConfig) -> None:
    split = split_posts(post_ids, seed, config)
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert sum(len(p) for p in parts) == len(split.train) + len(split.validation) + len(split.test)
    assert not parts[0] & parts[1]
    assert not parts[0] & parts[2]
    assert not parts[1] & parts[2]
    assert parts[0] | parts[1] | parts[2] == set(post_ids)
    assert len(split.train) + len(split.validation) + len(split.test) == len(set(post_ids))


@settings(max_examples=100, deadline=None)
@given(post_ids=POST_IDS, seed=SEEDS, shuffle_seed=st.integers(0, 1000))
def test_split_ignores_input_order(post_ids: list[str], seed: int, shuffle_seed: int) -> None:
    shuffled = list(post_ids)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert split_posts(shuffled, seed, SplitConfig()) == split_posts(post_ids, seed, SplitConfig())


@settings(max_examples=100, deadline=None)
@given(post_ids=st.lists(st.text(min_size=1, max_size=12), min_size=3, max_size=60, unique=True), seed=SEEDS)
def test_validation_and_test_never_empty_from_three_posts(post_ids: list[str], seed: int) -> None:
    split = split_posts(post_ids, seed, SplitConfig())
    assert split.train
    assert split.validation
    assert split.test
