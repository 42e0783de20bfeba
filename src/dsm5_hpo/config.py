"""Typed schema of the whole configuration, validated on construction.

Only ``cli/`` sees Hydra's ``DictConfig``; it turns it into a plain mapping and calls
:func:`study_config_from_mapping`. Every error names the config key (``train.max_epochs``)
so the user knows which line of which YAML file, or which override, to fix.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from dsm5_hpo.errors import ConfigError
from dsm5_hpo.layout import ExperimentLayout
from dsm5_hpo.vocabulary import CRITERIA, METRIC_NAMES, SPECIAL_CASE, parse_operations

T = TypeVar("T")


def _fail(key: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"config key '{key}': {message}")


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        _fail(key, message)


@dataclass(frozen=True)
class PathsConfig:
    experiments_dir: str = "experiments"
    """Root of every run output: mlflow_db/, study_<uuid>/, trial_<uuid>/."""
    cache_dir: str = ""
    """Built artifacts reused across studies (tiny model, ...); empty = <experiments_dir>/.cache."""

    @property
    def experiments(self) -> Path:
        return Path(self.experiments_dir)

    @property
    def layout(self) -> ExperimentLayout:
        """Every path under experiments_dir (the one place that names them)."""
        return ExperimentLayout(self.experiments)

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else self.layout.default_cache

    def __post_init__(self) -> None:
        _require(bool(self.experiments_dir.strip()), "paths.experiments_dir", "must not be empty")


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.7
    """Share of posts in the training split."""
    validation: float = 0.15
    """Share of posts in the validation split (used by every trial)."""
    test: float = 0.15
    """Share of posts in the test split (used once, for the study's best model)."""

    def __post_init__(self) -> None:
        for name in ("train", "validation", "test"):
            value = getattr(self, name)
            _require(0.0 < value < 1.0, f"data.split.{name}", f"must be between 0 and 1, got {value}")
        total = self.train + self.validation + self.test
        _require(abs(total - 1.0) < 1e-6, "data.split", f"train + validation + test must be 1.0, got {total}")


INPUT_FORMATS: tuple[str, ...] = ("binary_pairs", "multi_label")


@dataclass(frozen=True)
class DataConfig:
    name: str = "redsm5_sample"
    """Short name recorded in reports."""
    source: Literal["local", "hub"] = "local"
    """'local' reads the CSVs in local_dir; 'hub' tries the Hugging Face dataset first, then local_dir."""
    local_dir: str = "Data/redsm5_sample"
    """Folder holding redsm5_posts.csv and redsm5_annotations.csv."""
    hub_id: str = "irlab-udc/redsm5"
    """Hugging Face dataset id (gated: needs an accepted licence and a token)."""
    revision: str = ""
    """Dataset revision (commit sha or tag) to pin for source=hub; empty = 'main'."""
    synthetic: bool = False
    """True for the bundled generated sample: every report says so."""
    include_special_case: bool = False
    """Treat SPECIAL_CASE as a tenth criterion (it is outside DSM-5, so off by default)."""
    split: SplitConfig = field(default_factory=SplitConfig)
    """Post-disjoint split shares; the split is derived from post_id and train.seed."""
    max_length: int = 256
    """Tokens per window (question + post + special tokens)."""
    doc_stride: int = 64
    """Tokens shared by consecutive windows of a long post."""
    max_answer_tokens: int = 64
    """Longest evidence span, in tokens, the decoder may predict."""
    max_posts: int = 0
    """Use only this many posts (0 = all); for smoke runs and tests."""
    feature_cache_entries: int = 8
    """Tokenized splits kept in <paths.cache_dir>/features (keyed by data, tokenizer and window
    settings; least recently used removed first); 0 = tokenize every time, keep nothing."""
    input_format: Literal["binary_pairs", "multi_label"] = "binary_pairs"
    """binary_pairs: one pass per (post, criterion), the criterion's description read beside the post,
    one logit and one evidence span. multi_label: one pass per post (no question), a logit and an
    evidence span per criterion. Both are evaluated per (post, criterion) with the same metrics.
    Searchable as data.input_format."""

    @property
    def criteria(self) -> tuple[str, ...]:
        return (*CRITERIA, SPECIAL_CASE) if self.include_special_case else CRITERIA

    def __post_init__(self) -> None:
        _require(
            self.source in ("local", "hub"), "data.source", f"must be 'local' or 'hub', got {self.source!r}"
        )
        _require(bool(self.local_dir.strip()), "data.local_dir", "must not be empty")
        _require(self.max_length >= 32, "data.max_length", f"must be >= 32, got {self.max_length}")
        _require(
            0 <= self.doc_stride < self.max_length // 2,
            "data.doc_stride",
            f"must be >= 0 and < max_length/2 ({self.max_length // 2}), got {self.doc_stride}",
        )
        _require(self.max_answer_tokens >= 1, "data.max_answer_tokens", "must be >= 1")
        _require(self.max_posts >= 0, "data.max_posts", "must be >= 0 (0 = all posts)")
        _require(self.feature_cache_entries >= 0, "data.feature_cache_entries", "must be >= 0 (0 = no cache)")
        _require(
            self.input_format in INPUT_FORMATS,
            "data.input_format",
            f"must be one of {', '.join(INPUT_FORMATS)}, got {self.input_format!r}",
        )


@dataclass(frozen=True)
class TinyModelConfig:
    hidden_size: int = 32
    """Width of the random BERT built locally for tests and smoke runs."""
    num_hidden_layers: int = 2
    """Transformer layers of the tiny BERT."""
    num_attention_heads: int = 2
    """Attention heads; must divide hidden_size."""
    intermediate_size: int = 64
    """Feed-forward width."""

    def __post_init__(self) -> None:
        _require(self.hidden_size > 0, "model.tiny.hidden_size", "must be > 0")
        _require(self.num_hidden_layers > 0, "model.tiny.num_hidden_layers", "must be > 0")
        _require(
            self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads == 0,
            "model.tiny.num_attention_heads",
            "must be > 0 and divide model.tiny.hidden_size",
        )
        _require(self.intermediate_size > 0, "model.tiny.intermediate_size", "must be > 0")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "minilm"
    """Short name recorded in reports and MLflow."""
    pretrained: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Hub id of the encoder; used for the HF cache and the hub when local_path is not usable."""
    revision: str = ""
    """Hub revision (commit sha) to pin; empty = 'main'."""
    local_path: str = ""
    """Folder with the encoder, 'package:<module>' for a model shipped in a Python package, 'tiny'
    to build the small random BERT, or empty to go to the HF cache and hub."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny random BERT (only with local_path: tiny)."""
    hub_attempts: int = 5
    """Download attempts before giving up on the hub; the waits between them double from 1 s (5 attempts:
    1, 2, 4, 8 s)."""

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "model.name", "must not be empty")
        _require(
            bool(self.pretrained.strip()) or bool(self.local_path.strip()),
            "model.pretrained",
            "set model.pretrained (hub id) or model.local_path",
        )
        _require(self.hub_attempts >= 1, "model.hub_attempts", "must be >= 1")


