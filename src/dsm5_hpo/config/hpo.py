"""The hpo section and its search space: which settings a trial may sample (SEARCHABLE), how a
search-space key names a setting, the distributions (ParamSpec) and the Optuna study settings."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from dsm5_hpo.config.checks import either, require
from dsm5_hpo.config.schema import HeadsConfig
from dsm5_hpo.config.train import NOT_SEARCHABLE, TrainConfig
from dsm5_hpo.vocabulary import METRIC_NAMES

ParamType = Literal["float", "int", "categorical"]
SamplerName = Literal["tpe", "random"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PrunerName = Literal["median", "hyperband", "successive_halving", "none"]
PRUNERS: tuple[str, ...] = get_args(PrunerName)
TrialIsolation = Literal["auto", "process", "none"]
TRIAL_ISOLATIONS: tuple[str, ...] = get_args(TrialIsolation)
StartMethod = Literal["forkserver", "spawn"]
START_METHODS: tuple[str, ...] = get_args(StartMethod)
DEVICES_PATTERN = re.compile(r"^(auto|cpu:[1-9][0-9]*|[0-9]+(,[0-9]+)*)$")
"""hpo.devices: 'auto', 'cpu:N' or a comma-separated list of CUDA device indices ('0,1,2,3')."""

SHARED_STORAGE_SCHEMES: tuple[str, ...] = ("postgresql", "postgresql+psycopg", "sqlite")

MODEL_PARAM = "model"
"""Search-space key choosing the encoder among the model configs (configs/model/<choice>.yaml)."""


SEARCHABLE: dict[str, set[str]] = {
    "train": {f.name for f in dataclasses.fields(TrainConfig)} - NOT_SEARCHABLE,
    "heads": {f.name for f in dataclasses.fields(HeadsConfig)},
    # Data settings change the windows, so a trial that draws one is tokenized for it; only the input
    # format is a modelling choice (paths, sources and splits are not to be searched).
    "data": {"input_format"},
}
"""Settings a search space may sample, per section."""


def searchable_setting(name: str) -> tuple[str, str]:
    """Search-space key -> (section, setting): 'heads.pooling' -> ('heads', 'pooling');
    'train.seed' and plain 'seed' -> ('train', 'seed')."""
    section, dot, rest = name.partition(".")
    if dot and section in SEARCHABLE:
        return section, rest
    return "train", name


def search_key_of_override(key: str) -> str | None:
    """The search-space name a command-line override sets, or None when it is not a searchable setting:
    'train.learning_rate_encoder' -> 'learning_rate_encoder' (the bare name the YAML uses),
    'heads.pooling' -> 'heads.pooling', 'model' (the group) -> 'model'."""
    key = key.lstrip("+~")
    if key == MODEL_PARAM:
        return MODEL_PARAM
    section, dot, setting = key.partition(".")
    if not dot or section not in SEARCHABLE or setting not in SEARCHABLE[section]:
        return None
    return setting if section == "train" else key


def fix_overridden(
    space: Mapping[str, Any], override_keys: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """The search space without the settings the command line fixes, and the names it dropped.

    A setting given on the command line is what the user wants for the whole study: it is not searched
    (a search-space key may name a train setting bare or as train.<setting>)."""
    fixed = {name for name in map(search_key_of_override, override_keys) if name is not None}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, spec in space.items():
        section, setting = searchable_setting(name)
        canonical = MODEL_PARAM if name == MODEL_PARAM else setting if section == "train" else name
        if canonical in fixed:
            dropped.append(name)
        else:
            kept[name] = spec
    return kept, dropped


@dataclass(frozen=True)
class ParamSpec:
    type: ParamType
    """Kind of Optuna distribution."""
    low: float | None = None
    """Lower bound (float/int)."""
    high: float | None = None
    """Upper bound (float/int)."""
    log: bool = False
    """Sample on a log scale (float/int with low > 0)."""
    choices: tuple[Any, ...] = ()
    """Values of a categorical parameter."""


@dataclass(frozen=True)
class HPOConfig:
    n_trials: int = 3
    """Trials the study runs in total (a resumed study only runs the missing ones)."""
    metric: str = "joint_f1"
    """Validation metric the study maximizes; one of the evaluator's METRIC_NAMES. joint_f1 = mean of
    criteria macro F1 and the evidence F1 over pairs with gold or predicted evidence (no evidence
    anywhere scores 0 on it); joint_score, the SQuAD 2 flavour, rewards silence on the ~80 % of pairs
    without evidence."""
    sampler: SamplerName = "tpe"
    """Optuna sampler; seeded with train.seed."""
    pruner: PrunerName = "median"
    """Optuna pruner, asked at every report (each epoch, or every hpo.report_every_n_steps steps):
    median (a trial below the median of the finished trials at the same step), successive_halving
    (rungs at min_resource x reduction_factor^k: a trial continues past a rung only when it is in the
    top 1/reduction_factor of the trials that reached it), hyperband (successive halving in brackets
    of different first rungs, each trial in one bracket) or none."""
    report_every_n_steps: int = 0
    """0 = validate and report once per epoch (the Optuna step is the epoch index). N > 0 = also
    validate every N optimizer steps inside an epoch and report it, so that a long epoch can be pruned
    half-way; the Optuna step is then the trial's global optimizer step (the end of an epoch is
    reported at its last step). Checkpoints stay per epoch."""
    pruner_min_resource: int = 0
    """successive_halving, hyperband: the step of the first rung, in the unit of the reports (the
    epoch index, or optimizer steps with hpo.report_every_n_steps); rung k is at min_resource x
    reduction_factor^k. 0 = auto: 1 (the second epoch's report), or hpo.report_every_n_steps (the
    first report)."""
    pruner_max_resource: int = 0
    """hyperband: the steps a whole trial runs, which sets the number of brackets
    (floor(log_reduction_factor(max / min)) + 1). 0 = auto: train.max_epochs, or, with
    hpo.report_every_n_steps, the last step of the first trial to complete (no trial is pruned before
    one has)."""
    pruner_reduction_factor: int = 3
    """successive_halving, hyperband: about 1 in reduction_factor trials passes each rung (Optuna's
    Hyperband default; >= 2)."""
    sampler_startup_trials: int = 0
    """Random trials before TPE models the results (0 = a third of n_trials, between 1 and 10:
    Optuna's 10 would leave a 10-trial study all random)."""
    enqueue_config_trial: bool = True
    """The first trial runs the config's own values of the searched settings (the recipe the config
    file states); the sampler explores from the second on."""
    pruner_startup_trials: int = 2
    """median: trials that always complete before the pruner may stop one (successive halving and
    hyperband promote the first trials to reach a rung when they are the best there)."""
    pruner_warmup_epochs: int = 1
    """Epochs of each trial before it may be pruned, whatever the pruner and the report cadence: the
    pruner is not asked about reports made during the first pruner_warmup_epochs epochs."""
    timeout_s: float = 0.0
    """Stop starting new trials after this many seconds (0 = no limit)."""
    search_space: dict[str, ParamSpec] = field(default_factory=dict)
    """train.<field> -> distribution; each trial's train config takes the sampled values."""
    storage: str = ""
    """Optuna storage shared by several workers: a database URL (postgresql://user@host:5432/db, or
    sqlite:////abs/path.db for workers on one machine). Empty (default): each study keeps its own
    SQLite file in study_<uuid>/optuna.db and one process drives it."""
    study_name: str = "dsm5_hpo"
    """With a shared storage: the study every worker started with the same storage and name joins."""
    heartbeat_interval_s: float = 30.0
    """With a shared storage: how often a worker records that its trial is alive, and how often a worker
    with nothing to start checks for trials whose worker died."""
    heartbeat_grace_s: float = 120.0
    """With a shared storage: a running trial without a heartbeat for this long belongs to a dead
    worker; it is marked failed and queued again (same params, same folder), for any worker to take."""
    skip_unavailable_models: bool = False
    """search_space.model choices that cannot be had here (a hub encoder offline, not in the HF cache):
    false refuses the study before its first trial, naming them; true drops them with a WARNING."""
    max_trial_retries: int = 2
    """With a shared storage: how often a trial whose worker died is queued again; a trial that kills
    its worker each time (out of memory, a segfault) fails for good after that many retries."""
    trial_isolation: TrialIsolation = "auto"
    """Where a trial runs: 'process' = a child process of its own per trial (a segfault, an OOM kill or
    a CUDA out-of-memory fails that trial, not the study, and its GPU memory goes with the process);
    'none' = in this process (no start-up cost); 'auto' = process on CUDA, none on CPU."""
    trial_start_method: StartMethod = "forkserver"
    """How trial processes start: 'forkserver' forks each from a server that imported torch once (fast,
    CUDA-safe: the server never touches the GPU); 'spawn' starts a fresh interpreter per trial."""
    devices: str = "auto"
    """One trial at a time per device: 'auto' = every visible CUDA GPU (one trial on the CPU without
    one), '0,1,2,3' = those CUDA devices, 'cpu:N' = N CPU trials at once with the cores split between
    them. More than one device runs trials in processes (hpo.trial_isolation)."""
    storage_retry_s: float = 120.0
    """With a shared storage: how long a worker retries a database that is away (a restart, "too many
    clients", a dropped connection) before it stops, resumably, with exit 2. An outage longer than
    hpo.heartbeat_grace_s lets the other workers take this worker's trial over."""

    @property
    def startup_trials(self) -> int:
        """hpo.sampler_startup_trials, with 0 resolved."""
        return self.sampler_startup_trials or min(10, max(1, self.n_trials // 3))

    @property
    def min_resource(self) -> int:
        """hpo.pruner_min_resource, with 0 resolved (in report steps)."""
        return self.pruner_min_resource or self.report_every_n_steps or 1

    @property
    def shared(self) -> bool:
        """Whether several workers share this study through a database (hpo.storage)."""
        return bool(self.storage)

    def __post_init__(self) -> None:
        require(self.n_trials >= 1, "hpo.n_trials", f"must be >= 1, got {self.n_trials}")
        if self.storage:
            scheme = self.storage.split("://", 1)[0] if "://" in self.storage else ""
            require(
                scheme in SHARED_STORAGE_SCHEMES,
                "hpo.storage",
                f"must be a database URL ({', '.join(s + '://...' for s in SHARED_STORAGE_SCHEMES)}), "
                f"not {self.storage.split('@')[-1]!r}; leave it empty for one process with its own SQLite file",
            )
            require(
                not re.match(r"^[^:/]+://[^/@]*:[^/@]*@", self.storage),
                "hpo.storage",
                "holds a password; it would be saved in study.json and MLflow: put it in PGPASSWORD or "
                "~/.pgpass (libpq reads both) and give the URL without it (postgresql://user@host:5432/db)",
            )
            require(
                bool(self.study_name.strip()), "hpo.study_name", "must not be empty with a shared storage"
            )
        require(self.heartbeat_interval_s > 0, "hpo.heartbeat_interval_s", "must be > 0 s")
        require(
            self.heartbeat_grace_s > self.heartbeat_interval_s,
            "hpo.heartbeat_grace_s",
            f"must be longer than hpo.heartbeat_interval_s ({self.heartbeat_interval_s} s), got "
            f"{self.heartbeat_grace_s} s: a live worker would look dead between two heartbeats",
        )
        require(self.storage_retry_s >= 0, "hpo.storage_retry_s", "must be >= 0 s (0 = no retry)")
        require(self.max_trial_retries >= 0, "hpo.max_trial_retries", "must be >= 0 (0 = never queued again)")
        require(
            self.trial_isolation in TRIAL_ISOLATIONS,
            "hpo.trial_isolation",
            f"must be {either(TRIAL_ISOLATIONS, quote=True)}",
        )
        require(
            self.trial_start_method in START_METHODS,
            "hpo.trial_start_method",
            f"must be {either(START_METHODS, quote=True)}",
        )
        require(
            bool(DEVICES_PATTERN.match(self.devices)),
            "hpo.devices",
            f"must be 'auto', 'cpu:N' (N >= 1) or CUDA device indices such as '0,1,2,3', got {self.devices!r}",
        )
        require(self.sampler in SAMPLERS, "hpo.sampler", f"must be {either(SAMPLERS, quote=True)}")
        require(self.pruner in PRUNERS, "hpo.pruner", f"must be {either(PRUNERS, quote=True)}")
        require(self.pruner_startup_trials >= 0, "hpo.pruner_startup_trials", "must be >= 0")
        require(self.sampler_startup_trials >= 0, "hpo.sampler_startup_trials", "must be >= 0 (0 = auto)")
        require(self.pruner_warmup_epochs >= 0, "hpo.pruner_warmup_epochs", "must be >= 0")
        require(
            self.report_every_n_steps >= 0,
            "hpo.report_every_n_steps",
            "must be >= 0 (0 = report once per epoch, N = also every N optimizer steps)",
        )
        require(self.pruner_min_resource >= 0, "hpo.pruner_min_resource", "must be >= 0 (0 = auto)")
        require(self.pruner_max_resource >= 0, "hpo.pruner_max_resource", "must be >= 0 (0 = auto)")
        require(
            self.pruner_reduction_factor >= 2,
            "hpo.pruner_reduction_factor",
            f"must be >= 2 (about 1 in N trials passes each rung), got {self.pruner_reduction_factor}",
        )
        if self.pruner == "hyperband" and self.pruner_max_resource:
            require(
                self.pruner_max_resource > self.min_resource,
                "hpo.pruner_max_resource",
                f"must be > the first rung's step ({self.min_resource}, hpo.pruner_min_resource)",
            )
        require(self.timeout_s >= 0, "hpo.timeout_s", "must be >= 0 (0 = no limit)")
        require(
            self.metric in METRIC_NAMES,
            "hpo.metric",
            f"unknown metric {self.metric!r}; choose one of {', '.join(METRIC_NAMES)}",
        )
        for name, spec in self.search_space.items():
            key = f"search_space.{name}"
            if name == MODEL_PARAM:  # the encoder: one of the model configs (configs/model/<name>.yaml)
                require(
                    spec.type == "categorical", key, "must be categorical: choices are configs/model/ names"
                )
                continue
            section, field_name = searchable_setting(name)
            known = SEARCHABLE[section]
            require(
                field_name in known,
                key,
                f"is not a {section}.* setting; known: {', '.join(sorted(known))} (heads.x for the heads, data.input_format)",
            )
            if spec.type == "categorical":
                require(len(spec.choices) >= 1, key, "categorical needs at least one value in 'choices'")
            else:
                require(spec.low is not None and spec.high is not None, key, "needs 'low' and 'high'")
                assert spec.low is not None and spec.high is not None
                require(spec.low <= spec.high, key, f"low ({spec.low}) must be <= high ({spec.high})")
                require(not spec.log or spec.low > 0, key, "log scale needs low > 0")
