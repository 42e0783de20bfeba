"""The study's pruner (hpo.pruner: Optuna's median, successive halving, hyperband or none), made
resume-exact: a study killed at any moment and resumed in a new process decides as the same study
run straight through.

Everything a decision depends on is in the Optuna storage, never only in the pruner object:

- **Each decision is recorded.** A trial is asked again about a step it was asked about before: a
  resumed trial re-reports its checkpoint's epoch, and a process may die between a decision and the
  trial being marked PRUNED. Successive halving cannot be asked twice (it moves the trial up a rung,
  ``completed_rung_<k>`` in the trial's system attrs, each time it is asked), so every decision is
  kept in the trial's system attrs (``dsm5_hpo:prune:<step>``) together with the attrs the pruner
  set while deciding, in one write; asked again, the trial gets its recorded answer and the attrs are
  made sure of. A process killed before that write left nothing behind: the step is decided afresh,
  from the same storage, to the same answer.
- **Hyperband's brackets depend on (seed, trial number) and are set up before any trial is
  sampled.** Optuna hashes the study's name (a new uuid per study here: two studies of one config
  would prune differently), and sets its brackets up at the first ``prune`` call of the process,
  putting every trial in bracket 0 until then, which is what a sampler asking for a trial's bracket
  (``optuna.pruners._filter_study``) would see in a fresh process and not in the one that ran on.
  ``max_resource='auto'`` takes the first trial to complete (the lowest number), which every process
  finds the same, rather than whichever trials had completed when the pruner object was first asked.

The classes stay subclasses of Optuna's, so ``isinstance(study.pruner, HyperbandPruner)`` (how Optuna
decides to show a sampler only the trial's bracket) holds through them.
"""

from __future__ import annotations

import binascii
import logging
from typing import Any, cast

import optuna
from optuna.pruners import BasePruner, NopPruner
from optuna.storages import BaseStorage
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.config import StudyConfig

logger = logging.getLogger(__name__)

DECISION_ATTR = "dsm5_hpo:prune:{step}"
"""Trial system attr holding the decision about a step: {"prune": bool, "attrs": {key: value}}."""


class _HeldWrites:
    """The study's storage, except that the deciding trial's system attrs are held back (to be written
    with the decision, in one write); everything else goes to the storage."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self.attrs: dict[str, Any] = {}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id == self._trial_id:
            self.attrs[key] = value
        else:  # not what Optuna's pruners do; written as it comes rather than lost
            self._storage.set_trial_system_attr(trial_id, key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


class _StudyView:
    """``study`` with another storage (Hyperband builds its bracket studies from ``study._storage``)."""

    def __init__(self, study: Study, storage: _HeldWrites) -> None:
        self._real_study = study
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real_study, name)


class _Recorded(BasePruner):
    """A pruner whose decision about each step of a trial is made once and kept in the storage."""

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        key = DECISION_ATTR.format(step=step)
        decision = trial.system_attrs.get(key)
        if decision is None:
            held = _HeldWrites(study._storage, trial._trial_id)
            pruned = super().prune(cast(Study, _StudyView(study, held)), trial)  # type: ignore[safe-super]
            decision = {"prune": bool(pruned), "attrs": held.attrs}
            study._storage.set_trial_system_attr(trial._trial_id, key, decision)  # the decision is taken
        for name, value in decision["attrs"].items():  # a process may have died before writing them
            if trial.system_attrs.get(name) != value:
                study._storage.set_trial_system_attr(trial._trial_id, name, value)
        return bool(decision["prune"])


class MedianPruner(_Recorded, optuna.pruners.MedianPruner):
    """Optuna's MedianPruner, its decisions recorded."""


class SuccessiveHalvingPruner(_Recorded, optuna.pruners.SuccessiveHalvingPruner):
    """Optuna's SuccessiveHalvingPruner, each rung decided once."""


class HyperbandPruner(_Recorded, optuna.pruners.HyperbandPruner):
    """Optuna's HyperbandPruner, each rung decided once, a trial's bracket a function of (seed, number)."""

    def __init__(
        self, *, seed: int, min_resource: int, max_resource: int | str, reduction_factor: int
    ) -> None:
        super().__init__(
            min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor
        )
        self._seed = seed
        self._warned = False

    def _try_initialization(self, study: Study) -> None:
        if self._max_resource == "auto":
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            steps = [(t.number, t.last_step) for t in complete if t.last_step is not None]
            if not steps:
                return
            self._max_resource = min(steps)[1] + 1  # the first to complete, as Optuna's 'auto' sees it
        super()._try_initialization(study)
        if not self._pruners and not self._warned:
            self._warned = True
            logger.warning(
                "hyperband has no bracket (hpo.pruner_min_resource %d >= max_resource %s): no trial is pruned",
                self._min_resource,
                self._max_resource,
            )

    def _get_bracket_id(self, study: Study, trial: FrozenTrial) -> int:
        if not self._pruners:  # a sampler asks before the first prune: set the brackets up now
            self._try_initialization(study)
        if not self._pruners:
            return 0
        # Optuna's draw, from the seed instead of the study's name: each bracket gets its share of trials.
        n = binascii.crc32(f"{self._seed}_{trial.number}".encode()) % self._total_trial_allocation_budget
        for bracket_id, budget in enumerate(self._trial_allocation_budgets):
            n -= budget
            if n < 0:
                return bracket_id
        raise AssertionError("the budgets add up to the total")


def make_pruner(config: StudyConfig) -> BasePruner:
    """The pruner hpo.pruner names. Steps are the reports' (the epoch index, or the global optimizer
    step with hpo.report_every_n_steps); hpo.pruner_warmup_epochs is the objective's to apply (it
    knows each report's epoch), so no pruner here has warm-up steps of its own."""
    hpo = config.hpo
    if hpo.pruner == "none":
        return NopPruner()
    if hpo.pruner == "median":
        return MedianPruner(n_startup_trials=hpo.pruner_startup_trials, n_warmup_steps=0)
    if hpo.pruner == "successive_halving":
        return SuccessiveHalvingPruner(
            min_resource=hpo.min_resource, reduction_factor=hpo.pruner_reduction_factor
        )
    max_resource: int | str = hpo.pruner_max_resource or (
        "auto" if hpo.report_every_n_steps else config.train.max_epochs
    )
    return HyperbandPruner(
        seed=config.train.seed,
        min_resource=hpo.min_resource,
        max_resource=max_resource,
        reduction_factor=hpo.pruner_reduction_factor,
    )
