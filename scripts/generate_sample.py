#!/usr/bin/env python3
"""Generate the SYNTHETIC RedSM5-shaped sample shipped in ``Data/redsm5_sample/``.

The real RedSM5 data (``irlab-udc/redsm5``) is gated and cannot be redistributed, so the
repository ships this stand-in instead. It has the exact RedSM5 schema:

* ``redsm5_posts.csv``: ``post_id``, ``text``
* ``redsm5_annotations.csv``: ``post_id``, ``sentence_id`` (``{post_id}_{n}``, n = index of the
  sentence in the post), ``sentence_text``, ``DSM5_symptom``, ``status`` (1 = evidence present,
  0 = clinician marked it absent), ``explanation``

Every post is invented from templates; none of it is a real Reddit post and nothing in it
supports clinical conclusions. The sample deliberately contains the awkward cases of the real
data so the pipeline is exercised on them: posts with no symptom, posts far longer than a
512-token window, status-0 rows, ``SPECIAL_CASE`` rows, sentences carrying two symptoms, and
``sentence_text`` that is not an exact substring of the post (whitespace differences and
paraphrases). The counts are printed at the end.

Stdlib only and fully determined by ``--seed``: the same arguments give byte-identical files.
The template texts are in ``generate_sample_tables.json`` beside this script; editing them
changes the sample, so rerun the script and commit both.

Usage::

    python3 scripts/generate_sample.py                      # Data/redsm5_sample, seed 13, 360 posts
    python3 scripts/generate_sample.py --out DIR --seed N --posts N
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

DEFAULT_OUT = Path("Data/redsm5_sample")
DEFAULT_SEED = 13
DEFAULT_POSTS = 360
MIN_POSTS = 8

POSTS_FILE = "redsm5_posts.csv"
ANNOTATIONS_FILE = "redsm5_annotations.csv"
POSTS_HEADER: tuple[str, ...] = ("post_id", "text")
ANNOTATIONS_HEADER: tuple[str, ...] = (
    "post_id",
    "sentence_id",
    "sentence_text",
    "DSM5_symptom",
    "status",
    "explanation",
)

# Kept in sync with src/dsm5_hpo/data/criteria.py (a unit test checks it); duplicated here so
# the script runs with a bare python3 and no installed package.
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
SPECIAL_CASE = "SPECIAL_CASE"

# Rough shape of the real label distribution (mood and worthlessness common, psychomotor and
# appetite rare) but flattened so every criterion still has enough positives to learn from.
CRITERION_WEIGHTS: tuple[float, ...] = (6.0, 4.0, 2.5, 3.5, 2.0, 3.5, 5.0, 3.0, 4.0)

LONG_MIN_WORDS = 600
LONG_MAX_WORDS = 1500
# Word offset past which a 512-token window (question + post) certainly no longer reaches.
WINDOW_WORDS = 400

ID_ALPHABET = string.ascii_lowercase + string.digits

# --------------------------------------------------------------------------------------------
# Template tables. The texts live in generate_sample_tables.json beside this script, so this
# file holds only the logic; the comments on the bindings below say what each table is for.
# They are checked for shape once, at import, so a bad edit of the JSON fails at start with the
# file and the key at fault instead of as an IndexError or KeyError deep inside the drawing.
# --------------------------------------------------------------------------------------------
TABLES_FILE = Path(__file__).with_name("generate_sample_tables.json")
# Keys the JSON may hold besides the tables: notes for whoever edits it (JSON has no comments).
NOTE_PREFIX = "_"

T = TypeVar("T")


class TablesError(ValueError):
    """The tables file is missing, is not valid JSON, or lacks a key or has one of the wrong shape."""


@dataclass(frozen=True)
class Tables:
    """The template tables, with JSON lists turned back into tuples as the script always had them."""

    slots: dict[str, tuple[str, ...]]
    evidence: dict[str, tuple[str, ...]]
    special: tuple[str, ...]
    two_symptoms: tuple[tuple[str, str, str], ...]
    paraphrases: dict[str, tuple[tuple[str, str], ...]]
    distractors: dict[str, tuple[tuple[str, str], ...]]
    fillers: tuple[str, ...]
    explanations: dict[str, tuple[str, ...]]


TABLE_KEYS: tuple[str, ...] = (
    "SLOTS",
    "EVIDENCE",
    "SPECIAL",
    "TWO_SYMPTOMS",
    "PARAPHRASES",
    "DISTRACTOR_REASONS",
    "DISTRACTORS",
    "FILLERS",
    "EXPLANATIONS",
)


def load_tables(path: Path = TABLES_FILE) -> Tables:
    """Read the template tables from ``path`` and check their shape.

    Distractors name their status-0 reason by key (``"MEDIA"``) so each reason is written once,
    in ``DISTRACTOR_REASONS``; the reason text is put in place here.

    Raises:
        TablesError: the message names ``path`` and, where one is at fault, the key.
    """
    check = _Check(path)
    try:
        raw: object = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise check.fail("template tables file not found (it belongs beside the script)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise check.fail(f"cannot read the template tables: {exc}") from exc
    if not isinstance(raw, dict):
        raise check.fail("expected a JSON object of tables at the top level")
    for key in TABLE_KEYS:
        if key not in raw:
            raise check.fail(f"missing key {key!r}")
    for key in raw:
        # A misspelt table would otherwise be ignored silently while the real one stays unchanged.
        if key not in TABLE_KEYS and not key.startswith(NOTE_PREFIX):
            raise check.fail(f"unknown key {key!r}")

    reasons = check.table("DISTRACTOR_REASONS", raw["DISTRACTOR_REASONS"], None, check.string)
    distractors: dict[str, tuple[tuple[str, str], ...]] = {}
    for criterion, rows in check.table("DISTRACTORS", raw["DISTRACTORS"], CRITERIA, check.pairs).items():
        for i, (_, reason) in enumerate(rows):
            if reason not in reasons:
                raise check.fail(
                    f"DISTRACTORS.{criterion}[{i}] names reason {reason!r}, not in DISTRACTOR_REASONS"
                )
        distractors[criterion] = tuple((template, reasons[reason]) for template, reason in rows)

    return Tables(
        slots=check.table("SLOTS", raw["SLOTS"], None, check.strings),
        evidence=check.table("EVIDENCE", raw["EVIDENCE"], CRITERIA, check.strings),
        special=check.strings("SPECIAL", raw["SPECIAL"]),
        two_symptoms=check.triples("TWO_SYMPTOMS", raw["TWO_SYMPTOMS"]),
        paraphrases=check.table("PARAPHRASES", raw["PARAPHRASES"], CRITERIA, check.pairs),
        distractors=distractors,
        fillers=check.strings("FILLERS", raw["FILLERS"]),
        explanations=check.table(
            "EXPLANATIONS", raw["EXPLANATIONS"], (*CRITERIA, SPECIAL_CASE), check.strings
        ),
    )


@dataclass(frozen=True)
class _Check:
    """Shape checks of the parsed JSON; ``where`` is the key path, e.g. ``DISTRACTORS.FATIGUE[2]``."""

    path: Path

    def fail(self, message: str) -> TablesError:
        return TablesError(f"{self.path}: {message}")

    def string(self, where: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(f"{where} must be a string")
        return value

    def strings(self, where: str, value: object) -> tuple[str, ...]:
        # Non-empty: rng.choice on an empty table would fail mid-generation with no key named.
        if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
            raise self.fail(f"{where} must be a non-empty list of strings")
        return tuple(value)

    def rows(self, where: str, value: object, width: int) -> tuple[tuple[str, ...], ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(f"{where} must be a non-empty list of lists of {width} strings")
        rows = tuple(self.strings(f"{where}[{i}]", item) for i, item in enumerate(value))
        for i, row in enumerate(rows):
            if len(row) != width:
                raise self.fail(f"{where}[{i}] must hold {width} strings, not {len(row)}")
        return rows

    def pairs(self, where: str, value: object) -> tuple[tuple[str, str], ...]:
        return tuple((a, b) for a, b in self.rows(where, value, 2))

    def triples(self, where: str, value: object) -> tuple[tuple[str, str, str], ...]:
        return tuple((a, b, c) for a, b, c in self.rows(where, value, 3))

    def table(
        self, where: str, value: object, keys: Sequence[str] | None, read: Callable[[str, object], T]
    ) -> dict[str, T]:
        """Check an object of tables; with ``keys``, exactly those keys (one per label)."""
        if not isinstance(value, dict):
            raise self.fail(f"{where} must be a JSON object")
        if keys is not None:
            missing = [key for key in keys if key not in value]
            if missing:
                raise self.fail(f"{where} lacks key {missing[0]!r}")
            unknown = [key for key in value if key not in keys]
            if unknown:
                raise self.fail(f"{where} has unknown key {unknown[0]!r}")
        return {key: read(f"{where}.{key}", item) for key, item in value.items()}


TABLES = load_tables()

# Slot fillers. Templates reference them as {name}; each name is filled once per sentence.
SLOTS: dict[str, tuple[str, ...]] = TABLES.slots

# Filler slots drawn once per post (a tuple, not a set: iteration order feeds the RNG stream).
PER_POST_SLOTS: tuple[str, ...] = ("city", "age", "job", "subject", "housemates", "country", "pet")

# Evidence templates: at least eight per criterion, each with slots, so the signal is learnable
# but never one fixed string. Some carry commas, double quotes, curly quotes or emoji on purpose
# (the JSON spells the curly apostrophes \u2019 so they stay visibly distinct from "'").
EVIDENCE: dict[str, tuple[str, ...]] = TABLES.evidence

# Clinically relevant content that is outside the nine criteria (RedSM5's SPECIAL_CASE).
SPECIAL: tuple[str, ...] = TABLES.special

# One sentence, two criteria: the annotation file gets two rows with the same sentence_id.
TWO_SYMPTOMS: tuple[tuple[str, str, str], ...] = TABLES.two_symptoms

# Paraphrases: (what the post says, what the annotator wrote). The annotation cannot be found in
# the post, not even after normalising whitespace or case; the pipeline must count these.
PARAPHRASES: dict[str, tuple[tuple[str, str], ...]] = TABLES.paraphrases

# Sentences that touch a criterion's topic without being evidence for the poster, with the reason
# a clinician would mark them absent (status 0), which is the explanation of such a row. They
# appear unannotated in many posts and, when a clinician considered them, as status-0 rows.
DISTRACTORS: dict[str, tuple[tuple[str, str], ...]] = TABLES.distractors

# Everyday sentences with no clinical content: work, hobbies, questions to the subreddit.
FILLERS: tuple[str, ...] = TABLES.fillers

# Status-1 explanations, worded to fit every template of their criterion.
EXPLANATIONS: dict[str, tuple[str, ...]] = TABLES.explanations

# Share of rows whose explanation the clinician left empty.
EMPTY_EXPLANATION_RATE = 0.05


# --------------------------------------------------------------------------------------------
# Plan and result types
# --------------------------------------------------------------------------------------------
@dataclass
class Spec:
    """What one planned sentence must be, before any text is drawn."""

    kind: str  # "evidence" | "two" | "special" | "absent" | "paraphrase" | "distractor"
    criterion: str = ""  # the criterion for evidence / absent / paraphrase / distractor
    whitespace: str = ""  # "" | "double" | "newline": how the post's copy differs from sentence_text


@dataclass
class Sentence:
    """One realised sentence: its copy in the post, its annotated form and its rows."""

    in_post: str
    annotated: str
    labels: list[tuple[str, int, str]] = field(default_factory=list)  # (symptom, status, explanation)


@dataclass
class PostPlan:
    """Everything decided for one post before its text is drawn."""

    post_id: str
    kind: str  # "none" | "normal" | "long" | "absent_only"
    specs: list[Spec] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Drawing text
# --------------------------------------------------------------------------------------------
def fill(rng: random.Random, *templates: str, preset: dict[str, str] | None = None) -> tuple[str, ...]:
    """Fill the slots of one or more templates, sharing one value per slot name across them.

    Slots are visited in order of appearance so the RNG stream does not depend on any hashing.
    ``preset`` pins some slots (a post's city, age, job) so one post does not contradict itself.
    """
    values: dict[str, str] = dict(preset or {})
    for template in templates:
        for _, name, _, _ in string.Formatter().parse(template):
            if name and name not in values:
                values[name] = rng.choice(SLOTS[name])
    return tuple(template.format(**values) for template in templates)


def explanation(rng: random.Random, label: str) -> str:
    """Draw a short clinician-style status-1 explanation, sometimes left empty as in the real data."""
    return maybe_empty(rng, rng.choice(EXPLANATIONS[label]))


def maybe_empty(rng: random.Random, text: str) -> str:
    """Return ``text``, or an empty explanation at ``EMPTY_EXPLANATION_RATE``."""
    return "" if rng.random() < EMPTY_EXPLANATION_RATE else text


def break_whitespace(rng: random.Random, text: str, how: str) -> str:
    """Return ``text`` with one inner space turned into a double space or a line break."""
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    # Avoid the first and last gaps so the change sits inside the sentence, not at its edges.
    inner = spaces[1:-1] or spaces
    pos = rng.choice(inner)
    return text[:pos] + ("  " if how == "double" else "\n") + text[pos + 1 :]


def realise(rng: random.Random, spec: Spec) -> Sentence:
    """Draw the text and the annotation rows of one planned sentence."""
    if spec.kind == "evidence":
        (text,) = fill(rng, rng.choice(EVIDENCE[spec.criterion]))
        sentence = Sentence(text, text, [(spec.criterion, 1, explanation(rng, spec.criterion))])
    elif spec.kind == "two":
        template, first, second = rng.choice(TWO_SYMPTOMS)
        (text,) = fill(rng, template)
        rows = [(first, 1, explanation(rng, first)), (second, 1, explanation(rng, second))]
        sentence = Sentence(text, text, rows)
    elif spec.kind == "special":
        (text,) = fill(rng, rng.choice(SPECIAL))
        sentence = Sentence(text, text, [(SPECIAL_CASE, 1, explanation(rng, SPECIAL_CASE))])
    elif spec.kind == "paraphrase":
        in_post, annotated = fill(rng, *rng.choice(PARAPHRASES[spec.criterion]))
        sentence = Sentence(in_post, annotated, [(spec.criterion, 1, explanation(rng, spec.criterion))])
    elif spec.kind == "absent":
        template, why = rng.choice(DISTRACTORS[spec.criterion])
        (text,) = fill(rng, template)
        sentence = Sentence(text, text, [(spec.criterion, 0, maybe_empty(rng, why))])
    elif spec.kind == "distractor":
        (text,) = fill(rng, rng.choice(DISTRACTORS[spec.criterion])[0])
        sentence = Sentence(text, text)
    else:  # pragma: no cover - the planner only emits the kinds above
        raise ValueError(f"unknown spec kind {spec.kind!r}")
    if spec.whitespace:
        sentence.in_post = break_whitespace(rng, sentence.in_post, spec.whitespace)
    return sentence


def word_count(text: str) -> int:
    """Count whitespace-separated words, the unit the README and the counts use."""
    return len(text.split())


def filler_stream(rng: random.Random) -> list[str]:
    """Shuffle a copy of the filler templates, so a post only repeats one after using them all."""
    order = list(FILLERS)
    rng.shuffle(order)
    return order


def build_post(rng: random.Random, plan: PostPlan, post_index: int) -> tuple[str, list[Sentence]]:
    """Draw the text of one post and return it with its sentences in post order."""
    specials: list[Sentence] = []
    for spec in plan.specs:
        # Redraw on a clash so one sentence_text never appears twice in a post (it would make
        # locating ambiguous and break the "whitespace differs" guarantee).
        for _ in range(50):
            sentence = realise(rng, spec)
            if all(normalise(sentence.in_post) != normalise(other.in_post) for other in specials):
                break
        specials.append(sentence)

    if plan.kind == "long":
        target = rng.randint(LONG_MIN_WORDS + 60, LONG_MAX_WORDS - 120)
    else:
        target = rng.randint(60, 360)
    target -= sum(word_count(s.in_post) for s in specials)

    # One city, age, job... per post: the poster's background stays the same across fillers.
    preset = {name: rng.choice(SLOTS[name]) for name in PER_POST_SLOTS}
    fillers: list[Sentence] = []
    stream: list[str] = []
    words = 0
    while words < target:
        if not stream:
            stream = filler_stream(rng)
        (text,) = fill(rng, stream.pop(), preset=preset)
        fillers.append(Sentence(text, text))
        words += word_count(text)

    sentences = place(rng, plan, post_index, fillers, specials)
    return join(rng, sentences), sentences


def place(
    rng: random.Random, plan: PostPlan, post_index: int, fillers: list[Sentence], specials: list[Sentence]
) -> list[Sentence]:
    """Insert the planned sentences among the fillers.

    Long posts cycle through three layouts so that evidence lands early, in the middle and at the
    very end, including posts whose evidence only starts beyond a 512-token window.
    """
    sentences = list(fillers)
    annotated = [s for s in specials if s.labels]
    plain = [s for s in specials if not s.labels]
    if plan.kind == "long" and annotated:
        n = len(sentences)
        layout = post_index % 3
        for i, sentence in enumerate(annotated):
            if layout == 0:  # everything late: in the last quarter of the post
                pos = rng.randint(n * 3 // 4, n)
            elif layout == 1:  # spread: first near the start, last at the very end
                if i == 0:
                    pos = rng.randint(0, n // 5)
                elif i == len(annotated) - 1:
                    pos = n
                else:
                    pos = rng.randint(n // 3, 2 * n // 3)
            else:  # last one is the closing sentence, the others anywhere
                pos = n if i == len(annotated) - 1 else rng.randint(0, n)
            sentences.insert(min(pos, len(sentences)), sentence)
            n = len(sentences)
        for sentence in plain:
            sentences.insert(rng.randint(0, len(sentences)), sentence)
    else:
        for sentence in specials:
            sentences.insert(rng.randint(0, len(sentences)), sentence)
    return sentences


def join(rng: random.Random, sentences: list[Sentence]) -> str:
    """Join sentences into post text: spaces, with paragraph breaks in about half the posts."""
    paragraphs = rng.random() < 0.55
    parts: list[str] = []
    since_break = 0
    for i, sentence in enumerate(sentences):
        if i:
            since_break += 1
            if paragraphs and since_break >= 3 and rng.random() < 0.3:
                parts.append("\n\n" if rng.random() < 0.8 else "\n")
                since_break = 0
            else:
                parts.append(" ")
        parts.append(sentence.in_post)
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Planning: quotas decided up front so every awkward case is present at any post count
# --------------------------------------------------------------------------------------------
def new_post_id(rng: random.Random, taken: set[str]) -> str:
    """Draw a Reddit-looking id (``s_`` + 6 lowercase alphanumerics) not used yet."""
    while True:
        post_id = "s_" + "".join(rng.choice(ID_ALPHABET) for _ in range(6))
        if post_id not in taken:  # membership only: set order never influences the output
            taken.add(post_id)
            return post_id


def pick_criterion(rng: random.Random) -> str:
    """Draw one criterion with the sample's label weights."""
    return rng.choices(CRITERIA, weights=CRITERION_WEIGHTS, k=1)[0]


def plan_posts(rng: random.Random, n_posts: int) -> list[PostPlan]:
    """Decide every post's kind and the sentences it must contain."""
    n_none = round(n_posts * 0.25)
    n_long = max(1, round(n_posts / 24))
    n_absent_only = max(1, round(n_posts / 80))
    n_normal = n_posts - n_none - n_long - n_absent_only
    if n_normal < 1:
        raise ValueError(f"--posts must be at least {MIN_POSTS}")
    kinds = ["none"] * n_none + ["long"] * n_long + ["absent_only"] * n_absent_only + ["normal"] * n_normal
    rng.shuffle(kinds)

    taken: set[str] = set()
    plans = [PostPlan(new_post_id(rng, taken), kind) for kind in kinds]

    for plan in plans:
        if plan.kind in ("normal", "long"):
            n_evidence = (
                rng.randint(2, 5) if plan.kind == "long" else rng.choices((1, 2, 3, 4), (35, 30, 20, 15))[0]
            )
            chosen: list[str] = []
            for _ in range(n_evidence):
                criterion = pick_criterion(rng)
                # Mostly distinct criteria per post, but a repeated criterion happens in real posts.
                if criterion in chosen and rng.random() < 0.85:
                    criterion = pick_criterion(rng)
                chosen.append(criterion)
            plan.specs.extend(Spec("evidence", c) for c in chosen)
        elif plan.kind == "absent_only":
            plan.specs.extend(Spec("absent", pick_criterion(rng)) for _ in range(rng.randint(1, 2)))
        # Unannotated distractors: topic words with no evidence, also in posts without symptoms.
        if plan.kind == "none":
            n_distractors = rng.randint(0, 2)
        elif plan.kind == "long":
            n_distractors = rng.randint(1, 3)
        else:
            n_distractors = int(rng.random() < 0.3)
        plan.specs.extend(Spec("distractor", pick_criterion(rng)) for _ in range(n_distractors))

    symptomatic = [p for p in plans if p.kind in ("normal", "long")]

    def add_to_random_posts(count: int, kind: str) -> None:
        """Append ``count`` specs of ``kind`` to symptomatic posts, distinct posts first."""
        for i in range(count):
            if i % len(symptomatic) == 0:
                rng.shuffle(symptomatic)
            criterion = pick_criterion(rng) if kind == "absent" else ""
            symptomatic[i % len(symptomatic)].specs.append(Spec(kind, criterion))

    add_to_random_posts(max(1, round(n_posts / 24)), "two")
    add_to_random_posts(max(1, round(n_posts / 16)), "special")

    positive_rows = sum(
        2 if s.kind == "two" else 1
        for p in plans
        for s in p.specs
        if s.kind in ("evidence", "two", "special")
    )
    absent_rows = sum(1 for p in plans for s in p.specs if s.kind == "absent")
    # Status 0 at about 10% of all rows: absent / (positive + absent) ~= 0.1.
    add_to_random_posts(max(1, round(positive_rows / 9) - absent_rows), "absent")

    total_rows = positive_rows + sum(1 for p in plans for s in p.specs if s.kind == "absent")
    evidence_specs = [s for p in plans for s in p.specs if s.kind == "evidence"]
    for spec in rng.sample(evidence_specs, max(1, round(total_rows * 0.01))):
        spec.kind = "paraphrase"

    # Whitespace differences on ~4% of the annotated sentences, alternating the two variants.
    annotated_specs = [
        s for p in plans for s in p.specs if s.kind in ("evidence", "two", "special", "absent")
    ]
    for i, spec in enumerate(rng.sample(annotated_specs, max(2, round(len(annotated_specs) * 0.04)))):
        spec.whitespace = "double" if i % 2 == 0 else "newline"

    # Shuffle each post's specs so the kinds are not always in the same order within a post.
    for plan in plans:
        rng.shuffle(plan.specs)
    return plans


# --------------------------------------------------------------------------------------------
# Generation, checks and counts
# --------------------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """Collapse whitespace and case, the most forgiving exact match a locator would try."""
    return " ".join(text.split()).casefold()


Row = tuple[str, str, str, str, str, str]


def new_counts(n_posts: int) -> dict[str, int | float]:
    """Start the counts printed at the end, in print order."""
    counts: dict[str, int | float] = {"posts": n_posts, "annotation_rows": 0}
    for key in (
        "posts_without_rows",
        "posts_with_only_status0_rows",
        "long_posts",
        "long_posts_min_words",
        "long_posts_max_words",
        "long_posts_with_evidence_in_last_10pct",
        "long_posts_with_first_evidence_after_word_400",
        "status0_rows",
        "special_case_rows",
        "two_symptom_sentences",
        "sentence_text_exact_substring",
        "sentence_text_whitespace_mismatch",
        "sentence_text_not_locatable",
        "posts_with_non_ascii",
        "posts_with_double_quote",
        "posts_with_comma",
        "posts_with_newline",
        "rows_with_empty_explanation",
    ):
        counts[key] = 0
    return counts


def curl_apostrophes(text: str, sentences: list[Sentence]) -> str:
    """Turn straight apostrophes into curly ones in a post and its sentences, as phones type them."""
    for sentence in sentences:
        sentence.annotated = sentence.annotated.replace("'", "\u2019")
        sentence.in_post = sentence.in_post.replace("'", "\u2019")
    return text.replace("'", "\u2019")


def check_length(plan: PostPlan, words: int) -> None:
    """Fail loudly if a post's length does not match its planned kind (long or not)."""
    if plan.kind == "long" and not LONG_MIN_WORDS <= words <= LONG_MAX_WORDS:
        raise AssertionError(f"long post {plan.post_id} has {words} words")
    if plan.kind != "long" and words >= LONG_MIN_WORDS:
        raise AssertionError(f"post {plan.post_id} has {words} words but is not planned as long")


def annotate(
    plan: PostPlan, text: str, sentences: list[Sentence], counts: dict[str, int | float]
) -> list[Row]:
    """Build the annotation rows of one post and add what they contain to ``counts``."""
    rows: list[Row] = []
    evidence_offsets: list[int] = []
    search_from = 0
    for n, sentence in enumerate(sentences):
        # Sentences appear in order, so searching on from the previous one finds this one's copy.
        start = text.find(sentence.in_post, search_from)
        search_from = start + len(sentence.in_post)
        if not sentence.labels:
            continue
        evidence_offsets.append(word_count(text[:start]))
        if sentence.annotated in text:
            counts["sentence_text_exact_substring"] += 1
        elif normalise(sentence.annotated) in normalise(text):
            counts["sentence_text_whitespace_mismatch"] += 1
        else:
            counts["sentence_text_not_locatable"] += 1
        counts["two_symptom_sentences"] += len(sentence.labels) == 2
        for symptom, status, why in sentence.labels:
            rows.append((plan.post_id, f"{plan.post_id}_{n}", sentence.annotated, symptom, str(status), why))
            counts["status0_rows"] += status == 0
            counts["special_case_rows"] += symptom == SPECIAL_CASE
            counts["rows_with_empty_explanation"] += why == ""

    statuses = [row[4] for row in rows]
    counts["posts_without_rows"] += not rows
    counts["posts_with_only_status0_rows"] += bool(rows) and "1" not in statuses
    if plan.kind == "long":
        words = word_count(text)
        counts["long_posts_with_evidence_in_last_10pct"] += max(evidence_offsets) >= 0.9 * words
        counts["long_posts_with_first_evidence_after_word_400"] += min(evidence_offsets) > WINDOW_WORDS
    counts["posts_with_non_ascii"] += not text.isascii()
    counts["posts_with_double_quote"] += '"' in text or "\u201c" in text
    counts["posts_with_comma"] += "," in text
    counts["posts_with_newline"] += "\n" in text
    return rows


def summarise(counts: dict[str, int | float], words: list[int], rows: list[Row]) -> None:
    """Add the length statistics and per-label row counts once every post is drawn."""
    long_words = [w for w in words if w >= LONG_MIN_WORDS]
    short_words = [w for w in words if w < LONG_MIN_WORDS]
    counts["annotation_rows"] = len(rows)
    counts["long_posts"] = len(long_words)
    counts["long_posts_min_words"] = min(long_words)
    counts["long_posts_max_words"] = max(long_words)
    counts["mean_words_all_posts"] = round(sum(words) / len(words), 1)
    counts["mean_words_excluding_long"] = round(sum(short_words) / len(short_words), 1)
    counts["max_words"] = max(words)
    for label in (*CRITERIA, SPECIAL_CASE):
        counts[f"status1_rows_{label}"] = sum(1 for r in rows if r[3] == label and r[4] == "1")


def generate(out_dir: Path, seed: int = DEFAULT_SEED, n_posts: int = DEFAULT_POSTS) -> dict[str, int | float]:
    """Write both CSV files into ``out_dir`` and return the counts of what they contain.

    Args:
        out_dir: folder to write into; created if missing.
        seed: seed of the only random stream used; same seed, same bytes.
        n_posts: number of posts; at least ``MIN_POSTS`` so every awkward case fits.

    Returns:
        The counts printed by ``main``, in print order.
    """
    if n_posts < MIN_POSTS:
        raise ValueError(f"--posts must be at least {MIN_POSTS}, got {n_posts}")
    rng = random.Random(seed)
    plans = plan_posts(rng, n_posts)

    counts = new_counts(n_posts)
    post_rows: list[tuple[str, str]] = []
    annotation_rows: list[Row] = []
    words: list[int] = []
    for index, plan in enumerate(plans):
        text, sentences = build_post(rng, plan, index)
        if rng.random() < 0.15:
            text = curl_apostrophes(text, sentences)
        words.append(word_count(text))
        check_length(plan, words[-1])
        post_rows.append((plan.post_id, text))
        annotation_rows.extend(annotate(plan, text, sentences, counts))
    summarise(counts, words, annotation_rows)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / POSTS_FILE, POSTS_HEADER, post_rows)
    write_csv(out_dir / ANNOTATIONS_FILE, ANNOTATIONS_HEADER, annotation_rows)
    counts["posts_csv_bytes"] = (out_dir / POSTS_FILE).stat().st_size
    counts["annotations_csv_bytes"] = (out_dir / ANNOTATIONS_FILE).stat().st_size
    return counts


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write header + rows as UTF-8 CSV with minimal quoting and LF line ends.

    A fixed LF terminator keeps the bytes identical on every platform (the csv default is CRLF),
    which the reproducibility test relies on.
    """
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Generate the SYNTHETIC RedSM5-shaped sample (not real data)."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--posts",
        type=int,
        default=DEFAULT_POSTS,
        help=f"number of posts, >= {MIN_POSTS} (default {DEFAULT_POSTS})",
    )
    args = parser.parse_args(argv)
    if args.posts < MIN_POSTS:
        parser.error(f"--posts must be at least {MIN_POSTS}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate the sample and print what it contains."""
    args = parse_args(argv)
    counts = generate(args.out, args.seed, args.posts)
    print(f"SYNTHETIC RedSM5-shaped sample written to {args.out} (seed {args.seed}); not real Reddit data.")
    width = max(len(key) for key in counts)
    for key, value in counts.items():
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
