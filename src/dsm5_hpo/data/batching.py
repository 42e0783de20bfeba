"""Training batches grouped by length, so dynamic padding pads little.

A random batch of windows almost always holds one full-length window, and the collator pads
the whole batch to it: on RedSM5-like data about a fifth of every step is spent on padding.
Sorting windows by length inside "megabatches" of ``group_size`` batches keeps similar lengths
together while the epoch stays shuffled at two levels (which windows share a megabatch, and
the order the batches are visited in). Pure: the result depends only on its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def plain_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """``order`` cut into consecutive batches (the last one may be short)."""
    return [list(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]


def length_grouped_batches(
    order: Sequence[int],
    lengths: Sequence[int],
    *,
    batch_size: int,
    group_size: int,
    generator: torch.Generator,
) -> list[list[int]]:
    """Batches of the (already shuffled) ``order``, windows of similar length together.

    Each run of ``group_size * batch_size`` windows of ``order`` is sorted by length (longest
    first) and cut into batches; the batches are then visited in an order drawn from
    ``generator``, except that the batch holding the longest windows comes first, so that a
    batch size too large for the device's memory fails on the first step, not hours in.
    Every window of ``order`` is in exactly one batch; only the last batch of each group may
    be short, as only the last batch of a plain epoch may be.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    span = group_size * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        # Stable sort on (length desc): equal lengths keep the shuffled order between them.
        group = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches.extend(plain_batches(group, batch_size))
    if len(batches) <= 1:
        return batches
    longest = max(range(len(batches)), key=lambda b: (lengths[batches[b][0]], len(batches[b])))
    rest = [b for b in range(len(batches)) if b != longest]
    shuffled = torch.randperm(len(rest), generator=generator).tolist()
    return [batches[longest], *(batches[rest[k]] for k in shuffled)]
