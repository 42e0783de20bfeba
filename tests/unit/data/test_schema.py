"""dsm5_hpo.data.schema: raw CSV rows -> validated records, or a DataError naming file, row and column."""

from __future__ import annotations

import pytest

from dsm5_hpo.data.criteria import CRITERIA, SPECIAL_CASE
from dsm5_hpo.data.schema import (
    ANNOTATION_COLUMNS,
    POST_COLUMNS,
    Annotation,
    validate_annotations,
    validate_posts,
)
from dsm5_hpo.errors import DataError

POSTS_WHERE = "Data/x/redsm5_posts.csv"
ANNOTATIONS_WHERE = "Data/x/redsm5_annotations.csv"
POSTS = {"p1": "I feel sad. I can't sleep.", "p2": "Nothing to report."}


def annotation_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "post_id": "p1",
        "sentence_id": "p1_0",
        "sentence_text": "I feel sad.",
        "DSM5_symptom": "DEPRESSED_MOOD",
        "status": "1",
        "explanation": "Low mood.",
    }
    row.update(changes)
    return row


def annotations_error(*rows: dict[str, object]) -> str:
    with pytest.raises(DataError) as caught:
        validate_annotations(list(rows), ANNOTATION_COLUMNS, POSTS, ANNOTATIONS_WHERE)
    return str(caught.value)


def posts_error(*rows: dict[str, object], columns: tuple[str, ...] = POST_COLUMNS) -> str:
    with pytest.raises(DataError) as caught:
        validate_posts(list(rows), columns, POSTS_WHERE)
    return str(caught.value)


# --- posts ------------------------------------------------------------------------------------


def test_validate_posts_keeps_file_order_and_text_verbatim() -> None:
    rows = [{"post_id": " p2 ", "text": "  spaced\ntext "}, {"post_id": "p1", "text": "x"}]
    posts = validate_posts(rows, POST_COLUMNS, POSTS_WHERE)
    assert list(posts) == ["p2", "p1"]  # ids stripped, file order kept
    assert posts["p2"] == "  spaced\ntext "  # text untouched: spans index it


def test_validate_posts_accepts_extra_columns_and_non_string_cells() -> None:
    rows = [{"post_id": 123, "text": "numeric id from a hub column", "extra": "x"}]
    posts = validate_posts(rows, ("post_id", "text", "extra"), POSTS_WHERE)
    assert posts == {"123": "numeric id from a hub column"}


@pytest.mark.parametrize("columns", [("post_id",), ("text",), (), None])
def test_validate_posts_missing_column_names_file_and_column(columns: tuple[str, ...] | None) -> None:
    with pytest.raises(DataError) as caught:
        validate_posts([{"post_id": "p1", "text": "x"}], columns, POSTS_WHERE)
    message = str(caught.value)
    assert message.startswith(POSTS_WHERE)
    assert "missing column" in message
    for column in POST_COLUMNS:
        if column not in (columns or ()):
            assert repr(column) in message


def test_validate_posts_empty_text_names_row_and_column() -> None:
    message = posts_error({"post_id": "p1", "text": "ok"}, {"post_id": "p2", "text": "  \n "})
    assert message.startswith(POSTS_WHERE)
    assert "data row 2" in message
    assert "column 'text'" in message
    assert "'p2'" in message


def test_validate_posts_missing_text_cell_is_empty_text() -> None:
    message = posts_error({"post_id": "p1", "text": None})
    assert "data row 1, column 'text'" in message


@pytest.mark.parametrize("post_id", ["", "   ", None])
def test_validate_posts_empty_post_id(post_id: str | None) -> None:
    message = posts_error({"post_id": "p1", "text": "a"}, {"post_id": post_id, "text": "b"})
    assert message.startswith(POSTS_WHERE)
    assert "data row 2, column 'post_id'" in message
    assert "empty post id" in message


def test_validate_posts_duplicate_post_id() -> None:
    message = posts_error(
        {"post_id": "p1", "text": "a"}, {"post_id": "p2", "text": "b"}, {"post_id": " p1", "text": "c"}
    )
    assert message.startswith(POSTS_WHERE)
    assert "data row 3, column 'post_id'" in message
    assert "duplicate post_id 'p1'" in message


