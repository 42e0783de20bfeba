"""dsm5_hpo.data.batching: length-grouped batches are a partition of the epoch that pads less."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm5_hpo.data.batching import length_grouped_batches, plain_batches
from dsm5_hpo.utils.seeding import torch_generator


def padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=0, max_size=200),
    batch_size=st.integers(1, 17),
    group_size=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_every_window_is_in_exactly_one_batch(
    lengths: list[int], batch_size: int, group_size: int, seed: int
) -> None:
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches = length_grouped_batches(
        order, lengths, batch_size=batch_size, group_size=group_size, generator=torch_generator(seed)
    )
    assert sorted(i for batch in batches for i in batch) == sorted(order)
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    # As many batches as a plain epoch, but for one short batch per length group.
    groups = -(-len(order) // (batch_size * group_size)) if order else 0
    assert (
        len(plain_batches(order, batch_size))
        <= len(batches)
        <= len(plain_batches(order, batch_size)) + groups
    )
    if batches:
        # The longest window leads, so an out-of-memory batch size fails on the first step.
        assert max(lengths[i] for i in batches[0]) == max(lengths)


def test_the_same_generator_seed_gives_the_same_batches_and_another_seed_other_ones() -> None:
    lengths = [random.Random(1).randint(10, 256) for _ in range(500)]
    order = list(range(500))

    def batches(seed: int) -> list[list[int]]:
        return length_grouped_batches(
            order, lengths, batch_size=16, group_size=4, generator=torch_generator(seed)
        )

    assert batches(3) == batches(3)
    assert batches(3) != batches(4)


def test_grouping_pads_much_less_than_shuffled_batches() -> None:
    # Mostly full windows and a tail of short ones, like RedSM5 windows of 256 tokens.
    rng = random.Random(0)
    lengths = [256 if rng.random() < 0.5 else rng.randint(30, 255) for _ in range(2000)]
    order = list(range(len(lengths)))
    rng.shuffle(order)
    grouped = length_grouped_batches(
        order, lengths, batch_size=16, group_size=50, generator=torch_generator(0)
    )
    plain = plain_batches(order, 16)
    real = sum(lengths)
    assert padded_tokens(plain, lengths) / real > 1.2  # nearly every random batch holds a full window
    assert padded_tokens(grouped, lengths) / real < 1.02


def test_batches_within_a_group_hold_similar_lengths_but_batches_are_visited_shuffled() -> None:
    lengths = list(range(1, 161))
    order = list(range(160))
    random.Random(5).shuffle(order)
    batches = length_grouped_batches(
        order, lengths, batch_size=8, group_size=20, generator=torch_generator(5)
    )
    for batch in batches:  # one group of 160: each batch is 8 consecutive lengths
        assert max(lengths[i] for i in batch) - min(lengths[i] for i in batch) == 7
    maxima = [max(lengths[i] for i in batch) for batch in batches]
    assert maxima[0] == 160
    assert maxima[1:] != sorted(maxima[1:], reverse=True)  # not simply longest to shortest


def test_a_group_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="group_size"):
        length_grouped_batches([0], [1], batch_size=1, group_size=0, generator=torch_generator(0))
