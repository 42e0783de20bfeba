"""The sections of a study's config that describe its inputs and where its outputs go: paths, data,
model, heads, export, tracking, logging and checkpoint retention (train and hpo have modules of their own).

Each field typed with a ``Literal`` alias is checked against the alias's own values
(``typing.get_args``), so each set of allowed strings is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from dsm5_hpo.config.checks import either, parse_size, require
from dsm5_hpo.layout import ExperimentLayout
from dsm5_hpo.vocabulary import CRITERIA, SPECIAL_CASE

DataSource = Literal["local", "hub"]
DATA_SOURCES: tuple[str, ...] = get_args(DataSource)
InputFormat = Literal["binary_pairs", "multi_label"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
CriteriaHead = Literal["linear", "mlp", "mlp_residual", "gated"]
CRITERIA_HEADS: tuple[str, ...] = get_args(CriteriaHead)
Pooling = Literal["cls", "mean", "max", "attention", "layer_mix"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
EvidenceHead = Literal["linear", "mlp"]
EVIDENCE_HEADS: tuple[str, ...] = get_args(EvidenceHead)
EvidenceUnit = Literal["span", "sentence"]
EVIDENCE_UNITS: tuple[str, ...] = get_args(EvidenceUnit)
TrackingBackend = Literal["mlflow", "none"]
TRACKING_BACKENDS: tuple[str, ...] = get_args(TrackingBackend)
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
"""logging.level is a plain str (any case is accepted), so these are not a Literal."""


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
        require(bool(self.experiments_dir.strip()), "paths.experiments_dir", "must not be empty")


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
            require(0.0 < value < 1.0, f"data.split.{name}", f"must be between 0 and 1, got {value}")
        total = self.train + self.validation + self.test
        require(abs(total - 1.0) < 1e-6, "data.split", f"train + validation + test must be 1.0, got {total}")


@dataclass(frozen=True)
class DataConfig:
    name: str = "redsm5_sample"
    """Short name recorded in reports."""
    source: DataSource = "local"
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
    input_format: InputFormat = "binary_pairs"
    """binary_pairs: one pass per (post, criterion), the criterion's description read beside the post,
    one logit and one evidence span. multi_label: one pass per post (no question), a logit and an
    evidence span per criterion. Both are evaluated per (post, criterion) with the same metrics.
    Searchable as data.input_format."""

    @property
    def criteria(self) -> tuple[str, ...]:
        return (*CRITERIA, SPECIAL_CASE) if self.include_special_case else CRITERIA

    def __post_init__(self) -> None:
        require(
            self.source in DATA_SOURCES,
            "data.source",
            f"must be {either(DATA_SOURCES, quote=True)}, got {self.source!r}",
        )
        require(bool(self.local_dir.strip()), "data.local_dir", "must not be empty")
        require(self.max_length >= 32, "data.max_length", f"must be >= 32, got {self.max_length}")
        require(
            0 <= self.doc_stride < self.max_length // 2,
            "data.doc_stride",
            f"must be >= 0 and < max_length/2 ({self.max_length // 2}), got {self.doc_stride}",
        )
        require(self.max_answer_tokens >= 1, "data.max_answer_tokens", "must be >= 1")
        require(self.max_posts >= 0, "data.max_posts", "must be >= 0 (0 = all posts)")
        require(self.feature_cache_entries >= 0, "data.feature_cache_entries", "must be >= 0 (0 = no cache)")
        require(
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
        require(self.hidden_size > 0, "model.tiny.hidden_size", "must be > 0")
        require(self.num_hidden_layers > 0, "model.tiny.num_hidden_layers", "must be > 0")
        require(
            self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads == 0,
            "model.tiny.num_attention_heads",
            "must be > 0 and divide model.tiny.hidden_size",
        )
        require(self.intermediate_size > 0, "model.tiny.intermediate_size", "must be > 0")


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
        require(bool(self.name.strip()), "model.name", "must not be empty")
        require(
            bool(self.pretrained.strip()) or bool(self.local_path.strip()),
            "model.pretrained",
            "set model.pretrained (hub id) or model.local_path",
        )
        require(self.hub_attempts >= 1, "model.hub_attempts", "must be >= 1")


@dataclass(frozen=True)
class HeadsConfig:
    criteria_head: CriteriaHead = "linear"
    """Criteria-matching head on the pooled window: linear probe, MLP, MLP with a residual
    connection and LayerNorm, or a gated linear unit."""
    pooling: Pooling = "mean"
    """Window representation for the criteria head: [CLS] state, mean of the tokens, element-wise max
    over the tokens, learned attention over the tokens, or a learned mix of the last
    heads.layer_mix_layers layers (mean-pooled)."""
    hidden_size: int = 256
    """Width of the MLP, residual-MLP and gated heads (ignored by linear heads)."""
    layer_mix_layers: int = 4
    """Layers mixed by pooling=layer_mix: the last N of the encoder (all of them when it has fewer)."""
    evidence_head: EvidenceHead = "linear"
    """Evidence span head on every token: linear start/end, or an MLP before start/end."""
    coupling: bool = False
    """Feed the criteria head's pooled representation to the evidence head beside each token."""
    evidence_unit: EvidenceUnit = "span"
    """What the evidence head scores: token spans (start/end logits, [CLS] = no evidence, SQuAD 2), or
    the post's sentences (each from the mean of its tokens; the evidence is the best sentence and
    the criteria logit is the best sentence's, so heads.criteria_head and criteria_from_evidence
    play no part). RedSM5 annotates evidence per sentence."""
    criteria_from_evidence: bool = False
    """evidence_unit=span: read the criteria logit off the span head (best span score minus the null
    score, with a learned scale and shift) instead of a criteria head on the pooled window."""

    def __post_init__(self) -> None:
        require(
            self.criteria_head in CRITERIA_HEADS,
            "heads.criteria_head",
            f"must be {either(CRITERIA_HEADS)}, got {self.criteria_head!r}",
        )
        require(
            self.pooling in POOLINGS,
            "heads.pooling",
            f"must be {either(POOLINGS)}, got {self.pooling!r}",
        )
        require(
            self.evidence_unit in EVIDENCE_UNITS,
            "heads.evidence_unit",
            f"must be {either(EVIDENCE_UNITS)}, got {self.evidence_unit!r}",
        )
        require(
            self.evidence_head in EVIDENCE_HEADS,
            "heads.evidence_head",
            f"must be {either(EVIDENCE_HEADS)}, got {self.evidence_head!r}",
        )
        require(self.hidden_size >= 1, "heads.hidden_size", f"must be >= 1, got {self.hidden_size}")
        require(
            self.layer_mix_layers >= 1, "heads.layer_mix_layers", f"must be >= 1, got {self.layer_mix_layers}"
        )


