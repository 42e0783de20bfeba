"""hpo.pruner: each of Optuna's pruners built from the config, deciding the same in a new process."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import compose_tiny
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.hpo.pruners import DECISION_ATTR, HyperbandPruner, make_pruner
from dsm5_hpo.hpo.sampling import PerTrialSeededSampler, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _config(tmp_path: Path, model_cache: Path, *overrides: str) -> StudyConfig:
    return compose_tiny(tmp_path / "e", model_cache, *overrides)


def test_make_pruner_builds_each_pruner_with_its_settings(tmp_path: Path, model_cache: Path) -> None:
    def pruner(*overrides: str) -> optuna.pruners.BasePruner:
        return make_pruner(_config(tmp_path, model_cache, "train.max_epochs=7", *overrides))

    median = pruner("hpo.pruner=median", "hpo.pruner_startup_trials=3", "hpo.pruner_warmup_epochs=2")
    assert isinstance(median, optuna.pruners.MedianPruner)
    # The warm-up is the objective's (in epochs, whatever the report unit), not the pruner's steps.
    assert median._n_startup_trials == 3 and median._n_warmup_steps == 0
    assert isinstance(pruner("hpo.pruner=none"), optuna.pruners.NopPruner)

    halving = pruner("hpo.pruner=successive_halving", "hpo.pruner_reduction_factor=2")
    assert isinstance(halving, optuna.pruners.SuccessiveHalvingPruner)
    assert (halving._min_resource, halving._reduction_factor) == (1, 2)  # auto: the second epoch's report
    stepped = pruner("hpo.pruner=successive_halving", "hpo.report_every_n_steps=25")
    assert stepped._min_resource == 25  # auto: the first report, in optimizer steps
    given = pruner("hpo.pruner=successive_halving", "hpo.pruner_min_resource=3")
    assert given._min_resource == 3

    hyperband = pruner("hpo.pruner=hyperband")
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (1, 7, 3)
    assert pruner("hpo.pruner=hyperband", "hpo.report_every_n_steps=10")._max_resource == "auto"
    explicit = pruner("hpo.pruner=hyperband", "hpo.report_every_n_steps=10", "hpo.pruner_max_resource=400")
    assert (explicit._min_resource, explicit._max_resource) == (10, 400)


def _report_until_pruned(trial: optuna.Trial, values: list[float]) -> None:
    for step, value in enumerate(values):
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()


def test_a_decision_is_recorded_and_the_same_when_asked_again_in_a_new_process(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(
        study_name="s",
        storage=storage,
        direction="maximize",
        pruner=make_pruner_of("successive_halving", 1),
    )
    study.optimize(lambda t: _report_until_pruned(t, [0.5, 0.9, 0.9]) or 0.9, n_trials=1)
    trial = study.ask()
    trial.report(0.1, 0)
    trial.report(0.2, 1)  # rung 0 (step 1): below the first trial's 0.9
    assert trial.should_prune()
    frozen = study.trials[1]
    assert frozen.system_attrs[DECISION_ATTR.format(step=1)] == {
        "prune": True,
        "attrs": {"completed_rung_0": 0.2},
    }
    assert frozen.system_attrs["completed_rung_0"] == 0.2
    # The process dies before the trial is marked PRUNED; a new one re-attaches it and asks again.
    again = optuna.load_study(study_name="s", storage=storage, pruner=make_pruner_of("successive_halving", 1))
    reattached = optuna.trial.Trial(again, frozen._trial_id)
    assert reattached.should_prune()
    # Optuna's own pruner would now see rung 0 done and let the trial go on: a different outcome.
    plain = optuna.load_study(
        study_name="s", storage=storage, pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    )
    assert not optuna.trial.Trial(plain, frozen._trial_id).should_prune()


def test_the_attrs_of_a_decision_are_written_if_a_process_died_before_them(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    trial.report(0.4, 1)
    key = DECISION_ATTR.format(step=1)
    study._storage.set_trial_system_attr(
        trial._trial_id, key, {"prune": False, "attrs": {"completed_rung_0": 0.4}}
    )  # the decision was written, its rung attr not yet
    again = optuna.load_study(study_name="s", storage=storage, pruner=make_pruner_of("successive_halving", 1))
    assert not optuna.trial.Trial(again, trial._trial_id).should_prune()
    assert again.trials[0].system_attrs["completed_rung_0"] == 0.4


def make_pruner_of(name: str, min_resource: int) -> optuna.pruners.BasePruner:
    config = compose_tiny(Path("/nonexistent"), Path("/nonexistent"), f"hpo.pruner={name}")
    assert config.hpo.min_resource == min_resource
    return make_pruner(config)


def _hyperband(seed: int = 42, max_resource: int | str = 9) -> HyperbandPruner:
    return HyperbandPruner(seed=seed, min_resource=1, max_resource=max_resource, reduction_factor=3)


def test_hyperband_brackets_depend_on_seed_and_number_and_exist_before_any_prune(tmp_path: Path) -> None:
    def brackets(name: str, seed: int = 42) -> list[int]:
        study = optuna.create_study(
            study_name=name, storage=f"sqlite:///{tmp_path / (name + '.db')}", pruner=_hyperband(seed)
        )
        assert study.pruner._pruners == []  # nothing asked yet
        return [study.pruner._get_bracket_id(study, study.ask()._cached_frozen_trial) for _ in range(30)]

    first = brackets("study_a")
    assert first == brackets("study_b")  # another study (name) of the same seed: the same brackets
    assert len(set(first)) == 3  # floor(log3(9 / 1)) + 1 brackets, all used
    assert first != brackets("study_c", seed=7)


def test_hyperband_auto_max_resource_is_the_first_complete_trials_in_every_process(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for last in (8, 26):  # trial 0 ran 9 steps, trial 1 27
        trial = study.ask()
        for step in range(last + 1):
            trial.report(0.5, step)
        study.tell(trial, 0.5)
    fresh = _hyperband(max_resource="auto")
    fresh._get_bracket_id(study, study.trials[0])
    assert fresh._max_resource == 9 and fresh._n_brackets == 3  # not max(9, 27) as Optuna's 'auto' would


def test_the_sampler_gets_the_trials_bracket_through_the_per_trial_wrapper(
    tmp_path: Path, model_cache: Path
) -> None:
    """Optuna hands a sampler the trial's bracket under Hyperband; the wrapper passes it on. (Optuna
    5.0's TPE then reads study._get_trials, which that view does not filter: pinned here, so that an
    Optuna that starts filtering is noticed.)"""
    seen: list[tuple[int, str, int, int]] = []

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):  # type: ignore[no-untyped-def]
            every = study._get_trials(deepcopy=False)
            seen.append(
                (trial.number, type(study).__name__, len(study.get_trials(deepcopy=False)), len(every))
            )
            return super().sample_independent(study, trial, name, distribution)

    study = optuna.create_study(
        direction="maximize", sampler=PerTrialSeededSampler(Spy, 1), pruner=_hyperband()
    )
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=12)
    assert all(kind == "_BracketStudy" for _, kind, _, _ in seen)
    assert any(in_bracket < every for _, _, in_bracket, every in seen)  # the view holds one bracket
    assert [every for *_, every in seen] == list(range(1, 13))  # ... and _get_trials every trial
    config = _config(tmp_path, model_cache, "hpo.pruner=hyperband", "hpo.sampler=tpe")
    tpe = optuna.create_study(direction="maximize", sampler=make_sampler(config), pruner=make_pruner(config))
    tpe.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=6)  # TPE through the wrapper and a bracket
    assert all(t.state == TrialState.COMPLETE for t in tpe.trials)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("hpo.pruner=asha",), "hpo.pruner"),
        (("hpo.pruner_reduction_factor=1",), "hpo.pruner_reduction_factor"),
        (("hpo.pruner_min_resource=-1",), "hpo.pruner_min_resource"),
        (("hpo.pruner_max_resource=-2",), "hpo.pruner_max_resource"),
        (("hpo.report_every_n_steps=-1",), "hpo.report_every_n_steps"),
        (
            ("hpo.pruner=hyperband", "hpo.pruner_min_resource=4", "hpo.pruner_max_resource=4"),
            "hpo.pruner_max_resource",
        ),
        (
            ("hpo.pruner=successive_halving", "train.max_epochs=3", "hpo.pruner_min_resource=3"),
            "hpo.pruner_min_resource",
        ),
        (("hpo.pruner=hyperband", "train.max_epochs=1"), "hpo.pruner_min_resource"),
    ],
)
def test_bad_pruner_settings_name_their_key(
    tmp_path: Path, model_cache: Path, overrides: tuple[str, ...], key: str
) -> None:
    from dsm5_hpo.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        _config(tmp_path, model_cache, *overrides)
    assert f"'{key}'" in str(error.value)


def test_a_first_rung_past_the_last_epoch_is_fine_when_reporting_per_step(
    tmp_path: Path, model_cache: Path
) -> None:
    config = _config(
        tmp_path,
        model_cache,
        "hpo.pruner=successive_halving",
        "hpo.report_every_n_steps=5",
        "train.max_epochs=2",
    )
    assert config.hpo.min_resource == 5
