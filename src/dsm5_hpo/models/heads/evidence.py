"""Evidence-binding head: start/end logits over the window's tokens, [CLS] = no evidence (SQuAD 2)."""

from __future__ import annotations

import torch
from torch import nn

# Large negative, not -inf: keeps softmax finite under fp16/bf16 autocast.
MASKED_LOGIT = -1e4


class EvidenceHead(nn.Module):
    """(batch, seq, hidden) -> start and end logits (batch, seq), masked outside the post."""

    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.span = nn.Linear(hidden_size, 2)

    def forward(
        self, hidden_states: torch.Tensor, answer_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.span(self.dropout(hidden_states)).float()  # (batch, seq, 2)
        logits = logits.masked_fill(~answer_mask.unsqueeze(-1), MASKED_LOGIT)
        return logits[..., 0], logits[..., 1]
