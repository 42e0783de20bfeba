"""Turn the configured search space into Optuna suggestions (pure apart from the trial calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dsm5_hpo.config import MODEL_PARAM, ParamSpec, StudyConfig, searchable_setting


class Suggester(Protocol):
    """The part of ``optuna.Trial`` the search space uses (a fake in tests)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def suggest_params(trial: Suggester, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Sample every parameter of ``space`` (in config order); names are train.* fields."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec.choices))
        elif spec.type == "int":
            assert spec.low is not None and spec.high is not None  # checked by HPOConfig
            params[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        else:
            assert spec.low is not None and spec.high is not None
            params[name] = trial.suggest_float(name, float(spec.low), float(spec.high), log=spec.log)
    return params


def _contains(spec: ParamSpec, value: Any) -> bool:
    if spec.type == "categorical":
        return value in spec.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    assert spec.low is not None and spec.high is not None
    inside = float(spec.low) <= float(value) <= float(spec.high)
    return inside and (spec.type == "float" or float(value).is_integer())


def config_trial(config: StudyConfig) -> dict[str, Any]:
    """The config's own values of the searched settings (hpo.enqueue_config_trial): the study's first
    trial runs the recipe the config file states, so a study learns at least as well as `make train`
    without a search, and the sampler explores from there. A value outside its distribution is left
    to the sampler."""
    params: dict[str, Any] = {}
    for name, spec in config.hpo.search_space.items():
        if name == MODEL_PARAM:  # the catalog's name of the configured encoder, when it is one of them
            value: Any = next(
                (key for key, model in config.model_catalog.items() if model == config.model), None
            )
        else:
            section, setting = searchable_setting(name)
            value = getattr(getattr(config, section), setting)
        if _contains(spec, value):
            params[name] = value
    return params
