"""Per-trial seeded sampling: a study continued in a new process draws what it would have drawn."""

from __future__ import annotations

from pathlib import Path

import optuna

from conftest import compose_tiny
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.hpo.pruners import make_pruner
from dsm5_hpo.hpo.sampling import make_sampler
from dsm5_hpo.hpo.search_space import suggest_params


def _objective(config: StudyConfig):  # type: ignore[no-untyped-def]
    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, config.hpo.search_space)
        return float(params["learning_rate_encoder"] * 1000 + params["dropout"])

    return objective


def _params(study: optuna.Study) -> list[dict[str, object]]:
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


def test_interrupted_and_continued_study_samples_the_same_params(tmp_path: Path, model_cache: Path) -> None:
    config = compose_tiny(tmp_path / "e", model_cache, "hpo.n_trials=14", "hpo.sampler=tpe")
    objective = _objective(config)

    straight = optuna.create_study(direction="maximize", sampler=make_sampler(config))
    straight.optimize(objective, n_trials=14)

    storage = f"sqlite:///{tmp_path / 'split.db'}"
    first = optuna.create_study(
        study_name="s", storage=storage, direction="maximize", sampler=make_sampler(config)
    )
    first.optimize(objective, n_trials=6)
    # A new process: a fresh sampler object, the history from storage.
    again = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(config))
    again.optimize(objective, n_trials=8)

    assert _params(again) == _params(straight)  # includes TPE trials past the 10 random startup ones


def test_random_sampler_and_pruners(tmp_path: Path, model_cache: Path) -> None:
    config = compose_tiny(tmp_path / "e", model_cache, "hpo.sampler=random", "hpo.pruner=median")
    a = optuna.create_study(sampler=make_sampler(config))
    b = optuna.create_study(sampler=make_sampler(config))
    a.optimize(_objective(config), n_trials=3)
    b.optimize(_objective(config), n_trials=3)
    assert _params(a) == _params(b)
    assert isinstance(make_pruner(config), optuna.pruners.MedianPruner)
    none = compose_tiny(tmp_path / "e", model_cache, "hpo.pruner=none")
    assert isinstance(make_pruner(none), optuna.pruners.NopPruner)


def test_a_trial_killed_between_two_stored_params_draws_the_rest_the_same(
    tmp_path: Path, model_cache: Path
) -> None:
    config = compose_tiny(tmp_path / "e", model_cache, "hpo.n_trials=3")
    objective = _objective(config)
    straight = optuna.create_study(direction="maximize", sampler=make_sampler(config))
    straight.optimize(objective, n_trials=2)

    storage = f"sqlite:///{tmp_path / 'partial.db'}"
    study = optuna.create_study(
        study_name="p", storage=storage, direction="maximize", sampler=make_sampler(config)
    )
    study.optimize(objective, n_trials=1)
    trial = study.ask()
    names = list(config.hpo.search_space)
    trial.suggest_float(
        names[0],
        config.hpo.search_space[names[0]].low,
        config.hpo.search_space[names[0]].high,
        log=config.hpo.search_space[names[0]].log,
    )  # only the first param reached storage
    # A new process re-attaches the RUNNING trial with a fresh sampler and suggests everything again.
    again = optuna.load_study(study_name="p", storage=storage, sampler=make_sampler(config))
    (frozen,) = again.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    reattached = optuna.trial.Trial(again, frozen._trial_id)
    assert suggest_params(reattached, config.hpo.search_space) == _params(straight)[1]


def test_startup_trials_are_a_third_of_the_study_between_1_and_10(tmp_path: Path, model_cache: Path) -> None:
    def startup(*overrides: str) -> int:
        return compose_tiny(tmp_path / "e", model_cache, *overrides).hpo.startup_trials

    assert startup("hpo.n_trials=10") == 3  # Optuna's own 10 would leave a 10-trial study all random
    assert startup("hpo.n_trials=2") == 1
    assert startup("hpo.n_trials=1000") == 10
    assert startup("hpo.n_trials=10", "hpo.sampler_startup_trials=7") == 7
    config = compose_tiny(tmp_path / "e", model_cache, "hpo.n_trials=10")
    sampler = make_sampler(config)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective(config), n_trials=4)
    # The fourth trial is TPE's (it models the three before it); a random sampler draws otherwise.
    assert _params(study) != _params(_random_study(config, 4))


def _random_study(config: StudyConfig, n: int) -> optuna.Study:
    import dataclasses

    random = dataclasses.replace(config, hpo=dataclasses.replace(config.hpo, sampler="random"))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(random))
    study.optimize(_objective(random), n_trials=n)
    return study


def test_the_config_trial_holds_the_configs_values_inside_the_space(
    tmp_path: Path, model_cache: Path
) -> None:
    from dsm5_hpo.hpo.search_space import config_trial

    config = compose_tiny(
        tmp_path / "e",
        model_cache,
        # the config's learning_rate_heads (2e-2) is outside this range: left to the sampler
        "search_space.learning_rate_heads={type:float,low:0.05,high:0.5,log:true}",
        "+search_space.heads.pooling={type:categorical,choices:[mean,max]}",
    )
    trial = config_trial(config)
    assert trial["learning_rate_encoder"] == config.train.learning_rate_encoder
    assert trial["batch_size"] == config.train.batch_size and trial["heads.pooling"] == config.heads.pooling
    assert "learning_rate_heads" not in trial
    assert set(trial) < set(config.hpo.search_space)
    # Applied as a trial's params, they give back the config itself.
    assert config.with_params(trial) == config
