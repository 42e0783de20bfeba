"""search_space.model choices are checked before the first trial (hpo/model_choices.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import captured_logs
from dsm5_hpo.config import MODEL_PARAM, ModelConfig, ParamSpec, StudyConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.model_choices import available_model_choices
from dsm5_hpo.models.loading import unavailable_reason

CATALOG = {
    "tiny": ModelConfig(name="tiny", local_path="tiny"),
    "bert_base": ModelConfig(name="bert_base", pretrained="google-bert/bert-base-uncased"),
    "roberta_base": ModelConfig(name="roberta_base", pretrained="FacebookAI/roberta-base"),
}


def study(*choices: str, skip: bool = False) -> StudyConfig:
    config = StudyConfig(model_catalog=dict(CATALOG))
    space = {MODEL_PARAM: ParamSpec(type="categorical", choices=choices)}
    hpo = dataclasses.replace(config.hpo, search_space=space, skip_unavailable_models=skip)
    return dataclasses.replace(config, hpo=hpo)


def hub_encoders_missing(model: ModelConfig, online: Callable[[], bool]) -> str | None:
    return None if model.local_path == "tiny" else f"{model.pretrained} is not in the HF cache"


def test_every_choice_available_leaves_the_config_as_it_is() -> None:
    config = study("tiny")
    assert available_model_choices(config, check=hub_encoders_missing) is config
    plain = StudyConfig()
    assert available_model_choices(plain, check=hub_encoders_missing) is plain  # model not searched


def test_unavailable_choices_are_refused_naming_them_and_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        available_model_choices(study("tiny", "bert_base", "roberta_base"), check=hub_encoders_missing)
    message = str(caught.value)
    assert "search_space.model" in message and "2 of 3 encoders" in message
    assert "bert_base: google-bert/bert-base-uncased is not in the HF cache" in message
    assert "search_space.model.choices=[tiny]" in message and "hpo.skip_unavailable_models=true" in message


def test_skip_unavailable_models_drops_them_with_a_warning() -> None:
    with captured_logs("dsm5_hpo.hpo.model_choices") as logs:
        config = available_model_choices(study("bert_base", "tiny", skip=True), check=hub_encoders_missing)
    assert config.hpo.search_space[MODEL_PARAM].choices == ("tiny",)
    assert [r.levelno for r in logs] == [logging.WARNING] and "bert_base" in logs[0].getMessage()


def test_with_no_choice_left_skipping_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="model=<a local encoder>"):
        available_model_choices(study("bert_base", skip=True), check=hub_encoders_missing)


def _missing(repo: str, revision: str, local_files_only: bool) -> str:
    raise FileNotFoundError(repo)


def test_unavailable_reason_follows_what_the_loader_would_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = ModelConfig(name="x", pretrained="org/model")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" in str(unavailable_reason(hub, downloader=_missing, online=lambda: True))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert "cannot be reached" in str(unavailable_reason(hub, downloader=_missing, online=lambda: False))
    assert unavailable_reason(hub, downloader=_missing, online=lambda: True) is None  # the hub answers
    cached = unavailable_reason(hub, downloader=lambda *a: str(tmp_path), online=lambda: False)
    assert cached is None  # in the HF cache: no hub needed
    (tmp_path / "config.json").write_text("{}")
    local = ModelConfig(name="x", local_path=str(tmp_path))
    assert unavailable_reason(local, downloader=_missing, online=lambda: False) is None
    assert unavailable_reason(ModelConfig(name="t", local_path="tiny"), downloader=_missing) is None
    gone = ModelConfig(name="p", local_path="package:no_such_package_here")
    assert "not installed" in str(unavailable_reason(gone, downloader=_missing, online=lambda: False))
