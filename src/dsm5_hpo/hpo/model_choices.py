"""Before the first trial: can every encoder search_space.model offers be had here?

Offline, a hub encoder that is not in the HF cache fails every trial that draws it, each after the
loader's retries: a `search_space=full` study on a machine without the hub would burn its trials. The
choices are checked once, without downloading (models/loading.py ``unavailable_reason``): the study is
refused with one line naming the unavailable choices and the override that removes them, or, with
hpo.skip_unavailable_models=true, they are dropped from the search space with a WARNING.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

from dsm5_hpo.config import MODEL_PARAM, ModelConfig, StudyConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.models.loading import hub_reachable, unavailable_reason

logger = logging.getLogger(__name__)

Check = Callable[[ModelConfig, Callable[[], bool]], str | None]


def _check(model: ModelConfig, online: Callable[[], bool]) -> str | None:
    return unavailable_reason(model, online=online)


def available_model_choices(config: StudyConfig, *, check: Check = _check) -> StudyConfig:
    """``config`` with every search_space.model choice available (unchanged when all are); ConfigError
    naming the unavailable ones unless hpo.skip_unavailable_models drops them."""
    spec = config.hpo.search_space.get(MODEL_PARAM)
    if spec is None:
        return config
    online = functools.cache(hub_reachable)  # asked at most once, and only for a hub encoder not cached
    missing = {
        str(choice): reason
        for choice in spec.choices
        if (reason := check(config.model_catalog[str(choice)], online)) is not None
    }
    if not missing:
        return config
    kept = tuple(choice for choice in spec.choices if str(choice) not in missing)
    named = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
    if not config.hpo.skip_unavailable_models or not kept:
        fix = (
            f"search_space.model.choices=[{','.join(map(str, kept))}] or hpo.skip_unavailable_models=true"
            if kept
            else "model=<a local encoder> (it fixes the encoder: model=minilm is bundled) or put the encoders "
            "in the HF cache"
        )
        raise ConfigError(
            f"config key 'search_space.model': {len(missing)} of {len(spec.choices)} encoders cannot be had "
            f"here ({named}); every trial drawing one would fail: set {fix}"
        )
    logger.warning(
        "search_space.model: dropping %d encoder(s) that cannot be had here (hpo.skip_unavailable_models): %s; "
        "searching %s",
        len(missing),
        named,
        ", ".join(map(str, kept)),
    )
    space = {**config.hpo.search_space, MODEL_PARAM: dataclasses.replace(spec, choices=kept)}
    return dataclasses.replace(config, hpo=dataclasses.replace(config.hpo, search_space=space))
