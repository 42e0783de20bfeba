"""The size estimate of the next checkpoint (what the disk guard reserves room for)."""

from __future__ import annotations

import io

import pytest
import safetensors.torch
import torch

from dsm5_hpo.checkpointing.size import estimate_checkpoint_bytes

METADATA = 64_000


def saved_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """What a checkpoint really takes: safetensors weights + torch.save'd optimizer state."""
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    return len(safetensors.torch.save(model.state_dict())) + len(buffer.getvalue())


def take_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model(torch.randn(4, 256)).sum().backward()
    optimizer.step()


def test_estimate_adamw_before_and_after_first_step() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256)
    weights = (256 * 256 + 256) * 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = estimate_checkpoint_bytes(model, optimizer, metadata_bytes=0)
    assert before == weights + 2 * weights + 2 * 8  # two moments + a step scalar per parameter
    take_step(model, optimizer)
    after = estimate_checkpoint_bytes(model, optimizer, metadata_bytes=0)
    assert after == weights + 2 * weights + 2 * 4  # real state: step is a float32 scalar
    assert 0 <= before - after <= 16
    real = saved_bytes(model, optimizer)
    estimate = estimate_checkpoint_bytes(model, optimizer)
    assert real <= estimate <= real + METADATA, "within the metadata slack"


def test_estimate_counts_buffers_and_skips_frozen_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    state_dict = (8 * 4 + 4) * 4 + (4 + 4) * 4 + (4 + 4) * 4 + 8  # linear, bn affine, running stats, count
    trainable = (4 + 4 + 4) * 4  # linear bias + bn weight and bias
    assert estimate_checkpoint_bytes(model, None, metadata_bytes=0) == state_dict
    assert estimate_checkpoint_bytes(model, optimizer, metadata_bytes=10) == (
        state_dict + 2 * trainable + 3 * 8 + 10
    )


@pytest.mark.parametrize(
    ("make_optimizer", "slots"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), 0),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1),
        (lambda p: torch.optim.Adam(p, amsgrad=True), 3),
    ],
)
def test_estimate_other_optimizers_before_first_step(make_optimizer: object, slots: int) -> None:
    model = torch.nn.Linear(16, 16)
    optimizer = make_optimizer(model.parameters())  # type: ignore[operator]
    weights = (16 * 16 + 16) * 4
    expected = weights + slots * weights + (2 * 8 if slots else 0)
    assert estimate_checkpoint_bytes(model, optimizer, metadata_bytes=0) == expected
