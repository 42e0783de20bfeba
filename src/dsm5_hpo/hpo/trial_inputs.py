"""The encoder and tokenized data a trial trains on: the study's own, or, when the search space chose
another encoder (search_space.model) or input format (data.input_format) for the trial, those (resolved
and tokenized on first use, then reused).

Trials run one at a time, so one other encoder's data is kept beside the study's; the splits are the
same for every encoder (they depend on the post ids and the seed only), the windows are the encoder's
own. An encoder that cannot be had (not in the HF cache, hub unreachable, gated, unreadable) is a
:class:`ModelUnavailable`: that trial fails with the loader's message and the study goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dsm5_hpo.config import DataConfig, ModelConfig, StudyConfig
from dsm5_hpo.data.prepare import PreparedData, feature_cache, prepare_data
from dsm5_hpo.errors import ConfigError, TrainingError
from dsm5_hpo.models.loading import load_tokenizer, resolve_model

logger = logging.getLogger(__name__)


class ModelUnavailable(TrainingError):
    """The trial's encoder cannot be loaded: the trial fails, the study goes on."""


@dataclass(frozen=True)
class TrialInputs:
    model_path: Path
    data: PreparedData
    origin: str = ""
    """Where the encoder came from (models.loading.ResolvedModel.origin), for reports."""


def prepare_inputs(config: StudyConfig) -> TrialInputs:
    """Resolve ``config``'s encoder and tokenize its data with it (windows from the feature cache when
    the same were built before)."""
    resolved = resolve_model(config.model, cache_dir=config.paths.cache)
    data = prepare_data(
        config.data,
        load_tokenizer(resolved.path),
        seed=config.train.seed,
        cache=feature_cache(config.data, config.paths.cache),
    )
    return TrialInputs(resolved.path, data, resolved.origin)


class InputsByModel:
    """The study's inputs, and those of the last other encoder a trial asked for."""

    def __init__(
        self,
        config: StudyConfig,
        inputs: TrialInputs,
        prepare: Callable[[StudyConfig], TrialInputs] = prepare_inputs,
    ) -> None:
        self._study_key = self._key(config)
        self._study_inputs = inputs
        self._prepare = prepare
        self._other: tuple[tuple[ModelConfig, DataConfig], TrialInputs] | None = None

    @staticmethod
    def _key(config: StudyConfig) -> tuple[ModelConfig, DataConfig]:
        return config.model, config.data

    @property
    def study(self) -> TrialInputs:
        """The study's own encoder and windows."""
        return self._study_inputs

    def for_config(self, config: StudyConfig) -> TrialInputs:
        """Inputs for a trial's config (its encoder and input format may be the study's or others)."""
        key = self._key(config)
        if key == self._study_key:
            return self._study_inputs
        if self._other is not None and self._other[0] == key:
            return self._other[1]
        self._other = None  # free the previous encoder's windows before tokenizing for the next
        try:
            inputs = self._prepare(config)
        except ConfigError as error:
            raise ModelUnavailable(
                f"encoder {config.model.name} ({config.model.pretrained or config.model.local_path}) is not "
                f"available: {error}"
            ) from error
        logger.info("trial encoder %s from %s", config.model.name, inputs.model_path)
        self._other = (key, inputs)
        return inputs