@dataclass(frozen=True)
class ExportConfig:
    """The study's best_model/ export (models/export.py)."""

    merge_lora: bool = True
    """train.finetuning=lora: merge the adapters into the encoder weights, so that best_model/encoder
    is a plain encoder like a full fine-tuning export (the adapter is kept beside it); false = no
    encoder weights, the adapter and a reference (id, revision, SHA-256) to the base encoder."""

    def __post_init__(self) -> None:
        require(
            isinstance(self.merge_lora, bool),
            "export.merge_lora",
            f"must be true or false, got {self.merge_lora!r}",
        )


@dataclass(frozen=True)
class TrackingConfig:
    backend: TrackingBackend = "mlflow"
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
        require(
            self.backend in TRACKING_BACKENDS,
            "tracking.backend",
            f"must be {either(TRACKING_BACKENDS, quote=True)}",
        )
        require(bool(self.experiment_name.strip()), "tracking.experiment_name", "must not be empty")
        require(
            self.outbox_warn_mb >= 1, "tracking.outbox_warn_mb", f"must be >= 1, got {self.outbox_warn_mb}"
        )
        require(
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
        require(
            self.level.upper() in LOG_LEVELS,
            "logging.level",
            f"must be {either(LOG_LEVELS)}, got {self.level!r}",
        )
        require(self.max_bytes >= 10_000, "logging.max_bytes", "must be >= 10000")
        require(self.backup_count >= 1, "logging.backup_count", "must be >= 1")


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
            require(value >= floor, f"retention_policy.{name}", f"must be >= {floor}, got {value}")
        require(
            self.keep_best_k >= 1,
            "retention_policy.keep_best_k",
            f"must be >= 1 (a trial's best checkpoint is its result), got {self.keep_best_k}",
        )
        require(
            self.keep_best_k_max >= self.keep_best_k,
            "retention_policy.keep_best_k_max",
            f"must be >= retention_policy.keep_best_k ({self.keep_best_k}), got {self.keep_best_k_max}",
        )
        require(
            self.disk_check_interval_s > 0,
            "retention_policy.disk_check_interval_s",
            f"must be > 0 seconds, got {self.disk_check_interval_s}",
        )
        self.max_total_bytes  # noqa: B018 - validates the size text, naming the key
        require(
            0.0 <= self.disk_space_threshold_percent < 100.0,
            "retention_policy.disk_space_threshold_percent",
            f"must be in [0, 100), got {self.disk_space_threshold_percent}",
        )
