"""Typed schema of the whole configuration, validated on construction.

Only ``cli/`` sees Hydra's ``DictConfig``; it turns it into a plain mapping and calls
:func:`study_config_from_mapping`. Every error names the config key (``train.max_epochs``)
so the user knows which line of which YAML file, or which override, to fix.

Modules: ``schema`` (paths, data, model, heads, tracking, logging, retention), ``train``, ``hpo``
(the hpo section and the search space), ``study`` (StudyConfig), ``loading`` (mapping -> StudyConfig)
and ``checks`` (what they validate with). Import from the package, not its modules: the names below
are its interface.

Layering: config sits just above the leaf modules. It may import ``dsm5_hpo.errors``,
``dsm5_hpo.layout``, ``dsm5_hpo.vocabulary`` and ``dsm5_hpo.utils`` only (tests/unit/test_layers.py
checks it), so every layer above can read a config without pulling in torch, data or training code.
"""

from __future__ import annotations

from dsm5_hpo.config.checks import parse_size
from dsm5_hpo.config.hpo import (
    MODEL_PARAM,
    PRUNERS,
    SAMPLERS,
    SEARCHABLE,
    SHARED_STORAGE_SCHEMES,
    START_METHODS,
    TRIAL_ISOLATIONS,
    HPOConfig,
    ParamSpec,
    ParamType,
    PrunerName,
    SamplerName,
    fix_overridden,
    search_key_of_override,
    searchable_setting,
)
from dsm5_hpo.config.loading import study_config_from_mapping
from dsm5_hpo.config.schema import (
    CRITERIA_HEADS,
    DATA_SOURCES,
    EVIDENCE_HEADS,
    EVIDENCE_UNITS,
    INPUT_FORMATS,
    LOG_LEVELS,
    POOLINGS,
    TRACKING_BACKENDS,
    CriteriaHead,
    DataConfig,
    DataSource,
    EvidenceHead,
    EvidenceUnit,
    ExportConfig,
    HeadsConfig,
    InputFormat,
    LoggingConfig,
    ModelConfig,
    PathsConfig,
    Pooling,
    RetentionConfig,
    SplitConfig,
    TinyModelConfig,
    TrackingBackend,
    TrackingConfig,
)
from dsm5_hpo.config.study import StudyConfig
from dsm5_hpo.config.train import (
    CRITERIA_LOSSES,
    DISTRIBUTED_MODES,
    EVIDENCE_GATINGS,
    FINETUNINGS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULERS,
    CriteriaLoss,
    Distributed,
    EvidenceGating,
    Finetuning,
    OptimizerName,
    Precision,
    SchedulerName,
    TrainConfig,
)

__all__ = [
    "CRITERIA_HEADS",
    "CRITERIA_LOSSES",
    "DATA_SOURCES",
    "DISTRIBUTED_MODES",
    "EVIDENCE_GATINGS",
    "EVIDENCE_HEADS",
    "EVIDENCE_UNITS",
    "FINETUNINGS",
    "INPUT_FORMATS",
    "LOG_LEVELS",
    "MODEL_PARAM",
    "OPTIMIZERS",
    "POOLINGS",
    "PRECISIONS",
    "PRUNERS",
    "SAMPLERS",
    "SCHEDULERS",
    "SEARCHABLE",
    "SHARED_STORAGE_SCHEMES",
    "START_METHODS",
    "TRACKING_BACKENDS",
    "TRIAL_ISOLATIONS",
    "CriteriaHead",
    "CriteriaLoss",
    "DataConfig",
    "DataSource",
    "Distributed",
    "EvidenceGating",
    "EvidenceHead",
    "EvidenceUnit",
    "ExportConfig",
    "Finetuning",
    "HPOConfig",
    "HeadsConfig",
    "InputFormat",
    "LoggingConfig",
    "ModelConfig",
    "OptimizerName",
    "ParamSpec",
    "ParamType",
    "PathsConfig",
    "Pooling",
    "Precision",
    "PrunerName",
    "RetentionConfig",
    "SamplerName",
    "SchedulerName",
    "SplitConfig",
    "StudyConfig",
    "TinyModelConfig",
    "TrackingBackend",
    "TrackingConfig",
    "TrainConfig",
    "fix_overridden",
    "parse_size",
    "search_key_of_override",
    "searchable_setting",
    "study_config_from_mapping",
]
