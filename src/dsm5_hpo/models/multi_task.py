"""One shared encoder, two heads, one weighted joint loss.

Where the criteria logit comes from (heads config):

- the criteria head on the pooled window (the default with evidence_unit=span);
- with ``criteria_from_evidence``, the span head's own scores: the best start + end logit minus the
  null ([CLS]) logit, scaled and shifted by two learned numbers (a pair matches when it has
  evidence, so one head decides both);
- with ``evidence_unit=sentence``, always the best sentence's evidence logit (multiple-instance).

The encoder is fine-tuned whole (train.finetuning=full) or through LoRA adapters (lora: models/lora.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsm5_hpo.config import HeadsConfig, StudyConfig
from dsm5_hpo.models.heads import CriteriaHead, EvidenceHead
from dsm5_hpo.models.heads.pooling import Pooling
from dsm5_hpo.models.heads.sentence import SentenceEvidenceHead, best_sentence_logit
from dsm5_hpo.models.loading import load_encoder
from dsm5_hpo.models.lora import LoraSettings, add_lora
from dsm5_hpo.models.losses import LossSettings, criteria_loss, evidence_loss, sentence_loss


@dataclass
class DualOutput:
    criteria_logits: torch.Tensor  # (batch,); multi_label: (batch, criteria)
    start_logits: torch.Tensor | None  # (batch, seq); multi_label: (batch, seq, criteria); None: sentences
    end_logits: torch.Tensor | None
    sentence_logits: torch.Tensor | None = None
    """evidence_unit=sentence: (batch, sentences, outputs) evidence logit of each sentence."""


class SpanGapLogit(nn.Module):
    """Criteria logit read off span logits: a x (max start + max end - null score) + b."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        # (batch, seq[, outputs]): position 0 is the null answer; masked positions are very negative.
        best = start[:, 1:].max(dim=1).values + end[:, 1:].max(dim=1).values
        return self.scale * (best - start[:, 0] - end[:, 0]) + self.bias


class DualHeadModel(nn.Module):
    """Criteria matching and evidence binding on one Hugging Face encoder."""

    def __init__(
        self,
        encoder: nn.Module,
        dropout: float,
        heads: HeadsConfig | None = None,
        *,
        outputs: int = 1,
        lora: LoraSettings | None = None,
    ) -> None:
        """``outputs``: criteria predicted per window, 1 for binary_pairs (the criterion is in the input),
        the number of criteria for multi_label (a logit and a span per criterion). ``lora``: put LoRA
        adapters into the encoder and freeze its own weights (models/lora.py); None = full fine-tuning."""
        super().__init__()
        if outputs < 1:
            raise ValueError(f"outputs must be >= 1, got {outputs}")
        self.outputs = outputs
        heads = heads or HeadsConfig()
        self.encoder = encoder
        config = getattr(encoder, "config")  # noqa: B009 - nn.Module has no typed config
        hidden: int = config.hidden_size
        layers = int(getattr(config, "num_hidden_layers", 0) or 0)
        self.heads = heads
        # An encoder with fewer layers than heads.layer_mix_layers has all of them mixed.
        self.pooling = Pooling(heads.pooling, hidden, layers=max(1, min(heads.layer_mix_layers, layers or 1)))
        self.by_sentence = heads.evidence_unit == "sentence"
        # The criteria head is built only where the criteria logit comes from it (module docstring).
        self.criteria_head = (
            None
            if self.by_sentence or heads.criteria_from_evidence
            else CriteriaHead(
                hidden, dropout, kind=heads.criteria_head, width=heads.hidden_size, outputs=outputs
            )
        )
        self.span_gap = SpanGapLogit() if heads.criteria_from_evidence and not self.by_sentence else None
        evidence = SentenceEvidenceHead if self.by_sentence else EvidenceHead
        self.evidence_head: EvidenceHead | SentenceEvidenceHead = evidence(
            hidden,
            dropout,
            kind=heads.evidence_head,
            width=heads.hidden_size,
            coupled=heads.coupling,
            outputs=outputs,
        )
        self.hidden_size = hidden
        self.export_info: dict[str, Any] = {}
        """dsm5_hpo.json of an exported model loaded with from_pretrained (empty otherwise)."""
        # Last, so that the heads draw the same random start as with full fine-tuning (same seed).
        self.lora = lora
        self.lora_targets: list[str] = add_lora(self.encoder, lora) if lora is not None else []
        """Names (in the encoder) of the modules holding an adapter; empty with full fine-tuning."""

    @classmethod
    def from_pretrained(cls, path: str | Path, *, base_path: str | Path | None = None) -> DualHeadModel:
        """A model exported by a study (``study_<uuid>/best_model``), hash-verified; its
        dsm5_hpo.json (criteria, thresholds, window settings) is on ``model.export_info``.

        ``base_path``: for a LoRA export written with export.merge_lora=false, the folder holding its
        base encoder (default: where it was at export time, else found like model.local_path /
        model.pretrained); its weights must have the SHA-256 recorded in the export."""
        from dsm5_hpo.models.export import load_exported  # export imports this module

        model, info = load_exported(Path(path), base_path=Path(base_path) if base_path is not None else None)
        model.export_info = info
        return model

    def head_config(self) -> dict[str, Any]:
        """What a checkpoint's heads must match to be loaded into this model (recorded in its metadata)."""
        return {
            "criteria_head": self.heads.criteria_head,
            "pooling": self.heads.pooling,
            "evidence_head": self.heads.evidence_head,
            "coupling": self.heads.coupling,
            "head_hidden_size": self.heads.hidden_size,
            "layer_mix_layers": self.heads.layer_mix_layers,
            "hidden_size": self.hidden_size,
            # Only when not the default, so that checkpoints written before these existed still fit.
            **({"evidence_unit": self.heads.evidence_unit} if self.by_sentence else {}),
            **({"criteria_from_evidence": True} if self.heads.criteria_from_evidence else {}),
            # Only when not 1, so that binary_pairs checkpoints written before multi_label existed still fit.
            **({"outputs": self.outputs} if self.outputs != 1 else {}),
            # LoRA only: the adapters' names and shapes are in the architecture signature already, but
            # alpha (their scale) is no shape, so a checkpoint is tied to it here.
            **({"lora": self.lora_description()} if self.lora is not None else {}),
        }

    def lora_description(self) -> dict[str, Any]:
        """The LoRA settings as written to checkpoints and exports (the targets as adapted)."""
        assert self.lora is not None
        return {
            "rank": self.lora.rank,
            "alpha": self.lora.alpha,
            "dropout": self.lora.dropout,
            "targets": list(self.lora_targets),
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        answer_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        token_sentence: torch.Tensor | None = None,
    ) -> DualOutput:
        """``token_sentence`` (batch, seq): each token's sentence in its window (-1: none), needed by
        the sentence-level evidence head (collate gives it as batch["token_sentence"])."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.encoder.config, "type_vocab_size", 0) > 1:
            kwargs["token_type_ids"] = token_type_ids
        if self.pooling.needs_all_layers:
            kwargs["output_hidden_states"] = True
        encoded = self.encoder(**kwargs)
        hidden = encoded.last_hidden_state  # (batch, seq, hidden)
        all_layers = encoded.hidden_states if self.pooling.needs_all_layers else None
        pooled = self.pooling(hidden, attention_mask, all_layers)
        context = pooled if self.heads.coupling else None
        if isinstance(self.evidence_head, SentenceEvidenceHead):
            if token_sentence is None:
                raise ValueError("heads.evidence_unit=sentence needs token_sentence (from collate)")
            sentences = self.evidence_head(hidden, token_sentence, context)
            criteria = best_sentence_logit(sentences)
            return DualOutput(criteria.squeeze(-1) if self.outputs == 1 else criteria, None, None, sentences)
        start, end = self.evidence_head(hidden, answer_mask, context)
        if self.span_gap is not None:
            return DualOutput(self.span_gap(start, end).float(), start, end)
        assert self.criteria_head is not None
        return DualOutput(self.criteria_head(pooled).float(), start, end)


def forward_batch(model: nn.Module, batch: dict[str, torch.Tensor]) -> DualOutput:
    """``model`` on a batch from data.features.collate (already on the model's device)."""
    output: DualOutput = model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["answer_mask"],
        batch["token_type_ids"],
        batch.get("token_sentence"),
    )
    return output


