"""Search space -> Optuna suggestions."""

from __future__ import annotations

from typing import Any

import optuna

from dsm5_hpo.config import ParamSpec
from dsm5_hpo.hpo.search_space import suggest_params


class RecordingTrial:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        self.calls.append(("float", (name, low, high, log)))
        return low

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        self.calls.append(("int", (name, low, high, log)))
        return high

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.calls.append(("categorical", (name, tuple(choices))))
        return choices[-1]


SPACE = {
    "learning_rate_encoder": ParamSpec(type="float", low=1e-5, high=1e-3, log=True),
    "max_epochs": ParamSpec(type="int", low=1.0, high=3.0),
    "batch_size": ParamSpec(type="categorical", choices=(8, 16)),
}


def test_each_kind_maps_to_its_suggest_call() -> None:
    trial = RecordingTrial()
    params = suggest_params(trial, SPACE)
    assert params == {"learning_rate_encoder": 1e-5, "max_epochs": 3, "batch_size": 16}
    assert trial.calls == [
        ("float", ("learning_rate_encoder", 1e-5, 1e-3, True)),
        ("int", ("max_epochs", 1, 3, False)),
        ("categorical", ("batch_size", (8, 16))),
    ]


def test_real_optuna_trials_stay_in_bounds() -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = suggest_params(trial, SPACE)
        assert 1e-5 <= params["learning_rate_encoder"] <= 1e-3
        assert params["max_epochs"] in (1, 2, 3)
        assert params["batch_size"] in (8, 16)
        study.tell(trial, 0.0)
