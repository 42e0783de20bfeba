"""Sentence-level evidence head: score every sentence of the window, the best one is the evidence.

RedSM5 evidence is annotated per sentence, and a one-sentence signal is diluted when a whole
256-token window is pooled into one vector. This head pools each sentence's tokens (their mean,
what sentence encoders such as all-MiniLM-L6-v2 are trained to fill with meaning), scores it per
output (one, or one per criterion for multi_label), and reads the window's criteria logit off the
best sentence: a window matches when one of its sentences is evidence (multiple-instance).

Kinds as the span head: ``linear`` or ``mlp``; ``coupled`` concatenates the window's pooled
representation to each sentence's, so a sentence is read in the context of its post.
"""

from __future__ import annotations

import torch
from torch import nn

from dsm5_hpo.models.heads.evidence import MASKED_LOGIT, ProjectionHead


def pool_sentences(hidden: torch.Tensor, token_sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, seq, hidden) token states, (batch, seq) sentence index per token (-1: none) ->
    (batch, sentences, hidden) mean states and (batch, sentences) bool: the sentence exists."""
    sentences = max(1, int(token_sentence.max().item()) + 1)
    ids = torch.arange(sentences, device=token_sentence.device)
    membership = (token_sentence.unsqueeze(-1) == ids).to(hidden.dtype)  # (batch, seq, sentences)
    counts = membership.sum(dim=1)  # (batch, sentences)
    summed = membership.transpose(1, 2) @ hidden  # (batch, sentences, hidden)
    return summed / counts.clamp(min=1.0).unsqueeze(-1), counts > 0


class SentenceEvidenceHead(ProjectionHead):
    """Sentence logits (batch, sentences, outputs), masked where a window has fewer sentences."""

    FINAL = "score"
    score: nn.Linear

    def forward(
        self, hidden_states: torch.Tensor, token_sentence: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> torch.Tensor:
        sentences, exists = pool_sentences(hidden_states, token_sentence)
        logits: torch.Tensor = self.score(
            self.features(sentences, pooled)
        ).float()  # (batch, sentences, outputs)
        return logits.masked_fill(~exists.unsqueeze(-1), MASKED_LOGIT)


def best_sentence_logit(sentence_logits: torch.Tensor) -> torch.Tensor:
    """(batch, sentences, outputs) -> (batch, outputs): the window's criteria logit, its best sentence's."""
    return sentence_logits.max(dim=1).values
