"""dsm5_hpo.training.optimization: parameter groups, layer-wise decay, freezing, optimizers, schedules."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from dsm5_hpo.config import TrainConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.models.multi_task import DualHeadModel
from dsm5_hpo.training.optimization import (
    build_optimizer,
    build_schedule,
    encoder_depth,
    freeze_lowest_layers,
)

LAYERS = 3


def model() -> DualHeadModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=16
    )
    return DualHeadModel(BertModel(config, add_pooling_layer=False), dropout=0.0)


def lr_of(optimizer: torch.optim.Optimizer, parameter: nn.Parameter) -> float:
    (group,) = [g for g in optimizer.param_groups if any(p is parameter for p in g["params"])]
    return float(group["lr"])


def test_encoder_depth_counts_embeddings_then_layers_bottom_up() -> None:
    assert encoder_depth("encoder.embeddings.word_embeddings.weight", LAYERS) == 0
    assert encoder_depth("encoder.encoder.layer.0.attention.self.query.weight", LAYERS) == 1
    assert encoder_depth("encoder.encoder.layer.2.output.dense.bias", LAYERS) == 3
    assert encoder_depth("encoder.pooler.dense.weight", LAYERS) == LAYERS + 1
    assert encoder_depth("criteria_head.classifier.weight", LAYERS) is None


def test_layer_wise_decay_gives_lower_layers_smaller_rates() -> None:
    m = model()
    config = TrainConfig(learning_rate_encoder=1e-4, learning_rate_heads=1e-3, layer_lr_decay=0.5)
    optimizer = build_optimizer(m, config)
    named = dict(m.named_parameters())
    top = named["encoder.encoder.layer.2.attention.self.query.weight"]
    bottom = named["encoder.encoder.layer.0.attention.self.query.weight"]
    embeddings = named["encoder.embeddings.word_embeddings.weight"]
    assert lr_of(optimizer, top) == pytest.approx(1e-4)
    assert lr_of(optimizer, bottom) == pytest.approx(1e-4 * 0.5**2)
    assert lr_of(optimizer, embeddings) == pytest.approx(1e-4 * 0.5**3)
    assert lr_of(optimizer, named["criteria_head.classifier.weight"]) == pytest.approx(1e-3)
    # Every trainable parameter is in exactly one group.
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(m.parameters()))


def test_no_weight_decay_on_biases_and_norms() -> None:
    m = model()
    optimizer = build_optimizer(m, TrainConfig(weight_decay=0.05))
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            expected = 0.0 if parameter.ndim == 1 else 0.05
            assert group["weight_decay"] == expected


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("adafactor", torch.optim.Adafactor)],
)
def test_each_optimizer_takes_a_step(kind: str, cls: type) -> None:
    m = model()
    optimizer = build_optimizer(m, TrainConfig(optimizer=kind))  # type: ignore[arg-type]
    assert type(optimizer) is cls
    before = m.criteria_head.classifier.weight.detach().clone()
    out = m(
        torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long), torch.ones(2, 6, dtype=torch.bool)
    )
    (out.criteria_logits.sum() + out.start_logits.sum()).backward()
    optimizer.step()
    assert not torch.equal(before, m.criteria_head.classifier.weight)


def test_freezing_stops_the_embeddings_and_lowest_layers_from_training() -> None:
    m = model()
    frozen = freeze_lowest_layers(m, 2)
    assert frozen > 0
    for name, parameter in m.named_parameters():
        depth = encoder_depth(name, LAYERS)
        assert parameter.requires_grad == (depth is None or depth > 2), name
    optimizer = build_optimizer(m, TrainConfig())
    assert all(p.requires_grad for g in optimizer.param_groups for p in g["params"])
    assert freeze_lowest_layers(model(), 0) == 0
    with pytest.raises(ConfigError, match=r"train\.freeze_layers.*has 3"):
        freeze_lowest_layers(model(), 4)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedules_warm_up_then_follow_their_shape(kind: str) -> None:
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    config = dataclasses.replace(TrainConfig(), warmup_ratio=0.2, scheduler=kind)  # type: ignore[arg-type]
    schedule = build_schedule(optimizer, config, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] < rates[1] < rates[2]  # warmup over 2 steps
    assert rates[2] == pytest.approx(1.0)
    after = rates[2:]
    if kind == "constant":
        assert after == pytest.approx([1.0] * 8)
    else:
        assert all(a >= b for a, b in itertools.pairwise(after))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # reaches 0 at the end
    if kind == "cosine":
        assert rates[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
