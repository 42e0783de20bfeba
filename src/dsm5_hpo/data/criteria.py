"""The nine DSM-5 depression criteria as RedSM5 labels them, with the text the model reads.

The description is the "question" side of each (criterion, post) pair, so its wording is
part of the model input: changing it changes every tokenized feature.
"""

from __future__ import annotations

from dsm5_hpo.vocabulary import CRITERIA, SPECIAL_CASE

# Every label that may appear in the annotations file; SPECIAL_CASE is parsed but is not
# one of the nine criteria unless a config asks for it.
KNOWN_LABELS: frozenset[str] = frozenset((*CRITERIA, SPECIAL_CASE))

DESCRIPTIONS: dict[str, str] = {
    "DEPRESSED_MOOD": "Depressed mood most of the day, nearly every day: feeling sad, empty or hopeless.",
    "ANHEDONIA": "Markedly diminished interest or pleasure in all, or almost all, activities.",
    "APPETITE_CHANGE": "Significant weight loss or gain, or decrease or increase in appetite.",
    "SLEEP_ISSUES": "Insomnia or hypersomnia nearly every day.",
    "PSYCHOMOTOR": "Psychomotor agitation or retardation observable by others.",
    "FATIGUE": "Fatigue or loss of energy nearly every day.",
    "WORTHLESSNESS": "Feelings of worthlessness or excessive or inappropriate guilt.",
    "COGNITIVE_ISSUES": "Diminished ability to think or concentrate, or indecisiveness.",
    "SUICIDAL_THOUGHTS": "Recurrent thoughts of death, suicidal ideation, a suicide attempt or plan.",
    SPECIAL_CASE: "Clinically relevant content outside the nine DSM-5 depression criteria.",
}
