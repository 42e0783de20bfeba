"""Reading posts to predict on: CSV, JSON Lines, plain text, stdin; every bad input a DataError."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dsm5_hpo.errors import DataError
from dsm5_hpo.inference.posts import Post, detect_format, parse_posts, read_posts


def test_csv_with_ids_quotes_newlines_and_unicode() -> None:
    content = 'post_id,text\np1,"I can\'t sleep, at all"\np2,"two\nlines"\np3,Ça va mal 😞\n'
    posts = parse_posts(content, "posts.csv")
    assert posts == [
        Post("p1", "I can't sleep, at all", 2),
        Post("p2", "two\nlines", 4),  # a CSV record spanning lines: its last
        Post("p3", "Ça va mal 😞", 5),
    ]


def test_csv_blank_lines_are_not_posts_but_an_empty_text_cell_is() -> None:
    posts = parse_posts('text\nfirst\n\n\nsecond\n""\n', "posts.csv")
    assert [p.text for p in posts] == ["first", "second", ""]
    assert [p.post_id for p in posts] == ["line-2", "line-5", "line-6"]


def test_csv_without_a_text_column_names_the_columns_and_the_fix() -> None:
    with pytest.raises(DataError, match=r"no 'text' column.*\['body', 'id'\]"):
        parse_posts("id,body\n1,hello\n", "posts.csv")


def test_csv_row_with_more_cells_than_columns_is_refused_with_its_line() -> None:
    with pytest.raises(DataError, match=r"posts.csv line 3: 3 cells for 2 columns"):
        parse_posts("post_id,text\na,fine\nb,not, quoted\n", "posts.csv")


def test_jsonl_ids_blank_lines_and_integer_ids() -> None:
    content = '{"post_id": "a", "text": "hello"}\n\n{"post_id": 7, "text": "x"}\n{"text": "no id"}\n'
    posts = parse_posts(content, "in.jsonl")
    assert [(p.post_id, p.text) for p in posts] == [("a", "hello"), ("7", "x"), ("line-4", "no id")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "a"', r"in.jsonl line 2: not valid JSON"),
        ('["text"]', r"in.jsonl line 2: expected a JSON object"),
        ('{"body": "a"}', r"in.jsonl line 2: no 'text' column/field"),
        ('{"text": 3}', r"in.jsonl line 2: 'text' must be a string"),
        ('{"text": "a", "post_id": [1]}', r"line 2: post_id must be a string or an integer"),
    ],
)
def test_jsonl_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_posts('{"text": "ok"}\n' + line + "\n", "in.jsonl")


def test_plain_text_is_one_post_per_line() -> None:
    assert [(p.post_id, p.text) for p in parse_posts("one\n\n two \n", "posts.txt")] == [
        ("line-1", "one"),
        ("line-3", " two "),
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.csv", "anything", "csv"),
        ("a.JSONL", "anything", "jsonl"),
        ("a.ndjson", "x", "jsonl"),
        ("a.txt", '{"text": 1}', "text"),
        ("-", '\n {"text": "a"}', "jsonl"),
        ("-", "post_id,text\n1,a", "csv"),
        ("-", "just a post, with a comma", "text"),
        ("posts", "Text\nhello", "csv"),
    ],
)
def test_format_detection(name: str, content: str, expected: str) -> None:
    assert detect_format(name, content) == expected


def test_read_posts_from_stdin_and_from_a_file_with_a_bom(tmp_path: Path) -> None:
    assert read_posts("-", stdin=io.StringIO('{"text": "from stdin"}\n'))[0].text == "from stdin"  # type: ignore[arg-type]
    path = tmp_path / "posts.csv"
    path.write_text("\ufeffpost_id,text\nx,hello\n", encoding="utf-8")
    assert read_posts(path) == [Post("x", "hello", 2)]


def test_read_posts_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found; pass --input"):
        read_posts(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_posts(tmp_path)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_posts(latin)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no posts"):
        read_posts(empty)
    with pytest.raises(DataError, match="input format 'xml'"):
        parse_posts("a", "a.txt", "xml")
