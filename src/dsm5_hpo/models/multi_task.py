"""One shared encoder, two heads, one weighted joint loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dsm5_hpo.models.heads import CriteriaHead, EvidenceHead


@dataclass
class DualOutput:
    criteria_logits: torch.Tensor  # (batch,)
    start_logits: torch.Tensor  # (batch, seq)
    end_logits: torch.Tensor  # (batch, seq)


class DualAgentModel(nn.Module):
    """Criteria matching and evidence binding on one Hugging Face encoder."""

    def __init__(self, encoder: nn.Module, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        hidden: int = getattr(encoder, "config").hidden_size  # noqa: B009 - nn.Module has no typed config
        self.criteria_head = CriteriaHead(hidden, dropout)
        self.evidence_head = EvidenceHead(hidden, dropout)
        self.hidden_size = hidden

    def head_config(self) -> dict[str, Any]:
        """What a checkpoint's heads must match to be loaded into this model (recorded in its metadata)."""
        return {
            "criteria_head": "linear_mean",
            "evidence_head": "start_end_linear",
            "hidden_size": self.hidden_size,
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        answer_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> DualOutput:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.encoder.config, "type_vocab_size", 0) > 1:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state  # (batch, seq, hidden)
        start, end = self.evidence_head(hidden, answer_mask)
        return DualOutput(self.criteria_head(hidden, attention_mask).float(), start, end)


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
    *,
    criteria_weight: float,
    evidence_weight: float,
) -> LossParts:
    """w_c * BCE(criteria) + w_e * mean(CE(start), CE(end)); position 0 is the null answer."""
    criteria = F.binary_cross_entropy_with_logits(output.criteria_logits, labels)
    evidence = (
        F.cross_entropy(output.start_logits, start_positions)
        + F.cross_entropy(output.end_logits, end_positions)
    ) / 2
    return LossParts(criteria_weight * criteria + evidence_weight * evidence, criteria, evidence)
