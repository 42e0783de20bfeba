"""Window representation for the criteria head: (batch, seq, hidden) -> (batch, hidden).

- ``cls``: the first token's state (what BERT's next-sentence head was trained on)
- ``mean``: the mean of the window's token states (what sentence-transformers encoders such as
  all-MiniLM-L6-v2 were trained to fill with meaning; their [CLS] state is weak)
- ``max``: the element-wise max over the window's tokens (one sentence can decide it, however long
  the window around it)
- ``attention``: a learned softmax weighting of the tokens (one query vector)
- ``layer_mix``: a learned softmax mix of the last ``layers`` layers' states (ELMo's scalar mix),
  then mean-pooled: lower layers carry more of the surface wording
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

POOLINGS = ("cls", "mean", "max", "attention", "layer_mix")


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class Pooling(nn.Module):
    def __init__(self, kind: str, hidden_size: int, *, layers: int = 4) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"unknown pooling {kind!r}; one of {', '.join(POOLINGS)}")
        self.kind = kind
        self.layers = layers
        if kind == "attention":
            self.score = nn.Linear(hidden_size, 1)
        if kind == "layer_mix":
            self.layer_weights = nn.Parameter(torch.zeros(layers))  # softmax(0) = equal mix at first
            self.gamma = nn.Parameter(torch.ones(()))

    @property
    def needs_all_layers(self) -> bool:
        return self.kind == "layer_mix"

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        all_layers: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.kind == "cls":
            return hidden[:, 0]
        if self.kind == "mean":
            return masked_mean(hidden, attention_mask)
        if self.kind == "max":
            padded = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min)
            return padded.max(dim=1).values
        if self.kind == "attention":
            scores = self.score(hidden).squeeze(-1).float()  # (batch, seq)
            scores = scores.masked_fill(attention_mask == 0, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1).to(hidden.dtype).unsqueeze(-1)
            return (hidden * weights).sum(dim=1)
        if all_layers is None or len(all_layers) < self.layers:
            raise ValueError(
                f"layer_mix pooling needs the states of the last {self.layers} layers, got "
                f"{0 if all_layers is None else len(all_layers)}"
            )
        stacked = torch.stack(list(all_layers[-self.layers :]), dim=0)  # (layers, batch, seq, hidden)
        weights = torch.softmax(self.layer_weights, dim=0).to(stacked.dtype).view(-1, 1, 1, 1)
        mixed = self.gamma.to(stacked.dtype) * (weights * stacked).sum(dim=0)
        return masked_mean(mixed, attention_mask)
