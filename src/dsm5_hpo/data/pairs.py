"""(post, criterion) pairs: the unit both tasks are trained and evaluated on.

For each post of a split and each criterion: label 1 when a clinician marked evidence present
(status 1) for that criterion in that post, else 0 (status 0 rows and unannotated posts are
negatives); the gold evidence is every located status-1 sentence, as character spans.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from dsm5_hpo.data.criteria import DESCRIPTIONS
from dsm5_hpo.data.schema import RedSM5
from dsm5_hpo.data.spans import locate_span

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairExample:
    post_id: str
    criterion: str
    question: str
    """The criterion description the model reads beside the post."""
    text: str
    label: int
    spans: tuple[tuple[int, int], ...]
    """Gold evidence spans [start, end) in text, sorted; () = no evidence."""


@dataclass
class SpanStats:
    """How many evidence sentences were located; reported so data problems are visible."""

    located: int = 0
    unlocated: int = 0
    unlocated_ids: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.located + self.unlocated

    def add(self, other: SpanStats) -> None:
        self.located += other.located
        self.unlocated += other.unlocated
        self.unlocated_ids += other.unlocated_ids

    def warn(self) -> None:
        """One WARNING for all sentences that could not be located (nothing when all were)."""
        if self.unlocated:
            logger.warning(
                "%d of %d evidence sentences could not be located in their post (e.g. %s); those pairs keep "
                "their label but have no gold span for that sentence",
                self.unlocated,
                self.total,
                ", ".join(self.unlocated_ids[:3]),
            )


def build_examples(
    dataset: RedSM5, post_ids: Sequence[str], criteria: Sequence[str], *, warn: bool = True
) -> tuple[list[PairExample], SpanStats]:
    """Pairs for ``post_ids`` x ``criteria``, in that order, with located evidence spans.

    ``warn=False`` leaves the unlocated-sentence WARNING to the caller (one for all splits).
    """
    wanted = set(post_ids)
    positives: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in dataset.annotations:
        if row.post_id in wanted and row.status == 1 and row.symptom in criteria:
            positives[(row.post_id, row.symptom)].append(row.sentence_text)

    stats = SpanStats()
    examples: list[PairExample] = []
    for post_id in post_ids:
        text = dataset.posts[post_id]
        for criterion in criteria:
            sentences = positives.get((post_id, criterion), [])
            spans: set[tuple[int, int]] = set()
            for sentence in sentences:
                span = locate_span(text, sentence)
                if span is None:
                    stats.unlocated += 1
                    stats.unlocated_ids.append(f"{post_id}/{criterion}")
                else:
                    stats.located += 1
                    spans.add(span)
            examples.append(
                PairExample(
                    post_id=post_id,
                    criterion=criterion,
                    question=DESCRIPTIONS[criterion],
                    text=text,
                    label=1 if sentences else 0,
                    spans=tuple(sorted(spans)),
                )
            )
    if warn:
        stats.warn()
    return examples, stats
