"""Samplers of the study, made resume-exact (the pruners: hpo/pruners.py).

Optuna's samplers keep one random generator for the whole study, so a study resumed in a new
process would draw different parameters than the same study never interrupted. Here each trial
gets a sampler seeded from (seed, trial number), and each independently sampled parameter its own
generator seeded from (seed, trial number, name): the parameters of trial n depend only on the seed
and the trials before it, whatever process runs it and wherever the previous process was killed.

Under hpo.pruner=hyperband, Optuna hands a sampler a view of the study holding only the trial's bracket
(``optuna.pruners._filter_study``); the wrapper passes that view on to its inner sampler unchanged.
(Optuna 5.0's TPESampler reads ``study._get_trials``, which that view does not filter: TPE models every
trial, in whichever bracket; see tests/unit/hpo/test_pruners.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.config import StudyConfig
from dsm5_hpo.hpo.search_space import config_trial

logger = logging.getLogger(__name__)


class PerTrialSeededSampler(BaseSampler):
    """Delegates to ``factory(seed + trial.number)``, one inner sampler per trial number."""

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int) -> None:
        self._factory = factory
        self._seed = seed
        self._samplers: dict[int, BaseSampler] = {}

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        # Only the current trial's sampler is ever needed again; drop older ones to stay O(1) in memory.
        if trial.number not in self._samplers:
            self._samplers = {trial.number: self._factory(self._seed * 100_003 + trial.number)}
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # One generator per (trial, parameter): a trial killed after some of its parameters were stored
        # draws the missing ones exactly as the uninterrupted trial did.
        key = f"{self._seed}/{trial.number}/{param_name}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
        return self._factory(seed).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Seeds are derived from trial numbers; nothing to reseed."""


def make_sampler(config: StudyConfig) -> BaseSampler:
    if config.hpo.sampler == "random":
        return PerTrialSeededSampler(lambda seed: optuna.samplers.RandomSampler(seed=seed), config.train.seed)
    startup = config.hpo.startup_trials
    return PerTrialSeededSampler(
        lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup), config.train.seed
    )


def enqueue_config_trial(
    study: optuna.Study, config: StudyConfig, *, lock: contextlib.AbstractContextManager[None]
) -> None:
    """Queue the config's own values of the searched settings as the study's first trial (a new
    study only; under ``lock``, so that one of several workers does it)."""
    with lock:
        if study.get_trials(deepcopy=False):
            return
        first = config_trial(config)
        if first:
            study.enqueue_trial(first)
            logger.info("trial 0 runs the config's own values of the searched settings: %s", first)
