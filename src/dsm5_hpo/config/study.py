"""StudyConfig: every section together, the checks that span sections (the checkpoint cadence
against the retention floor, the pruner's first rung against train.max_epochs, every search-space
value against its section), and the copies a trial runs with."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsm5_hpo.config.checks import fail, require
from dsm5_hpo.config.hpo import MODEL_PARAM, HPOConfig, searchable_setting
from dsm5_hpo.config.schema import (
    DataConfig,
    ExportConfig,
    HeadsConfig,
    LoggingConfig,
    ModelConfig,
    PathsConfig,
    RetentionConfig,
    TrackingConfig,
)
from dsm5_hpo.config.train import TrainConfig
from dsm5_hpo.errors import ConfigError


@dataclass(frozen=True)
class StudyConfig:
    """The whole configuration of a study, as composed from configs/hpo_study.yaml."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    """The two task heads on the encoder (searchable as heads.<setting>)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    hpo: HPOConfig = field(default_factory=HPOConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    """How the study's best model is written to best_model/."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    retention_policy: RetentionConfig = field(default_factory=RetentionConfig)
    """Hydra group retention_policy/ (default.yaml; keep_all.yaml for benchmarks)."""
    model_catalog: dict[str, ModelConfig] = field(default_factory=dict)
    """The encoders search_space.model may choose, by configs/model/ name (filled in when the config
    is composed, so a resumed study has them without the YAML files)."""

    def __post_init__(self) -> None:
        # train.checkpoint_interval_epochs decides when checkpoints are written; the policy only
        # sets a floor, so the two settings can never disagree silently.
        require(
            self.train.checkpoint_interval_epochs >= self.retention_policy.min_interval_epochs,
            "train.checkpoint_interval_epochs",
            f"is {self.train.checkpoint_interval_epochs}, below retention_policy.min_interval_epochs "
            f"({self.retention_policy.min_interval_epochs}): raise the interval or lower the floor",
        )
        if self.data.input_format == "multi_label" and self.train.negative_sampling != 1.0:
            # A multi_label window holds every criterion of its post: there are no negative pairs to
            # leave out. Set here, so the resolved config (reports, MLflow) shows what was trained.
            object.__setattr__(self, "train", dataclasses.replace(self.train, negative_sampling=1.0))
        if self.hpo.pruner in ("successive_halving", "hyperband") and not self.hpo.report_every_n_steps:
            # Reported per epoch, the last step is max_epochs - 1: a first rung past it never prunes.
            require(
                self.hpo.min_resource < self.train.max_epochs,
                "hpo.pruner_min_resource",
                f"the first rung is at epoch index {self.hpo.min_resource}, but a trial's last report is at "
                f"{self.train.max_epochs - 1} (train.max_epochs={self.train.max_epochs}): the pruner "
                "could never stop a trial; lower it, raise train.max_epochs or use hpo.pruner=none",
            )
        self._check_search_space()

    def _check_search_space(self) -> None:
        """Every value a trial can draw must make a valid config: a bad choice or bound is refused
        now, naming the search-space key, not when a trial draws it hours into the study."""
        for name, spec in self.hpo.search_space.items():
            if name == MODEL_PARAM:
                missing = [c for c in spec.choices if str(c) not in self.model_catalog]
                require(
                    not missing,
                    f"search_space.{name}",
                    f"no model config for {missing}: each choice must be a file configs/model/<choice>.yaml "
                    f"(known here: {', '.join(sorted(self.model_catalog)) or 'none'})",
                )
                continue
            if spec.type == "categorical":
                values: tuple[Any, ...] = spec.choices
            else:
                values = (spec.low, spec.high)
                if spec.type == "int":
                    require(
                        float(spec.low or 0).is_integer() and float(spec.high or 0).is_integer(),
                        f"search_space.{name}",
                        f"an int parameter needs whole-number bounds, got low={spec.low}, high={spec.high}",
                    )
                    values = (int(spec.low or 0), int(spec.high or 0))
            section, setting = searchable_setting(name)
            for value in values:
                try:  # the section alone: a whole StudyConfig would check its search space again
                    dataclasses.replace(getattr(self, section), **{setting: value})
                except (ConfigError, TypeError) as error:
                    fail(f"search_space.{name}", f"value {value!r} is not a valid setting: {error}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-serializable form (the 'resolved config' in reports and trials)."""
        plain: dict[str, Any] = _to_plain(dataclasses.asdict(self))
        return plain

    def with_train(self, **changes: Any) -> StudyConfig:
        """A copy whose train section has ``changes`` applied (and validated)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))

    def with_params(self, params: Mapping[str, Any]) -> StudyConfig:
        """A copy with a trial's sampled ``params`` applied: 'heads.x' to heads, 'x' or 'train.x' to train."""
        changes: dict[str, dict[str, Any]] = {"train": {}, "heads": {}, "data": {}}
        model = self.model
        for name, value in params.items():
            if name == MODEL_PARAM:
                if str(value) not in self.model_catalog:
                    fail("search_space.model", f"{value!r} is not in the study's model catalog")
                model = self.model_catalog[str(value)]
                continue
            section, field_name = searchable_setting(name)
            changes[section][field_name] = value
        return dataclasses.replace(
            self,
            model=model,
            data=dataclasses.replace(self.data, **changes["data"]),
            train=dataclasses.replace(self.train, **changes["train"]),
            heads=dataclasses.replace(self.heads, **changes["heads"]),
        )


def _to_plain(value: Any) -> Any:
    """Tuples to lists, all the way down (YAML and JSON have lists only). It lives here, beside its one
    caller, not in loading.py: loading imports StudyConfig, so the reverse import would be a cycle."""
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value
