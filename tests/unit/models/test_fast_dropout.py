"""train.fast_dropout: the CPU dropout masks drawn 16 bits at a time, and the torch function mode that
puts them under nn.Dropout and SDPA without changing the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_tiny
from dsm5_hpo.models.fast_dropout import FastDropout, attention, fast_dropout, keep_mask
from dsm5_hpo.models.loading import load_encoder, resolve_model


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_each_lane_keeps_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    mask = keep_mask((4, 100_003), p, torch.device("cpu"))  # not a multiple of 4 lanes: the tail is cut
    assert mask.dtype == torch.bool and mask.shape == (4, 100_003)
    flat = mask.flatten()
    for lane in range(4):  # the four 16-bit lanes of a 64-bit draw are each unbiased
        kept = flat[lane::4].double().mean().item()
        assert abs(kept - (1 - p)) < 0.006, (lane, kept)


def test_fast_dropout_zeroes_or_scales_and_keeps_the_mean() -> None:
    torch.manual_seed(1)
    x = torch.rand(300, 400) + 0.5
    y = fast_dropout(x, 0.2)
    dropped = y == 0
    assert 0.18 < dropped.double().mean().item() < 0.22
    assert torch.allclose(y[~dropped], x[~dropped] / 0.8)
    assert abs(y.mean().item() - x.mean().item()) < 0.01


def test_fast_dropout_is_identity_outside_training_and_at_p_zero() -> None:
    x = torch.randn(5, 7)
    assert fast_dropout(x, 0.3, training=False) is x
    assert fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))


def test_fast_dropout_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 64, requires_grad=True)
    y = fast_dropout(x, 0.5)
    y.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, (y != 0).float() * 2.0)


def test_the_same_seed_draws_the_same_masks() -> None:
    torch.manual_seed(3)
    a = keep_mask((1000,), 0.1, torch.device("cpu"))
    torch.manual_seed(3)
    b = keep_mask((1000,), 0.1, torch.device("cpu"))
    assert torch.equal(a, b)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_attention_without_dropout_equals_sdpa(mask_kind: str) -> None:
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 9, 8) for _ in range(3))
    mask: torch.Tensor | None = None
    if mask_kind == "bool":
        mask = torch.ones(2, 1, 9, 9, dtype=torch.bool)
        mask[0, :, :, 6:] = False  # padding of the first sequence
    elif mask_kind == "float":
        mask = torch.randn(2, 1, 9, 9)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(attention(q, k, v, mask, 0.0), expected, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> torch.nn.Module:
    config = compose_tiny(tmp_path_factory.mktemp("experiments"), model_cache)
    return load_encoder(resolve_model(config.model, cache_dir=model_cache).path)


def _forward(encoder: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(5, 90, (3, 12), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # one padded window: SDPA gets a mask
    output: torch.Tensor = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return output


def test_the_mode_takes_over_every_dropout_of_a_training_encoder(tiny_encoder: torch.nn.Module) -> None:
    tiny_encoder.train()
    layers = tiny_encoder.config.num_hidden_layers
    torch.manual_seed(6)
    mode = FastDropout()
    with mode:
        out = _forward(tiny_encoder)
    # embeddings + per layer: attention probabilities (SDPA), attention output, feed-forward output
    assert mode.calls == 1 + 3 * layers
    assert torch.isfinite(out).all()
    torch.manual_seed(6)
    with FastDropout():
        again = _forward(tiny_encoder)
    assert torch.equal(out, again)  # seeded: a resumed run draws the same masks


def test_the_mode_changes_nothing_in_evaluation(tiny_encoder: torch.nn.Module) -> None:
    tiny_encoder.eval()
    with torch.inference_mode():
        plain = _forward(tiny_encoder)
        mode = FastDropout()
        with mode:
            under_mode = _forward(tiny_encoder)
    assert mode.calls == 0
    assert torch.equal(plain, under_mode)
    tiny_encoder.train()
