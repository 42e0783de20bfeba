"""Criteria-matching head: does the post match the criterion in the window's question?"""

from __future__ import annotations

import torch
from torch import nn


class CriteriaHead(nn.Module):
    """Linear probe on the mean of the window's token states: (batch, seq, hidden) -> (batch,) logits.

    Mean pooling rather than [CLS]: sentence-transformers encoders such as all-MiniLM-L6-v2 were
    trained to put the meaning in the mean of their token states, and their [CLS] state is weak,
    which matters when a trial only has a few hundred optimizer steps to adapt.
    """

    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (batch, seq, 1)
        pooled = (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (batch, hidden)
        logits: torch.Tensor = self.classifier(self.dropout(pooled))
        return logits.squeeze(-1)
