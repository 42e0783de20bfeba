"""Criteria-matching head: does the post match the criterion in the window's question?

Pooled window representation (see pooling.py) -> one logit. Kinds:

- ``linear``: a linear probe
- ``mlp``: Linear -> GELU -> dropout -> Linear
- ``mlp_residual``: LayerNorm(x + Linear(GELU(Linear(x)))) -> Linear: the MLP refines the
  pooled state instead of replacing it, which trains stably even when the MLP starts random
- ``gated``: a gated linear unit, (W x) * sigmoid(V x) -> dropout -> Linear
"""

from __future__ import annotations

import torch
from torch import nn

CRITERIA_HEADS = ("linear", "mlp", "mlp_residual", "gated")


class CriteriaHead(nn.Module):
    """(batch, hidden) pooled states -> (batch,) logits, or (batch, outputs) with several outputs."""

    def __init__(
        self, hidden_size: int, dropout: float, *, kind: str = "linear", width: int = 256, outputs: int = 1
    ) -> None:
        super().__init__()
        self.outputs = outputs
        if kind not in CRITERIA_HEADS:
            raise ValueError(f"unknown criteria head {kind!r}; one of {', '.join(CRITERIA_HEADS)}")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        if kind == "linear":
            self.classifier = nn.Linear(hidden_size, outputs)
        elif kind == "mlp":
            self.hidden = nn.Linear(hidden_size, width)
            self.classifier = nn.Linear(width, outputs)
        elif kind == "mlp_residual":
            self.hidden = nn.Linear(hidden_size, width)
            self.back = nn.Linear(width, hidden_size)
            self.norm = nn.LayerNorm(hidden_size)
            self.classifier = nn.Linear(hidden_size, outputs)
        else:
            self.value = nn.Linear(hidden_size, width)
            self.gate = nn.Linear(hidden_size, width)
            self.classifier = nn.Linear(width, outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dropout(pooled)
        if self.kind == "mlp":
            x = self.dropout(nn.functional.gelu(self.hidden(x)))
        elif self.kind == "mlp_residual":
            x = self.norm(x + self.dropout(self.back(nn.functional.gelu(self.hidden(x)))))
        elif self.kind == "gated":
            x = self.dropout(self.value(x) * torch.sigmoid(self.gate(x)))
        logits: torch.Tensor = self.classifier(x)
        return logits.squeeze(-1) if self.outputs == 1 else logits
