"""Criteria-matching head: does the post match the criterion in the window's question?"""

from __future__ import annotations

import torch
from torch import nn


class CriteriaHead(nn.Module):
    """Linear probe on the [CLS] hidden state: (batch, seq, hidden) -> (batch,) logits."""

    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = hidden_states[:, 0]  # [CLS]: (batch, hidden)
        logits: torch.Tensor = self.classifier(self.dropout(pooled))
        return logits.squeeze(-1)
