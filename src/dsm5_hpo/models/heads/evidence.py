"""Evidence-binding head: start/end logits over the window's tokens, [CLS] = no evidence (SQuAD 2).

Kinds: ``linear`` (one linear map to start/end) or ``mlp`` (Linear -> GELU -> dropout -> Linear).
With ``coupled``, each token's state is concatenated with the criteria head's pooled window
representation, so where the evidence is can depend on what the criteria head saw.
"""

from __future__ import annotations

import torch
from torch import nn

# Large negative, not -inf: keeps softmax finite under fp16/bf16 autocast.
MASKED_LOGIT = -1e4
EVIDENCE_HEADS = ("linear", "mlp")


class EvidenceHead(nn.Module):
    """(batch, seq, hidden) -> start and end logits (batch, seq), masked outside the post; with several
    outputs (multi_label), (batch, seq, outputs): a span per criterion."""

    def __init__(
        self,
        hidden_size: int,
        dropout: float,
        *,
        kind: str = "linear",
        width: int = 256,
        coupled: bool = False,
        outputs: int = 1,
    ) -> None:
        super().__init__()
        self.outputs = outputs
        if kind not in EVIDENCE_HEADS:
            raise ValueError(f"unknown evidence head {kind!r}; one of {', '.join(EVIDENCE_HEADS)}")
        self.kind = kind
        self.coupled = coupled
        self.dropout = nn.Dropout(dropout)
        inputs = 2 * hidden_size if coupled else hidden_size
        if kind == "linear":
            self.span = nn.Linear(inputs, 2 * outputs)
        else:
            self.hidden = nn.Linear(inputs, width)
            self.span = nn.Linear(width, 2 * outputs)

    def forward(
        self, hidden_states: torch.Tensor, answer_mask: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = hidden_states
        if self.coupled:
            if pooled is None:
                raise ValueError("a coupled evidence head needs the criteria head's pooled representation")
            x = torch.cat([x, pooled.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)], dim=-1)
        x = self.dropout(x)
        if self.kind == "mlp":
            x = self.dropout(nn.functional.gelu(self.hidden(x)))
        logits = self.span(x).float()  # (batch, seq, 2 x outputs): (start, end) of each output in turn
        logits = logits.masked_fill(~answer_mask.unsqueeze(-1), MASKED_LOGIT)
        if self.outputs == 1:
            return logits[..., 0], logits[..., 1]
        pairs = logits.view(*logits.shape[:-1], self.outputs, 2)
        return pairs[..., 0], pairs[..., 1]