def test_validate_posts_header_but_no_rows() -> None:
    message = posts_error()
    assert message.startswith(POSTS_WHERE)
    assert "header but no rows" in message


# --- annotations ------------------------------------------------------------------------------


def test_validate_annotations_happy_path() -> None:
    rows = [
        annotation_row(),
        annotation_row(
            sentence_id="p1_1", sentence_text="I can't sleep.", DSM5_symptom="SLEEP_ISSUES", status="0"
        ),
        annotation_row(post_id="p2", sentence_id="p2_0", DSM5_symptom=SPECIAL_CASE, explanation=None),
    ]
    records = validate_annotations(rows, ANNOTATION_COLUMNS, POSTS, ANNOTATIONS_WHERE)
    assert records == (
        Annotation("p1", "p1_0", "I feel sad.", "DEPRESSED_MOOD", 1, "Low mood."),
        Annotation("p1", "p1_1", "I can't sleep.", "SLEEP_ISSUES", 0, "Low mood."),
        Annotation("p2", "p2_0", "I feel sad.", SPECIAL_CASE, 1, ""),
    )


def test_validate_annotations_accepts_every_known_label() -> None:
    rows = [annotation_row(DSM5_symptom=label) for label in (*CRITERIA, SPECIAL_CASE)]
    records = validate_annotations(rows, ANNOTATION_COLUMNS, POSTS, ANNOTATIONS_WHERE)
    assert [r.symptom for r in records] == [*CRITERIA, SPECIAL_CASE]


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", 1), ("0", 0), (" 1 ", 1), ("1.0", 1), ("0.0", 0), (1, 1), (0, 0)]
)
def test_validate_annotations_status_forms(raw: object, expected: int) -> None:
    (record,) = validate_annotations(
        [annotation_row(status=raw)], ANNOTATION_COLUMNS, POSTS, ANNOTATIONS_WHERE
    )
    assert record.status == expected


def test_validate_annotations_no_rows_is_allowed() -> None:
    # Posts without any annotation are normal (no symptom); an empty annotations file is valid schema.
    assert validate_annotations([], ANNOTATION_COLUMNS, POSTS, ANNOTATIONS_WHERE) == ()


@pytest.mark.parametrize("missing", ANNOTATION_COLUMNS)
def test_validate_annotations_missing_column(missing: str) -> None:
    columns = [c for c in ANNOTATION_COLUMNS if c != missing]
    with pytest.raises(DataError) as caught:
        validate_annotations([annotation_row()], columns, POSTS, ANNOTATIONS_WHERE)
    message = str(caught.value)
    assert message.startswith(ANNOTATIONS_WHERE)
    assert f"missing column(s) {missing!r}" in message


@pytest.mark.parametrize("label", ["DEPRESSION", "depressed_mood", "", "SPECIAL CASE"])
def test_validate_annotations_unknown_symptom_label(label: str) -> None:
    message = annotations_error(annotation_row(), annotation_row(DSM5_symptom=label))
    assert message.startswith(ANNOTATIONS_WHERE)
    assert "data row 2, column 'DSM5_symptom'" in message
    assert f"unknown symptom label {label!r}" in message
    assert "DEPRESSED_MOOD" in message  # says what is expected


def test_validate_annotations_unknown_post() -> None:
    message = annotations_error(annotation_row(), annotation_row(post_id="ghost"))
    assert message.startswith(ANNOTATIONS_WHERE)
    assert "data row 2, column 'post_id'" in message
    assert "unknown post 'ghost'" in message
    assert "redsm5_posts.csv" in message


@pytest.mark.parametrize("status", ["2", "-1", "", "  ", "yes", "1.5", "0.5", "inf", "nan", None])
def test_validate_annotations_status_not_0_or_1(status: str | None) -> None:
    message = annotations_error(annotation_row(status=status))
    assert message.startswith(ANNOTATIONS_WHERE)
    assert "data row 1, column 'status'" in message
    assert "must be 0 or 1" in message


@pytest.mark.parametrize("sentence", ["", "   ", "\n", None])
def test_validate_annotations_empty_sentence_text(sentence: str | None) -> None:
    message = annotations_error(annotation_row(), annotation_row(), annotation_row(sentence_text=sentence))
    assert message.startswith(ANNOTATIONS_WHERE)
    assert "data row 3, column 'sentence_text'" in message
    assert "empty sentence" in message