DualAgentModel = DualHeadModel
"""The model's first name, kept so that loading code written against it goes on working."""


def build_model(encoder_path: Path, config: StudyConfig) -> DualHeadModel:
    """The study's model: the encoder at ``encoder_path`` with the heads of ``config``."""
    return DualHeadModel(
        load_encoder(encoder_path),
        dropout=config.train.dropout,
        heads=config.heads,
        outputs=outputs_for(config.data.input_format, len(config.data.criteria)),
        lora=LoraSettings.from_train(config.train),
    )


def outputs_for(input_format: str, criteria: int) -> int:
    """Criteria predicted per window for an input format."""
    return criteria if input_format == "multi_label" else 1


@dataclass
class LossParts:
    total: torch.Tensor
    criteria: torch.Tensor
    evidence: torch.Tensor


def joint_loss(
    output: DualOutput,
    labels: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    settings: LossSettings | None = None,
    sentence_targets: torch.Tensor | None = None,
) -> LossParts:
    """w_c x criteria loss + w_e x evidence loss: mean(CE(start), CE(end)) with position 0 the null
    answer, or, for sentence logits, the BCE of every sentence whose target is known
    (``sentence_targets``, batch["sentence_targets"]).

    ``settings`` chooses the criteria loss, smoothing and the two weights (default: plain BCE, no
    smoothing, both weights 1).
    """
    settings = settings or LossSettings()
    criteria = criteria_loss(output.criteria_logits, labels, settings)
    if output.sentence_logits is not None:
        if sentence_targets is None:
            raise ValueError("sentence logits need sentence_targets (from collate)")
        evidence = sentence_loss(output.sentence_logits, sentence_targets, settings.label_smoothing)
    else:
        assert output.start_logits is not None and output.end_logits is not None
        evidence = evidence_loss(
            output.start_logits, output.end_logits, start_positions, end_positions, settings.label_smoothing
        )
    total = settings.criteria_weight * criteria + settings.evidence_weight * evidence
    return LossParts(total, criteria, evidence)
