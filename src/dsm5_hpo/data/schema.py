"""RedSM5 schema checks: turn raw CSV rows into validated records, or fail naming file, row, column.

Pure: rows come in as dictionaries, records go out; reading files is ``sources.py``'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dsm5_hpo.data.criteria import KNOWN_LABELS
from dsm5_hpo.errors import DataError

POSTS_FILE = "redsm5_posts.csv"
ANNOTATIONS_FILE = "redsm5_annotations.csv"
POST_COLUMNS: tuple[str, ...] = ("post_id", "text")
ANNOTATION_COLUMNS: tuple[str, ...] = (
    "post_id",
    "sentence_id",
    "sentence_text",
    "DSM5_symptom",
    "status",
    "explanation",
)


@dataclass(frozen=True)
class Annotation:
    """One row of redsm5_annotations.csv: a sentence of a post, one symptom, present or not."""

    post_id: str
    sentence_id: str
    sentence_text: str
    symptom: str
    status: int
    explanation: str


@dataclass(frozen=True)
class RedSM5:
    """The validated dataset: posts in file order, and every annotation row."""

    posts: dict[str, str]
    annotations: tuple[Annotation, ...]
    source: str
    """Where the rows came from: a local folder or hub id."""
    revision: str
    """Content identity: the hub revision, or SHA-256 of the two local files."""


def _check_columns(columns: Sequence[str] | None, required: Sequence[str], where: str) -> None:
    present = list(columns or [])
    missing = [c for c in required if c not in present]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(repr(c) for c in missing)}; found {present}. "
            f"The RedSM5 schema needs {', '.join(required)}."
        )


def _cell(row: Mapping[str, object], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def _parse_status(raw: str) -> int | None:
    """0 or 1; "0.0"/"1.0" too (a hub column read as float), anything else (1.5, inf, nan, '') is None."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def validate_posts(
    rows: Iterable[Mapping[str, object]], columns: Sequence[str] | None, where: str
) -> dict[str, str]:
    """Posts by id, in file order. Rejects empty ids or texts and duplicate ids."""
    _check_columns(columns, POST_COLUMNS, where)
    posts: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        post_id = _cell(row, "post_id").strip()
        text = _cell(row, "text")
        if not post_id:
            raise DataError(f"{where}: data row {number}, column 'post_id': empty post id")
        if not text.strip():
            raise DataError(f"{where}: data row {number}, column 'text': empty text for post {post_id!r}")
        if post_id in posts:
            raise DataError(f"{where}: data row {number}, column 'post_id': duplicate post_id {post_id!r}")
        posts[post_id] = text
    if not posts:
        raise DataError(f"{where}: no posts; the file has a header but no rows")
    return posts


def validate_annotations(
    rows: Iterable[Mapping[str, object]], columns: Sequence[str] | None, posts: Mapping[str, str], where: str
) -> tuple[Annotation, ...]:
    """Annotation records; every row must name a known post, a known label and status 0 or 1."""
    _check_columns(columns, ANNOTATION_COLUMNS, where)
    records: list[Annotation] = []
    for number, row in enumerate(rows, start=1):
        post_id = _cell(row, "post_id").strip()
        if post_id not in posts:
            raise DataError(
                f"{where}: data row {number}, column 'post_id': annotation for unknown post {post_id!r} "
                f"(not in {POSTS_FILE})"
            )
        symptom = _cell(row, "DSM5_symptom").strip()
        if symptom not in KNOWN_LABELS:
            raise DataError(
                f"{where}: data row {number}, column 'DSM5_symptom': unknown symptom label {symptom!r}; "
                f"expected one of {', '.join(sorted(KNOWN_LABELS))}"
            )
        raw_status = _cell(row, "status").strip()
        status = _parse_status(raw_status)
        if status is None:
            raise DataError(
                f"{where}: data row {number}, column 'status': must be 0 or 1, got {raw_status!r}"
            )
        sentence_text = _cell(row, "sentence_text")
        if not sentence_text.strip():
            raise DataError(f"{where}: data row {number}, column 'sentence_text': empty sentence")
        records.append(
            Annotation(
                post_id=post_id,
                sentence_id=_cell(row, "sentence_id").strip(),
                sentence_text=sentence_text,
                symptom=symptom,
                status=status,
                explanation=_cell(row, "explanation"),
            )
        )
    return tuple(records)
