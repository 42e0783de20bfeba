"""The train section: optimization, losses, precision, checkpoint cadence, augmentation and the
decision rules (match threshold, evidence gating) of every trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from dsm5_hpo.config.checks import either, fail, require
from dsm5_hpo.vocabulary import parse_operations

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
EvidenceGating = Literal["criteria", "null_score"]
EVIDENCE_GATINGS: tuple[str, ...] = get_args(EvidenceGating)
CriteriaLoss = Literal["bce", "weighted_bce", "focal", "hybrid"]
CRITERIA_LOSSES: tuple[str, ...] = get_args(CriteriaLoss)
OptimizerName = Literal["adamw", "adam", "adafactor"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
SchedulerName = Literal["linear", "cosine", "constant"]
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)
Finetuning = Literal["full", "lora"]
FINETUNINGS: tuple[str, ...] = get_args(Finetuning)
Distributed = Literal["none", "ddp"]
DISTRIBUTED_MODES: tuple[str, ...] = get_args(Distributed)
Compile = Literal[False, True, "auto"]
COMPILE_MODES: tuple[object, ...] = get_args(Compile)
NOT_SEARCHABLE = frozenset(
    {"distributed", "ddp_processes", "fast_dropout", "compile", "gradient_checkpointing"}
)
"""How a trial runs, not what it learns: the same for every trial of a study (config/hpo.py SEARCHABLE)."""


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
    precision: Precision = "auto"
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
    evidence_gating: EvidenceGating = "criteria"
    """When a pair gets its evidence: 'criteria' = exactly when the criteria head says it matches
    (at train.match_threshold), at the evidence head's best span or sentence; 'null_score' = the
    SQuAD 2 rule (train.null_score_margin), whatever the criteria head says."""
    negative_sampling: float = 1.0
    """Share of non-matching pairs' windows trained on each epoch (re-drawn per epoch; 1.0 = all).
    Most (post, criterion) pairs do not match; evaluation always uses every pair. binary_pairs only:
    with data.input_format=multi_label a window holds every criterion, and this is set to 1.0."""
    criteria_loss: CriteriaLoss = "bce"
    """Criteria loss: BCE; BCE with positives weighted by the negatives/positives ratio of the
    windows trained on; focal (train.focal_gamma); hybrid = hybrid_alpha x BCE + (1 - hybrid_alpha) x focal."""
    focal_gamma: float = 2.0
    """Focusing exponent of the focal loss (0 = plain BCE)."""
    hybrid_alpha: float = 0.5
    """Share of BCE in the hybrid loss."""
    label_smoothing: float = 0.0
    """Criteria targets become eps/2 and 1 - eps/2 (and the evidence cross-entropy is smoothed by eps)."""
    optimizer: OptimizerName = "adamw"
    """AdamW (decoupled weight decay), Adam (L2 weight decay), or Adafactor (factored second
    moments: less optimizer memory for large encoders)."""
    scheduler: SchedulerName = "linear"
    """Learning rate after the warmup: linear decay to 0, cosine decay to 0, or constant."""
    layer_lr_decay: float = 1.0
    """Layer-wise learning-rate decay: encoder layer l of L trains at learning_rate_encoder x
    decay^(L - l), the embeddings at decay^(L + 1) (1.0 = one rate for the whole encoder)."""
    freeze_layers: int = 0
    """Freeze the embeddings and the lowest N encoder layers (0 = train everything). With
    finetuning=lora no adapter is put in those layers (it would stay at its zero start)."""
    finetuning: Finetuning = "full"
    """'full' trains every encoder weight; 'lora' freezes the encoder and trains low-rank adapters
    (LoRA, peft) on its attention projections, beside the fully trained heads."""
    lora_rank: int = 8
    """finetuning=lora: rank r of each adapter (B x A, A: r x in, B: out x r)."""
    lora_alpha: float = 16.0
    """finetuning=lora: the adapter's output is scaled by lora_alpha / lora_rank."""
    lora_dropout: float = 0.1
    """finetuning=lora: dropout on the adapter's input (training only)."""
    lora_target_modules: tuple[str, ...] = ()
    """finetuning=lora: modules that get an adapter, by name suffix (e.g. [query, value]); empty =
    every linear projection inside the encoder's attention blocks (query, key, value and the
    attention output), found by module type, so BERT, RoBERTa, DeBERTa-v2 and MiniLM all work."""
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
    distributed: Distributed = "none"
    """'none' = a trial trains in one process; 'ddp' = in train.ddp_processes processes
    (DistributedDataParallel: each trains on its share of every epoch's batches and the gradients
    are averaged, so the global batch is batch_size x gradient_accumulation_steps x ddp_processes)."""
    ddp_processes: int = 2
    """train.distributed=ddp: processes per trial (one per GPU on CUDA; gloo processes on CPU)."""
    fast_dropout: bool = True
    """On a CPU, draw training dropout masks (nn.Dropout's and the attention's) from 64-bit words cut
    into four 16-bit lanes instead of torch's per-element bernoulli: the same dropout probability (to
    1/65536), about a third of a MiniLM step saved (models/fast_dropout.py). No effect on CUDA, on
    evaluation, or with train.compile on (compiled kernels draw their own)."""
    compile: Compile = False
    """torch.compile the model for training: false; true; 'auto' = time a few steps compiled and not
    on this device (once per device, torch version, encoder, precision and batch size, remembered in
    <paths.cache_dir>/compile_probe.json) and compile where it wins. One graph with a dynamic sequence
    length (windows padded to a multiple of 8), cached on disk across trials and resumes."""
    gradient_checkpointing: bool = False
    """Recompute the encoder's activations in backward instead of keeping them (the encoder's own
    gradient checkpointing): less memory for big encoders and long windows, about a third more time."""

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
            require(value >= 1, f"train.{name}", f"must be >= 1, got {value}")
        for name in ("learning_rate_encoder", "learning_rate_heads"):
            value = getattr(self, name)
            require(0.0 < value < 1.0, f"train.{name}", f"must be in (0, 1), got {value}")
        require(self.weight_decay >= 0.0, "train.weight_decay", "must be >= 0")
        require(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", "must be in [0, 1)")
        require(0.0 <= self.dropout < 1.0, "train.dropout", "must be in [0, 1)")
        require(self.max_grad_norm >= 0.0, "train.max_grad_norm", "must be >= 0 (0 = no clipping)")
        for name in ("loss_weight_criteria", "loss_weight_evidence"):
            require(getattr(self, name) >= 0.0, f"train.{name}", "must be >= 0")
        require(
            self.loss_weight_criteria + self.loss_weight_evidence > 0,
            "train.loss_weight_criteria",
            "both loss weights are 0: nothing would be trained",
        )
        require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "train.device",
            f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )
        require(
            self.precision in PRECISIONS,
            "train.precision",
            f"must be {either(PRECISIONS)}",
        )
        require(0.0 < self.match_threshold < 1.0, "train.match_threshold", "must be in (0, 1)")
        require(0.0 < self.negative_sampling <= 1.0, "train.negative_sampling", "must be in (0, 1]")
        for name, allowed in (
            ("evidence_gating", EVIDENCE_GATINGS),
            ("criteria_loss", CRITERIA_LOSSES),
            ("optimizer", OPTIMIZERS),
            ("scheduler", SCHEDULERS),
        ):
            value = getattr(self, name)
            require(value in allowed, f"train.{name}", f"must be one of {', '.join(allowed)}, got {value!r}")
        require(self.focal_gamma >= 0.0, "train.focal_gamma", f"must be >= 0, got {self.focal_gamma}")
        require(
            0.0 <= self.hybrid_alpha <= 1.0,
            "train.hybrid_alpha",
            f"must be in [0, 1], got {self.hybrid_alpha}",
        )
        require(
            0.0 <= self.label_smoothing < 0.5,
            "train.label_smoothing",
            f"must be in [0, 0.5), got {self.label_smoothing}",
        )
        require(
            0.0 < self.layer_lr_decay <= 1.0,
            "train.layer_lr_decay",
            f"must be in (0, 1], got {self.layer_lr_decay}",
        )
        require(
            isinstance(self.compile, bool) or self.compile == "auto",
            "train.compile",
            f"must be false, true or auto, got {self.compile!r}",
        )
        require(self.freeze_layers >= 0, "train.freeze_layers", f"must be >= 0, got {self.freeze_layers}")
        self._check_lora()
        require(
            self.distributed in DISTRIBUTED_MODES,
            "train.distributed",
            f"must be {either(DISTRIBUTED_MODES)} (none: one process per trial; ddp: train.ddp_processes), "
            f"got {self.distributed!r}",
        )
        require(
            self.distributed == "none" or self.ddp_processes >= 2,
            "train.ddp_processes",
            f"must be >= 2 with train.distributed=ddp (or use train.distributed=none), got {self.ddp_processes}",
        )
        require(
            0.0 <= self.augment_probability <= 1.0,
            "train.augment_probability",
            f"must be in [0, 1], got {self.augment_probability}",
        )
        try:
            operations = parse_operations(self.augment_operations)
        except ValueError as error:
            fail("train.augment_operations", str(error))
        require(
            bool(operations) or self.augment_probability == 0.0,
            "train.augment_operations",
            "is empty while train.augment_probability > 0: name at least one operation",
        )

    def _check_lora(self) -> None:
        """The LoRA settings, checked whatever train.finetuning is: a search space may switch it on."""
        require(
            self.finetuning in FINETUNINGS,
            "train.finetuning",
            f"must be {either(FINETUNINGS)} (full: every encoder weight; lora: low-rank adapters), "
            f"got {self.finetuning!r}",
        )
        require(
            self.lora_rank >= 1,
            "train.lora_rank",
            f"must be >= 1 (the adapters' rank; 4 to 64 is usual), got {self.lora_rank}",
        )
        require(
            self.lora_alpha > 0,
            "train.lora_alpha",
            f"must be > 0 (the adapters are scaled by alpha / rank; 2 x rank is usual), got {self.lora_alpha}",
        )
        require(
            0.0 <= self.lora_dropout < 1.0,
            "train.lora_dropout",
            f"must be in [0, 1) (0 = no dropout), got {self.lora_dropout}",
        )
        blank = [name for name in self.lora_target_modules if not str(name).strip()]
        require(
            not blank,
            "train.lora_target_modules",
            "holds an empty name: list module-name suffixes (e.g. [query, value]), or [] for the attention projections",
        )