@dataclass(frozen=True)
class HeadsConfig:
    criteria_head: Literal["linear", "mlp", "mlp_residual", "gated"] = "linear"
    """Criteria-matching head on the pooled window: linear probe, MLP, MLP with a residual
    connection and LayerNorm, or a gated linear unit."""
    pooling: Literal["cls", "mean", "max", "attention", "layer_mix"] = "mean"
    """Window representation for the criteria head: [CLS] state, mean of the tokens, element-wise max
    over the tokens, learned attention over the tokens, or a learned mix of the last
    heads.layer_mix_layers layers (mean-pooled)."""
    hidden_size: int = 256
    """Width of the MLP, residual-MLP and gated heads (ignored by linear heads)."""
    layer_mix_layers: int = 4
    """Layers mixed by pooling=layer_mix: the last N of the encoder (all of them when it has fewer)."""
    evidence_head: Literal["linear", "mlp"] = "linear"
    """Evidence span head on every token: linear start/end, or an MLP before start/end."""
    coupling: bool = False
    """Feed the criteria head's pooled representation to the evidence head beside each token."""
    evidence_unit: Literal["span", "sentence"] = "span"
    """What the evidence head scores: token spans (start/end logits, [CLS] = no evidence, SQuAD 2), or
    the post's sentences (each from the mean of its tokens; the evidence is the best sentence and
    the criteria logit is the best sentence's, so heads.criteria_head and criteria_from_evidence
    play no part). RedSM5 annotates evidence per sentence."""
    criteria_from_evidence: bool = False
    """evidence_unit=span: read the criteria logit off the span head (best span score minus the null
    score, with a learned scale and shift) instead of a criteria head on the pooled window."""

    def __post_init__(self) -> None:
        _require(
            self.criteria_head in ("linear", "mlp", "mlp_residual", "gated"),
            "heads.criteria_head",
            f"must be linear, mlp, mlp_residual or gated, got {self.criteria_head!r}",
        )
        _require(
            self.pooling in ("cls", "mean", "max", "attention", "layer_mix"),
            "heads.pooling",
            f"must be cls, mean, max, attention or layer_mix, got {self.pooling!r}",
        )
        _require(
            self.evidence_unit in ("span", "sentence"),
            "heads.evidence_unit",
            f"must be span or sentence, got {self.evidence_unit!r}",
        )
        _require(
            self.evidence_head in ("linear", "mlp"),
            "heads.evidence_head",
            f"must be linear or mlp, got {self.evidence_head!r}",
        )
        _require(self.hidden_size >= 1, "heads.hidden_size", f"must be >= 1, got {self.hidden_size}")
        _require(
            self.layer_mix_layers >= 1, "heads.layer_mix_layers", f"must be >= 1, got {self.layer_mix_layers}"
        )


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 42
    """Seeds Python, NumPy, torch and the data split; the same seed gives the same metrics on CPU."""
    max_epochs: int = 2
    """Epochs per trial (the pruner may stop a trial earlier)."""
    batch_size: int = 16
    """Windows per optimizer micro-batch."""
    eval_batch_size: int = 64
    """Windows per forward pass at evaluation (no gradients, so larger)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size x this)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    learning_rate_encoder: float = 5e-5
    """AdamW learning rate of the shared encoder."""
    learning_rate_heads: float = 1e-3
    """AdamW learning rate of the two heads (fresh weights learn faster)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm)."""
    warmup_ratio: float = 0.1
    """Share of optimizer steps with a linear warmup, then linear decay to 0."""
    dropout: float = 0.1
    """Dropout before both heads."""
    loss_weight_criteria: float = 1.0
    """Weight of the criteria-matching BCE loss in the joint loss."""
    loss_weight_evidence: float = 1.0
    """Weight of the evidence-span cross-entropy loss in the joint loss."""
    device: str = "auto"
    """'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N'."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast dtype; 'auto' = bf16 where the device runs it natively (CUDA compute capability 8+,
    CPUs with AVX512-BF16 or AMX), else fp32; fp16 uses a gradient scaler and needs CUDA."""
    log_every_n_steps: int = 10
    """Optimizer steps between per-step metric logs."""
    checkpoint_interval_epochs: int = 1
    """Write a checkpoint every N epochs (and always after the last one); resume starts from the newest."""
    group_by_length: bool = True
    """Batch windows of similar length together (shuffled in groups) so that dynamic padding pads
    little; False = plain shuffled batches."""
    length_group_size: int = 50
    """Batches per length-sorted group: larger pads less, smaller keeps epochs more random."""
    async_checkpointing: bool = True
    """Copy the state to host memory and write, hash and commit it on a background thread while
    training goes on (at most one save in flight); False writes it before training continues."""
    match_threshold: float = 0.5
    """Probability at or above which a pair counts as matching the criterion."""
    null_score_margin: float = 0.0
    """evidence_gating=null_score: predict 'no evidence' when null score - best span score exceeds
    this (SQuAD 2 rule; for sentences, when the best sentence's logit is below -margin)."""
    evidence_gating: Literal["criteria", "null_score"] = "criteria"
    """When a pair gets its evidence: 'criteria' = exactly when the criteria head says it matches
    (at train.match_threshold), at the evidence head's best span or sentence; 'null_score' = the
    SQuAD 2 rule (train.null_score_margin), whatever the criteria head says."""
    negative_sampling: float = 1.0
    """Share of non-matching pairs' windows trained on each epoch (re-drawn per epoch; 1.0 = all).
    Most (post, criterion) pairs do not match; evaluation always uses every pair. binary_pairs only:
    with data.input_format=multi_label a window holds every criterion, and this is set to 1.0."""
    criteria_loss: Literal["bce", "weighted_bce", "focal", "hybrid"] = "bce"
    """Criteria loss: BCE; BCE with positives weighted by the negatives/positives ratio of the
    windows trained on; focal (train.focal_gamma); hybrid = hybrid_alpha x BCE + (1 - hybrid_alpha) x focal."""
    focal_gamma: float = 2.0
    """Focusing exponent of the focal loss (0 = plain BCE)."""
    hybrid_alpha: float = 0.5
    """Share of BCE in the hybrid loss."""
    label_smoothing: float = 0.0
    """Criteria targets become eps/2 and 1 - eps/2 (and the evidence cross-entropy is smoothed by eps)."""
    optimizer: Literal["adamw", "adam", "adafactor"] = "adamw"
    """AdamW (decoupled weight decay), Adam (L2 weight decay), or Adafactor (factored second
    moments: less optimizer memory for large encoders)."""
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Learning rate after the warmup: linear decay to 0, cosine decay to 0, or constant."""
    layer_lr_decay: float = 1.0
    """Layer-wise learning-rate decay: encoder layer l of L trains at learning_rate_encoder x
    decay^(L - l), the embeddings at decay^(L + 1) (1.0 = one rate for the whole encoder)."""
    freeze_layers: int = 0
    """Freeze the embeddings and the lowest N encoder layers (0 = train everything)."""
    augment_probability: float = 0.0
    """Chance that each evidence span of a training pair is rewritten (one operation of
    train.augment_operations) in an epoch; only evidence text changes, re-drawn every epoch;
    validation and test are never augmented. 0 = off."""
    augment_operations: str = "swap+delete+synonym+char_noise"
    """Operations the augmentation draws from, joined by +: swap, delete, synonym, char_noise."""
    tune_thresholds: bool = True
    """After every validation pass, pick the match threshold and the null-answer margin that
    maximize the validation metric; they are kept with the epoch's metrics and used on test
    (False = train.match_threshold and train.null_score_margin as configured)."""

    def __post_init__(self) -> None:
        positive_ints = (
            "max_epochs",
            "batch_size",
            "eval_batch_size",
            "gradient_accumulation_steps",
            "log_every_n_steps",
            "checkpoint_interval_epochs",
            "length_group_size",
        )
        for name in positive_ints:
            value = getattr(self, name)
            _require(value >= 1, f"train.{name}", f"must be >= 1, got {value}")
        for name in ("learning_rate_encoder", "learning_rate_heads"):
            value = getattr(self, name)
            _require(0.0 < value < 1.0, f"train.{name}", f"must be in (0, 1), got {value}")
        _require(self.weight_decay >= 0.0, "train.weight_decay", "must be >= 0")
        _require(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", "must be in [0, 1)")
        _require(0.0 <= self.dropout < 1.0, "train.dropout", "must be in [0, 1)")
        _require(self.max_grad_norm >= 0.0, "train.max_grad_norm", "must be >= 0 (0 = no clipping)")
        for name in ("loss_weight_criteria", "loss_weight_evidence"):
            _require(getattr(self, name) >= 0.0, f"train.{name}", "must be >= 0")
        _require(
            self.loss_weight_criteria + self.loss_weight_evidence > 0,
            "train.loss_weight_criteria",
            "both loss weights are 0: nothing would be trained",
        )
        _require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "train.device",
            f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )
        _require(
            self.precision in ("auto", "fp32", "bf16", "fp16"),
            "train.precision",
            "must be auto, fp32, bf16 or fp16",
        )
        _require(0.0 < self.match_threshold < 1.0, "train.match_threshold", "must be in (0, 1)")
        _require(0.0 < self.negative_sampling <= 1.0, "train.negative_sampling", "must be in (0, 1]")
        for name, allowed in (
            ("evidence_gating", ("criteria", "null_score")),
            ("criteria_loss", ("bce", "weighted_bce", "focal", "hybrid")),
            ("optimizer", ("adamw", "adam", "adafactor")),
            ("scheduler", ("linear", "cosine", "constant")),
        ):
            value = getattr(self, name)
            _require(value in allowed, f"train.{name}", f"must be one of {', '.join(allowed)}, got {value!r}")
        _require(self.focal_gamma >= 0.0, "train.focal_gamma", f"must be >= 0, got {self.focal_gamma}")
        _require(
            0.0 <= self.hybrid_alpha <= 1.0,
            "train.hybrid_alpha",
            f"must be in [0, 1], got {self.hybrid_alpha}",
        )
        _require(
            0.0 <= self.label_smoothing < 0.5,
            "train.label_smoothing",
            f"must be in [0, 0.5), got {self.label_smoothing}",
        )
        _require(
            0.0 < self.layer_lr_decay <= 1.0,
            "train.layer_lr_decay",
            f"must be in (0, 1], got {self.layer_lr_decay}",
        )
        _require(self.freeze_layers >= 0, "train.freeze_layers", f"must be >= 0, got {self.freeze_layers}")
        _require(
            0.0 <= self.augment_probability <= 1.0,
            "train.augment_probability",
            f"must be in [0, 1], got {self.augment_probability}",
        )
        try:
            operations = parse_operations(self.augment_operations)
        except ValueError as error:
            _fail("train.augment_operations", str(error))
        _require(
            bool(operations) or self.augment_probability == 0.0,
            "train.augment_operations",
            "is empty while train.augment_probability > 0: name at least one operation",
        )


MODEL_PARAM = "model"
"""Search-space key choosing the encoder among the model configs (configs/model/<choice>.yaml)."""


def searchable_setting(name: str) -> tuple[str, str]:
    """Search-space key -> (section, setting): 'heads.pooling' -> ('heads', 'pooling');
    'train.seed' and plain 'seed' -> ('train', 'seed')."""
    section, dot, rest = name.partition(".")
    if dot and section in ("train", "heads", "data"):
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
    type: Literal["float", "int", "categorical"]
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
    sampler: Literal["tpe", "random"] = "tpe"
    """Optuna sampler; seeded with train.seed."""
    pruner: Literal["median", "none"] = "median"
    """Optuna pruner, asked after every epoch."""
    sampler_startup_trials: int = 0
    """Random trials before TPE models the results (0 = a third of n_trials, between 1 and 10:
    Optuna's 10 would leave a 10-trial study all random)."""
    enqueue_config_trial: bool = True
    """The first trial runs the config's own values of the searched settings (the recipe the config
    file states); the sampler explores from the second on."""
    pruner_startup_trials: int = 2
    """Trials that always complete before the median pruner may stop one."""
    pruner_warmup_epochs: int = 1
    """Epochs of each trial before it may be pruned."""
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
    storage_retry_s: float = 120.0
    """With a shared storage: how long a worker retries a database that is away (a restart, "too many
    clients", a dropped connection) before it stops, resumably, with exit 2. An outage longer than
    hpo.heartbeat_grace_s lets the other workers take this worker's trial over."""

    @property
    def startup_trials(self) -> int:
        """hpo.sampler_startup_trials, with 0 resolved."""
        return self.sampler_startup_trials or min(10, max(1, self.n_trials // 3))

    @property
    def shared(self) -> bool:
        """Whether several workers share this study through a database (hpo.storage)."""
        return bool(self.storage)

    def __post_init__(self) -> None:
        _require(self.n_trials >= 1, "hpo.n_trials", f"must be >= 1, got {self.n_trials}")
        if self.storage:
            scheme = self.storage.split("://", 1)[0] if "://" in self.storage else ""
            _require(
                scheme in SHARED_STORAGE_SCHEMES,
                "hpo.storage",
                f"must be a database URL ({', '.join(s + '://...' for s in SHARED_STORAGE_SCHEMES)}), "
                f"not {self.storage.split('@')[-1]!r}; leave it empty for one process with its own SQLite file",
            )
            _require(
                not re.match(r"^[^:/]+://[^/@]*:[^/@]*@", self.storage),
                "hpo.storage",
                "holds a password; it would be saved in study.json and MLflow: put it in PGPASSWORD or "
                "~/.pgpass (libpq reads both) and give the URL without it (postgresql://user@host:5432/db)",
            )
            _require(
                bool(self.study_name.strip()), "hpo.study_name", "must not be empty with a shared storage"
            )
        _require(self.heartbeat_interval_s > 0, "hpo.heartbeat_interval_s", "must be > 0 s")
        _require(
            self.heartbeat_grace_s > self.heartbeat_interval_s,
            "hpo.heartbeat_grace_s",
            f"must be longer than hpo.heartbeat_interval_s ({self.heartbeat_interval_s} s), got "
            f"{self.heartbeat_grace_s} s: a live worker would look dead between two heartbeats",
        )
        _require(self.storage_retry_s >= 0, "hpo.storage_retry_s", "must be >= 0 s (0 = no retry)")
        _require(
            self.max_trial_retries >= 0, "hpo.max_trial_retries", "must be >= 0 (0 = never queued again)"
        )
        _require(self.sampler in ("tpe", "random"), "hpo.sampler", "must be 'tpe' or 'random'")
        _require(self.pruner in ("median", "none"), "hpo.pruner", "must be 'median' or 'none'")
        _require(self.pruner_startup_trials >= 0, "hpo.pruner_startup_trials", "must be >= 0")
        _require(self.sampler_startup_trials >= 0, "hpo.sampler_startup_trials", "must be >= 0 (0 = auto)")
        _require(self.pruner_warmup_epochs >= 0, "hpo.pruner_warmup_epochs", "must be >= 0")
        _require(self.timeout_s >= 0, "hpo.timeout_s", "must be >= 0 (0 = no limit)")
        _require(
            self.metric in METRIC_NAMES,
            "hpo.metric",
            f"unknown metric {self.metric!r}; choose one of {', '.join(METRIC_NAMES)}",
        )
        for name, spec in self.search_space.items():
            key = f"search_space.{name}"
            if name == MODEL_PARAM:  # the encoder: one of the model configs (configs/model/<name>.yaml)
                _require(
                    spec.type == "categorical", key, "must be categorical: choices are configs/model/ names"
                )
                continue
            section, field_name = searchable_setting(name)
            known = SEARCHABLE[section]
            _require(
                field_name in known,
                key,
                f"is not a {section}.* setting; known: {', '.join(sorted(known))} (heads.x for the heads, data.input_format)",
            )
            if spec.type == "categorical":
                _require(len(spec.choices) >= 1, key, "categorical needs at least one value in 'choices'")
            else:
                _require(spec.low is not None and spec.high is not None, key, "needs 'low' and 'high'")
                assert spec.low is not None and spec.high is not None
                _require(spec.low <= spec.high, key, f"low ({spec.low}) must be <= high ({spec.high})")
                _require(not spec.log or spec.low > 0, key, "log scale needs low > 0")


SHARED_STORAGE_SCHEMES: tuple[str, ...] = ("postgresql", "postgresql+psycopg", "sqlite")


@dataclass(frozen=True)
class TrackingConfig:
    backend: Literal["mlflow", "none"] = "mlflow"
    """'mlflow' logs every run; 'none' disables tracking (tests, dry runs)."""
    uri: str = ""
    """MLflow tracking URI; empty = sqlite:///<experiments_dir>/mlflow_db/mlflow.db."""
    experiment_name: str = "dsm5_hpo"
    """MLflow experiment holding the study and trial runs."""
    outbox_warn_mb: int = 100
    """Size (MB) of the metrics outbox file at which a WARNING says MLflow is not keeping up (no hard limit)."""
    drain_timeout_s: float = 60.0
    """At the end of a study, how long to wait for MLflow to take what is still in the outbox; what
    is left stays in the outbox file for the next train, resume or `python -m dsm5_hpo.cli.sync`."""

    def __post_init__(self) -> None:
        _require(self.backend in ("mlflow", "none"), "tracking.backend", "must be 'mlflow' or 'none'")
        _require(bool(self.experiment_name.strip()), "tracking.experiment_name", "must not be empty")
        _require(
            self.outbox_warn_mb >= 1, "tracking.outbox_warn_mb", f"must be >= 1, got {self.outbox_warn_mb}"
        )
        _require(
            self.drain_timeout_s >= 0,
            "tracking.drain_timeout_s",
            f"must be >= 0 s, got {self.drain_timeout_s}",
        )

    def resolved_uri(self, experiments_dir: Path) -> str:
        if self.uri:
            return self.uri
        db = ExperimentLayout(experiments_dir).mlflow_db.resolve()
        return f"sqlite:///{db}"


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    """Minimum level on stdout and in the JSON-lines files."""
    max_bytes: int = 10_000_000
    """Size at which a JSON-lines log file is rotated."""
    backup_count: int = 5
    """Rotated files kept per log."""

    def __post_init__(self) -> None:
        _require(
            self.level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "logging.level",
            f"must be DEBUG, INFO, WARNING or ERROR, got {self.level!r}",
        )
        _require(self.max_bytes >= 10_000, "logging.max_bytes", "must be >= 10000")
        _require(self.backup_count >= 1, "logging.backup_count", "must be >= 1")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(text: str, key: str) -> int:
    """Bytes in '10GB', '500MB', '1.5GiB' or '123' (plain bytes); KB/MB/GB are powers of 1000."""
    match = _SIZE.match(text)
    if match is None:
        _fail(key, f"must be a size like 10GB, 500MB, 1.5GiB or a number of bytes, got {text!r}")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "B").lower()])


@dataclass(frozen=True)
class RetentionConfig:
    """Which checkpoints stay on disk (checkpointing/retention.py decides, the checkpoint manager deletes)."""

    keep_last_n: int = 1
    """Newest resume-capable checkpoints kept while a trial runs (the newest is always kept then,
    even with 0: a running trial can always resume). Ignored once the trial has ended."""
    keep_best_k: int = 1
    """Best checkpoints (by the optimization metric) kept per trial. Checkpoints tied on the best
    value are co-best and all kept, whatever this and keep_best_k_max say."""
    keep_best_k_max: int = 2
    """Most best checkpoints kept per trial: a group of checkpoints tied with each other below the
    best value is kept whole only if the total stays within this; the co-best group is never capped."""
    max_total_size: str = "10GB"
    """Cap on the study's retained checkpoint bytes ('10GB', '500MB', '1.5GiB', bytes; 0 = no cap):
    over it, the worst trials' checkpoints are deleted first, never the study's best."""
    disk_space_threshold_percent: float = 10.0
    """Free space (percent of the disk holding experiments/) below which pruning escalates."""
    disk_check_interval_s: float = 60.0
    """Seconds between two free-space readings of the disk monitor's background thread (the
    checkpoint manager also reads the disk itself right before each save)."""
    min_interval_epochs: int = 1
    """Fewest epochs between two checkpoints that the policy accepts: train.checkpoint_interval_epochs
    (the one setting that decides when a checkpoint is written) must be at least this."""
    keep_all: bool = False
    """Keep every checkpoint whole: no pruning, no resume-state stripping, no size cap (the
    keep-everything baseline of benchmarks/storage.py)."""

    @property
    def max_total_bytes(self) -> int:
        """max_total_size in bytes; 0 = no cap."""
        return parse_size(self.max_total_size, "retention_policy.max_total_size")

    def __post_init__(self) -> None:
        for name in ("keep_last_n", "min_interval_epochs"):
            value = getattr(self, name)
            floor = 0 if name == "keep_last_n" else 1
            _require(value >= floor, f"retention_policy.{name}", f"must be >= {floor}, got {value}")
        _require(
            self.keep_best_k >= 1,
            "retention_policy.keep_best_k",
            f"must be >= 1 (a trial's best checkpoint is its result), got {self.keep_best_k}",
        )
        _require(
            self.keep_best_k_max >= self.keep_best_k,
            "retention_policy.keep_best_k_max",
            f"must be >= retention_policy.keep_best_k ({self.keep_best_k}), got {self.keep_best_k_max}",
        )
        _require(
            self.disk_check_interval_s > 0,
            "retention_policy.disk_check_interval_s",
            f"must be > 0 seconds, got {self.disk_check_interval_s}",
        )
        self.max_total_bytes  # noqa: B018 - validates the size text, naming the key
        _require(
            0.0 <= self.disk_space_threshold_percent < 100.0,
            "retention_policy.disk_space_threshold_percent",
            f"must be in [0, 100), got {self.disk_space_threshold_percent}",
        )


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
        _require(
            self.train.checkpoint_interval_epochs >= self.retention_policy.min_interval_epochs,
            "train.checkpoint_interval_epochs",
            f"is {self.train.checkpoint_interval_epochs}, below retention_policy.min_interval_epochs "
            f"({self.retention_policy.min_interval_epochs}): raise the interval or lower the floor",
        )
        if self.data.input_format == "multi_label" and self.train.negative_sampling != 1.0:
            # A multi_label window holds every criterion of its post: there are no negative pairs to
            # leave out. Set here, so the resolved config (reports, MLflow) shows what was trained.
            object.__setattr__(self, "train", dataclasses.replace(self.train, negative_sampling=1.0))
        self._check_search_space()

    def _check_search_space(self) -> None:
        """Every value a trial can draw must make a valid config: a bad choice or bound is refused
        now, naming the search-space key, not when a trial draws it hours into the study."""
        for name, spec in self.hpo.search_space.items():
            if name == MODEL_PARAM:
                missing = [c for c in spec.choices if str(c) not in self.model_catalog]
                _require(
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
                    _require(
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
                    _fail(f"search_space.{name}", f"value {value!r} is not a valid setting: {error}")

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
                    _fail("search_space.model", f"{value!r} is not in the study's model catalog")
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


SEARCHABLE: dict[str, set[str]] = {
    "train": {f.name for f in dataclasses.fields(TrainConfig)},
    "heads": {f.name for f in dataclasses.fields(HeadsConfig)},
    # Data settings change the windows, so a trial that draws one is tokenized for it; only the input
    # format is a modelling choice (paths, sources and splits are not to be searched).
    "data": {"input_format"},
}
"""Settings a search space may sample, per section."""


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


# --- construction from a mapping -------------------------------------------------------------


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` to ``annotation`` or raise a ConfigError naming ``key``."""
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, Mapping):
            _fail(key, f"must be a mapping, got {type(value).__name__}")
        return _build(annotation, value, key)
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            _fail(key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if origin is dict:
        _, value_type = get_args(annotation)
        if not isinstance(value, Mapping):
            _fail(key, f"must be a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            _fail(key, f"must be a list, got {type(value).__name__}")
        return tuple(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(key, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(key, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            _fail(key, f"must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")  # a bug in this module


def _build(cls: type[T], mapping: Mapping[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - fields)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        _fail(where, f"unknown setting; known settings here: {', '.join(sorted(fields))}")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in mapping.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as error:  # a missing required field
        _fail(prefix or "<root>", str(error))


def _flatten_space(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'heads': {'pooling': spec}} -> {'heads.pooling': spec}: a command-line override
    (+search_space.heads.pooling=...) nests where a YAML key 'heads.pooling:' does not."""
    flat: dict[str, Any] = {}
    for name, value in space.items():
        nested = isinstance(value, Mapping) and "type" not in value and value
        if nested and all(isinstance(v, Mapping) for v in value.values()):
            flat.update(_flatten_space(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def study_config_from_mapping(mapping: Mapping[str, Any]) -> StudyConfig:
    """Build and validate the study config from a plain mapping (Hydra's resolved config).

    The Hydra group ``search_space`` sits at the top level of the YAML; it is moved into
    ``hpo.search_space`` here so the typed config keeps the search space with the study.
    """
    data = dict(mapping)
    space = data.pop("search_space", None)
    if space is not None:
        hpo = dict(data.get("hpo") or {})
        hpo["search_space"] = _flatten_space(space) if isinstance(space, Mapping) else space
        data["hpo"] = hpo
    return _build(StudyConfig, data, "")
