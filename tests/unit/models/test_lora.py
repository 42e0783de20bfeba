"""LoRA fine-tuning (models/lora.py): which modules get adapters, what trains, freezing, layer-wise
decay, learning, mixed precision and the state_dict round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    RobertaConfig,
    RobertaModel,
)

from conftest import compose_tiny
from dsm5_hpo.config import TrainConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.models.loading import resolve_model
from dsm5_hpo.models.lora import LoraSettings, adapter_keys, attention_projections, merged_copy
from dsm5_hpo.models.multi_task import DualHeadModel, build_model, joint_loss
from dsm5_hpo.training.optimization import build_optimizer, freeze_lowest_layers

SETTINGS = LoraSettings(rank=4, alpha=8.0, dropout=0.0)
ATTENTION = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")


def small_bert(layers: int = 3) -> BertModel:
    config = BertConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32
    )
    return BertModel(config, add_pooling_layer=False)


def lora_model(settings: LoraSettings = SETTINGS, *, seed: int = 0, layers: int = 3) -> DualHeadModel:
    torch.manual_seed(seed)
    return DualHeadModel(small_bert(layers), dropout=0.0, lora=settings)


def batch(size: int = 4, length: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(5, 60, (size, length), generator=generator),
        "attention_mask": torch.ones(size, length, dtype=torch.long),
        "answer_mask": torch.ones(size, length, dtype=torch.bool),
        "labels": torch.tensor([1.0, 0.0] * (size // 2)),
        "start": torch.randint(0, length, (size,), generator=generator),
        "end": torch.randint(0, length, (size,), generator=generator),
    }


def loss_of(model: DualHeadModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    output = model(inputs["input_ids"], inputs["attention_mask"], inputs["answer_mask"])
    return joint_loss(output, inputs["labels"], inputs["start"], inputs["end"]).total


def randomize_adapters(model: nn.Module, seed: int = 3) -> None:
    """B starts at zero (the adapter adds nothing): give it weights so that tests can see it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def adapted(module: nn.Module) -> set[str]:
    return {name for name, child in module.named_modules() if isinstance(child, LoraLayer)}


@pytest.fixture(scope="module")
def tiny_path(model_cache: Path) -> Path:
    config = compose_tiny(model_cache / "unused_experiments", model_cache)
    return resolve_model(config.model, cache_dir=model_cache).path


def test_lora_wraps_exactly_the_attention_projections_of_the_tiny_model(
    tiny_path: Path, model_cache: Path, tmp_path: Path
) -> None:
    config = compose_tiny(tmp_path, model_cache, "train.finetuning=lora")
    model = build_model(tiny_path, config)
    layers = model.encoder.config.num_hidden_layers
    expected = {f"encoder.layer.{i}.{suffix}" for i in range(layers) for suffix in ATTENTION}
    assert set(model.lora_targets) == expected
    assert adapted(model.encoder) == expected  # the feed-forward dense layers are left alone
    assert model.head_config()["lora"]["rank"] == config.train.lora_rank


@pytest.mark.parametrize(
    ("encoder", "names"),
    [
        (
            RobertaModel(
                RobertaConfig(
                    vocab_size=60,
                    hidden_size=16,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=32,
                ),
                add_pooling_layer=False,
            ),
            ATTENTION,
        ),
        (
            DebertaV2Model(
                DebertaV2Config(
                    vocab_size=60,
                    hidden_size=16,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=32,
                )
            ),
            (
                "attention.self.query_proj",
                "attention.self.key_proj",
                "attention.self.value_proj",
                "attention.output.dense",
            ),
        ),
        (
            DistilBertModel(DistilBertConfig(vocab_size=60, dim=16, n_layers=2, n_heads=2, hidden_dim=32)),
            ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"),
        ),
    ],
    ids=["roberta", "deberta_v2", "distilbert"],
)
def test_the_attention_projections_are_found_by_module_type(
    encoder: nn.Module, names: tuple[str, ...]
) -> None:
    stack = "transformer.layer" if isinstance(encoder, DistilBertModel) else "encoder.layer"
    expected = {f"{stack}.{i}.{name}" for i in range(2) for name in names}
    assert set(attention_projections(encoder)) == expected
    model = DualHeadModel(encoder, dropout=0.0, lora=SETTINGS)
    assert adapted(model.encoder) == expected


def test_only_adapters_and_heads_train() -> None:
    full, lora = DualHeadModel(small_bert(), dropout=0.0), lora_model()
    trainable = {name for name, p in lora.named_parameters() if p.requires_grad}
    heads = {name for name, _ in full.named_parameters() if not name.startswith("encoder.")}
    assert trainable == set(adapter_keys(lora)) | heads
    assert all(".lora_A." in name or ".lora_B." in name for name in trainable - heads)
    # rank x (in + out) per adapted 16 x 16 projection: 4 per layer, 3 layers
    assert sum(p.numel() for n, p in lora.named_parameters() if n in trainable - heads) == 4 * 3 * 4 * (
        16 + 16
    )


