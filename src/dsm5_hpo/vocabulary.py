"""The fixed names a config is checked against: the DSM-5 criteria, the augmentation operations and
the validation metrics.

A leaf module (it imports nothing of the package): the config package validates against these names
without importing the data or training code that uses them, and those import them from here.
"""

from __future__ import annotations

import re

SPECIAL_CASE = "SPECIAL_CASE"

# Order matters: it is the index of each criterion in per-criterion outputs and reports.
CRITERIA: tuple[str, ...] = (
    "DEPRESSED_MOOD",
    "ANHEDONIA",
    "APPETITE_CHANGE",
    "SLEEP_ISSUES",
    "PSYCHOMOTOR",
    "FATIGUE",
    "WORTHLESSNESS",
    "COGNITIVE_ISSUES",
    "SUICIDAL_THOUGHTS",
)


OPERATIONS = ("swap", "delete", "synonym", "char_noise")
"""train.augment_operations, joined by '+' (data/augmentation.py applies them)."""


def parse_operations(text: str) -> tuple[str, ...]:
    """'swap+synonym' -> ('swap', 'synonym'); '' -> (); raises ValueError naming an unknown one.

    '+' separates (a Hydra command-line override takes it unquoted); ',' is accepted too.
    """
    names = tuple(dict.fromkeys(n.strip() for n in re.split(r"[+,]", text) if n.strip()))
    unknown = [n for n in names if n not in OPERATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation operation {unknown[0]!r}; known: {', '.join(OPERATIONS)}")
    return names


CRITERIA_METRICS: tuple[str, ...] = (
    "criteria_accuracy",
    "criteria_precision",
    "criteria_recall",
    "criteria_f1",  # binary F1 pooled over all pairs; equal to criteria_f1_micro
    "criteria_f1_micro",
    "criteria_f1_macro",  # unweighted mean of per-criterion F1 over criteria present
    "criteria_auroc",
    "criteria_average_precision",
)
EVIDENCE_METRICS: tuple[str, ...] = (
    "evidence_exact_match",  # SQuAD 2 overall: a null answer on a pair without evidence counts as right
    "evidence_token_f1",  # SQuAD 2 overall, likewise
    "evidence_char_precision",
    "evidence_char_recall",
    "evidence_char_f1",
    "evidence_null_accuracy",
    "evidence_has_answer_token_f1",  # over the pairs that have gold evidence: the evidence's recall
    "evidence_has_answer_exact_match",
    "evidence_span_precision",  # over the predicted spans: how right they are
    "evidence_span_f1",  # over gold or predicted spans: silence scores 0, so does a span everywhere
)
JOINT_METRICS: tuple[str, ...] = ("joint_score", "joint_f1")
METRIC_NAMES: tuple[str, ...] = (*CRITERIA_METRICS, *EVIDENCE_METRICS, *JOINT_METRICS)
