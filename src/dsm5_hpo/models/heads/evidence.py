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


class ProjectionHead(nn.Module):
    """What the span and sentence evidence heads share: the kind check, the coupling with the pooled
    window representation, dropout and the optional MLP before the last linear layer (``final``).
    The last layer's attribute name is the subclass's (``span``, ``score``): checkpoints key on it."""

    FINAL: str = "final"
    """Attribute name of the last linear layer (a subclass's: checkpoints key on it)."""
    LOGITS_PER_OUTPUT: int = 1
    """Logits the last layer gives per output (criterion)."""

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
        if kind not in EVIDENCE_HEADS:
            raise ValueError(f"unknown evidence head {kind!r}; one of {', '.join(EVIDENCE_HEADS)}")
        self.kind = kind
        self.coupled = coupled
        self.outputs = outputs
        self.dropout = nn.Dropout(dropout)
        self.inputs = 2 * hidden_size if coupled else hidden_size
        self.width = width
        if kind == "mlp":
            self.hidden = nn.Linear(self.inputs, width)
        setattr(self, self.FINAL, self.final_layer(self.LOGITS_PER_OUTPUT * outputs))

    def final_layer(self, size: int) -> nn.Linear:
        """The last linear layer, from the MLP's width (mlp) or the inputs (linear) to ``size``."""
        return nn.Linear(self.width if self.kind == "mlp" else self.inputs, size)

    def features(self, x: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        """(batch, n, hidden) -> what the last layer reads: coupled, dropped out, through the MLP."""
        if self.coupled:
            if pooled is None:
                raise ValueError("a coupled evidence head needs the criteria head's pooled representation")
            x = torch.cat([x, pooled.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)], dim=-1)
        x = self.dropout(x)
        if self.kind == "mlp":
            x = self.dropout(nn.functional.gelu(self.hidden(x)))
        return x


class EvidenceHead(ProjectionHead):
    """(batch, seq, hidden) -> start and end logits (batch, seq), masked outside the post; with several
    outputs (multi_label), (batch, seq, outputs): a span per criterion."""

    FINAL = "span"
    LOGITS_PER_OUTPUT = 2  # start and end
    span: nn.Linear

    def forward(
        self, hidden_states: torch.Tensor, answer_mask: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(hidden_states, pooled)
        logits = self.span(x).float()  # (batch, seq, 2 x outputs): (start, end) of each output in turn
        logits = logits.masked_fill(~answer_mask.unsqueeze(-1), MASKED_LOGIT)
        if self.outputs == 1:
            return logits[..., 0], logits[..., 1]
        pairs = logits.view(*logits.shape[:-1], self.outputs, 2)
        return pairs[..., 0], pairs[..., 1]
