"""Turn the configured search space into Optuna suggestions (pure apart from the trial calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dsm5_hpo.config import ParamSpec


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