def test_explicit_suffixes_override_the_default_and_a_suffix_matching_nothing_names_the_key() -> None:
    model = lora_model(LoraSettings(rank=2, alpha=4.0, dropout=0.1, target_modules=("query", "value")))
    assert adapted(model.encoder) == {
        f"encoder.layer.{i}.attention.self.{name}" for i in range(3) for name in ("query", "value")
    }
    with pytest.raises(ConfigError, match=r"'train\.lora_target_modules'.*'qkv'"):
        lora_model(LoraSettings(rank=2, alpha=4.0, dropout=0.1, target_modules=("qkv",)))


def test_frozen_layers_get_no_adapter_and_the_rest_still_trains() -> None:
    model = lora_model(LoraSettings(rank=4, alpha=8.0, dropout=0.0, frozen_layers=1))
    assert adapted(model.encoder) == {f"encoder.layer.{i}.{s}" for i in (1, 2) for s in ATTENTION}
    before = {name for name, p in model.named_parameters() if p.requires_grad}
    freeze_lowest_layers(model, 1)  # what the trainer does with train.freeze_layers=1: nothing left to freeze
    assert {name for name, p in model.named_parameters() if p.requires_grad} == before
    assert any(".layer.1." in name for name in before) and not any(".layer.0." in name for name in before)


def test_every_layer_frozen_leaves_no_adapter_and_a_frozen_encoder() -> None:
    model = lora_model(LoraSettings(rank=4, alpha=8.0, dropout=0.0, frozen_layers=3))
    assert model.lora_targets == [] and not adapted(model)
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_layer_wise_decay_groups_adapters_by_their_layer() -> None:
    model = lora_model()
    optimizer = build_optimizer(model, TrainConfig(learning_rate_encoder=1e-3, layer_lr_decay=0.5))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    for layer in range(3):
        for part in ("lora_A", "lora_B"):
            name = f"encoder.encoder.layer.{layer}.attention.self.query.{part}.default.weight"
            assert rate[id(named[name])] == pytest.approx(1e-3 * 0.5 ** (2 - layer))
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == sum(1 for p in model.parameters() if p.requires_grad)  # frozen weights: none


def test_a_few_optimizer_steps_lower_the_loss() -> None:
    model = lora_model(LoraSettings(rank=4, alpha=8.0, dropout=0.1)).train()
    optimizer = build_optimizer(model, TrainConfig(learning_rate_encoder=5e-3, learning_rate_heads=5e-3))
    inputs = batch()
    frozen = model.encoder.encoder.layer[0].attention.self.query.base_layer.weight.clone()
    first = loss_of(model, inputs).item()
    for _ in range(15):
        optimizer.zero_grad()
        loss_of(model, inputs).backward()
        optimizer.step()
    assert loss_of(model, inputs).item() < first - 0.1
    assert torch.equal(model.encoder.encoder.layer[0].attention.self.query.base_layer.weight, frozen)
    b = model.encoder.encoder.layer[0].attention.self.query.lora_B["default"].weight
    assert b.abs().sum() > 0  # the adapter moved off its zero start


def test_bf16_autocast_trains_the_adapters() -> None:
    model = lora_model().train()
    randomize_adapters(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_of(model, batch())
    loss.backward()
    grads = [p.grad for name, p in model.named_parameters() if ".lora_A." in name]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 weights stay


def test_the_state_dict_loads_into_a_freshly_built_model_with_identical_outputs() -> None:
    trained = lora_model(seed=0).eval()
    randomize_adapters(trained)
    fresh = lora_model(seed=7).eval()  # other random draws: heads, adapters (and the encoder here)
    fresh.load_state_dict(trained.state_dict())  # strict: every name matches
    inputs = batch()
    with torch.no_grad():
        a = trained(inputs["input_ids"], inputs["attention_mask"], inputs["answer_mask"])
        b = fresh(inputs["input_ids"], inputs["attention_mask"], inputs["answer_mask"])
    assert torch.equal(a.criteria_logits, b.criteria_logits) and torch.equal(a.start_logits, b.start_logits)


def test_merging_gives_a_plain_encoder_with_the_same_outputs() -> None:
    model = lora_model().eval()
    randomize_adapters(model)
    merged = merged_copy(model.encoder)
    assert not adapted(merged) and adapted(model.encoder)  # the original keeps its adapters
    assert set(merged.state_dict()) == set(small_bert().state_dict())
    ids = batch()["input_ids"]
    with torch.no_grad():
        expected = model.encoder(input_ids=ids).last_hidden_state
        assert torch.allclose(merged(input_ids=ids).last_hidden_state, expected, atol=1e-5)
