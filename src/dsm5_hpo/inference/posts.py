"""Posts to predict on, read from CSV, JSON Lines or plain text (a file or standard input).

    CSV    a header row with a ``text`` column (``post_id`` optional), like RedSM5's posts file
    JSONL  one object per line with ``text`` (``post_id`` optional); blank lines are skipped
    text   one post per line; blank lines are skipped

Pure: text in, :class:`Post` records out. Every problem is a :class:`DataError` naming the
source, the line and the fix, raised before any model is loaded, so a bad file costs nothing.
A post without ``post_id`` gets ``line-N`` (N = its line in the input, see :attr:`Post.line`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsm5_hpo.errors import DataError

FORMATS: tuple[str, ...] = ("auto", "csv", "jsonl", "text")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text"}
TEXT_KEYS: tuple[str, ...] = ("text", "post", "selftext")
"""Column / field names accepted for the post text, first found wins."""


@dataclass(frozen=True)
class Post:
    post_id: str
    text: str
    line: int
    """The post's line in the input (1-based; a CSV record spanning lines: its last), for messages."""


def detect_format(name: str, content: str) -> str:
    """The format of ``content`` read from ``name`` ('-' = stdin): by extension, else by sniffing."""
    by_extension = _EXTENSIONS.get(Path(name).suffix.lower()) if name != "-" else None
    if by_extension:
        return by_extension
    first = next((line for line in content.splitlines() if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    header = next(csv.reader([first]), [])
    if any(cell.strip().lower() in TEXT_KEYS for cell in header):
        return "csv"
    return "text"


def _text_key(keys: Sequence[str], where: str) -> str:
    lowered = {k.strip().lower(): k for k in keys if isinstance(k, str)}
    for wanted in TEXT_KEYS:
        if wanted in lowered:
            return lowered[wanted]
    raise DataError(
        f"{where}: no 'text' column/field (found {sorted(lowered) or 'none'}); "
        "each post needs its text under 'text' (and optionally an id under 'post_id')"
    )


def _post_id(value: object, line: int) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"line-{line}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"line {line}: post_id must be a string or an integer, not {value!r}")
    return str(value).strip()


def _read_csv(content: str, name: str) -> list[Post]:
    reader = csv.DictReader(io.StringIO(content, newline=""), strict=True)
    try:
        fields = reader.fieldnames
    except csv.Error as error:
        raise DataError(f"{name}: not a readable CSV header ({error})") from error
    if not fields:
        return []
    text_key = _text_key(fields, f"{name} (CSV header)")
    id_key = next((k for k in fields if k.strip().lower() == "post_id"), None)
    posts = []
    try:
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than header columns: a quoting problem, not a post
                raise DataError(
                    f"{name} line {line}: {len(fields) + len(row[None])} cells for {len(fields)} columns; "
                    "quote fields that contain commas"
                )
            text = row.get(text_key)
            if text is None:
                raise DataError(f"{name} line {line}: the row has no '{text_key}' cell")
            posts.append(Post(_post_id(row.get(id_key) if id_key else None, line), text, line))
    except csv.Error as error:
        raise DataError(f"{name} line {reader.line_num}: malformed CSV ({error})") from error
    return posts


def _read_jsonl(content: str, name: str) -> list[Post]:
    posts = []
    for line, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{name} line {line}: not valid JSON ({error.msg} at column {error.colno}); "
                "JSON Lines wants one object per line"
            ) from error
        if not isinstance(record, dict):
            raise DataError(
                f"{name} line {line}: expected a JSON object with 'text', got {type(record).__name__}"
            )
        text = record[_text_key(list(record), f"{name} line {line}")]
        if not isinstance(text, str):
            raise DataError(f"{name} line {line}: 'text' must be a string, not {type(text).__name__}")
        posts.append(Post(_post_id(record.get("post_id"), line), text, line))
    return posts


def _read_text(content: str) -> list[Post]:
    return [
        Post(f"line-{line}", raw, line)
        for line, raw in enumerate(content.splitlines(), start=1)
        if raw.strip()
    ]


def parse_posts(content: str, name: str, fmt: str = "auto") -> list[Post]:
    """Posts of ``content`` (read from ``name``) in input order."""
    if fmt not in FORMATS:
        raise DataError(f"input format {fmt!r} is not one of {', '.join(FORMATS)}")
    resolved = detect_format(name, content) if fmt == "auto" else fmt
    if resolved == "csv":
        return _read_csv(content, name)
    if resolved == "jsonl":
        return _read_jsonl(content, name)
    return _read_text(content)


def read_posts(source: Path | str, fmt: str = "auto", *, stdin: io.TextIOBase | None = None) -> list[Post]:
    """Read and parse ``source`` ('-' = ``stdin``, default sys.stdin)."""
    name = str(source)
    if name == "-":
        import sys

        stream = stdin if stdin is not None else sys.stdin
        content = stream.read()
    else:
        path = Path(source)
        try:
            content = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a BOM before the header
        except FileNotFoundError as error:
            raise DataError(f"input file {path} not found; pass --input posts.csv|posts.jsonl|-") from error
        except IsADirectoryError as error:
            raise DataError(f"input {path} is a directory; pass a CSV or JSONL file") from error
        except UnicodeDecodeError as error:
            raise DataError(
                f"input file {path} is not UTF-8 text ({error.reason} at byte {error.start})"
            ) from error
        except OSError as error:
            raise DataError(f"input file {path} cannot be read: {error}") from error
    posts = parse_posts(content, name, fmt)
    if not posts:
        raise DataError(f"{name} holds no posts; give at least one post with a 'text'")
    return posts
