"""dsm5_hpo.data.sources: local CSVs and the hub (through an injected fake loader: no network).

Time is injected too: retries record their delays instead of sleeping.
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from conftest import captured_logs
from dsm5_hpo.config import DataConfig, SplitConfig
from dsm5_hpo.data.criteria import CRITERIA
from dsm5_hpo.data.pairs import build_examples
from dsm5_hpo.data.schema import ANNOTATION_COLUMNS, ANNOTATIONS_FILE, POST_COLUMNS, POSTS_FILE
from dsm5_hpo.data.sources import Rows, load_hub, load_local, load_redsm5
from dsm5_hpo.data.splits import split_posts
from dsm5_hpo.errors import DataError

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "Data" / "redsm5_sample"
SAMPLE_POSTS = 360
SAMPLE_ANNOTATIONS = 732
HUB_ID = "irlab-udc/redsm5"


# --- helpers ----------------------------------------------------------------------------------


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def write_dataset(folder: Path) -> Path:
    """A small valid dataset whose texts need quoting: commas, quotes, line breaks, non-ASCII."""
    write_csv(
        folder / POSTS_FILE,
        POST_COLUMNS,
        [
            ("a1", 'First line, with a comma.\nSecond line says "hi".\n\nThird: café ✓'),
            ("a2", "No symptoms here."),
        ],
    )
    write_csv(
        folder / ANNOTATIONS_FILE,
        ANNOTATION_COLUMNS,
        [("a1", "a1_1", 'Second line says "hi".', "DEPRESSED_MOOD", 1, "Quoted, with comma.")],
    )
    return folder


@pytest.fixture
def source_logs() -> Iterator[list[logging.LogRecord]]:
    with captured_logs("dsm5_hpo.data.sources") as records:
        yield records


def read_rows(path: Path) -> Rows:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader), list(reader.fieldnames or [])


def hub_rows(folder: Path = SAMPLE_DIR) -> tuple[Rows, Rows]:
    """The sample as ``datasets`` would hand it over: typed columns, None for empty cells, other row order."""
    posts, post_columns = read_rows(folder / POSTS_FILE)
    annotations, annotation_columns = read_rows(folder / ANNOTATIONS_FILE)
    typed = [
        {**row, "status": int(row["status"]), "explanation": row["explanation"] or None}
        for row in annotations
    ]
    return (posts[::-1], post_columns), (typed[::-1], annotation_columns)


class GatedRepoError(Exception):
    """Named like huggingface_hub's: no access to a gated dataset, another attempt cannot help."""


class FakeLoader:
    """Plays back ``outcomes`` (an exception to raise or rows to return), one per call, recording calls."""

    def __init__(self, *outcomes: BaseException | tuple[Rows, Rows]) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str, bool]] = []

    def __call__(self, hub_id: str, revision: str, local_files_only: bool) -> tuple[Rows, Rows]:
        self.calls.append((hub_id, revision, local_files_only))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def hub_config(**changes: Any) -> DataConfig:
    return DataConfig(source="hub", local_dir=str(SAMPLE_DIR), hub_id=HUB_ID, **changes)


# --- local files ------------------------------------------------------------------------------


def test_load_local_bundled_sample() -> None:
    dataset = load_local(SAMPLE_DIR)
    assert len(dataset.posts) == SAMPLE_POSTS
    assert len(dataset.annotations) == SAMPLE_ANNOTATIONS
    assert sum(a.status == 0 for a in dataset.annotations) == 73
    assert dataset.source == f"local:{SAMPLE_DIR}"
    assert dataset.revision.startswith("sha256:")
    assert len(dataset.revision) == len("sha256:") + 64
    assert all(a.post_id in dataset.posts for a in dataset.annotations)


def test_load_local_is_stable_across_loads() -> None:
    first, second = load_local(SAMPLE_DIR), load_local(SAMPLE_DIR)
    assert first.revision == second.revision
    assert first.posts == second.posts
    assert list(first.posts) == list(second.posts)
    assert first.annotations == second.annotations


def test_load_local_reads_quoted_newlines_commas_and_quotes(tmp_path: Path) -> None:
    dataset = load_local(write_dataset(tmp_path / "data"))
    assert list(dataset.posts) == ["a1", "a2"]
    assert dataset.posts["a1"] == 'First line, with a comma.\nSecond line says "hi".\n\nThird: café ✓'
    (row,) = dataset.annotations
    assert row.sentence_text == 'Second line says "hi".'
    assert row.explanation == "Quoted, with comma."
    assert row.status == 1


def test_revision_follows_file_content(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    before = load_local(folder).revision
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert load_local(copy).revision == before  # content, not location
    with (folder / POSTS_FILE).open("a", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerow(("a3", "One more post."))
    assert load_local(folder).revision != before


def test_load_local_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    posts = folder / POSTS_FILE
    posts.write_bytes(b"\xef\xbb\xbf" + posts.read_bytes())  # Excel's "CSV UTF-8"
    assert list(load_local(folder).posts) == ["a1", "a2"]


def test_missing_folder_says_where_to_put_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_local(tmp_path / "nowhere")
    message = str(caught.value)
    assert str(tmp_path / "nowhere") in message
    assert "does not exist" in message
    assert POSTS_FILE in message and ANNOTATIONS_FILE in message
    assert "data.local_dir" in message


@pytest.mark.parametrize("missing", [POSTS_FILE, ANNOTATIONS_FILE])
def test_missing_file_says_what_to_do(tmp_path: Path, missing: str) -> None:
    folder = write_dataset(tmp_path / "data")
    (folder / missing).unlink()
    with pytest.raises(DataError) as caught:
        load_local(folder)
    message = str(caught.value)
    assert str(folder / missing) in message
    assert "file not found" in message
    assert "Data/README.md" in message
    assert "data=redsm5_sample" in message


def test_non_utf8_file_says_to_resave(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    (folder / POSTS_FILE).write_bytes("post_id,text\nb1,caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError) as caught:
        load_local(folder)
    message = str(caught.value)
    assert str(folder / POSTS_FILE) in message
    assert "not UTF-8" in message
    assert "re-save the file as UTF-8" in message


def test_unclosed_quote_is_malformed_not_swallowed(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    # Row b1 opens a quote it never closes: a lenient reader would read b2 and b3 as b1's text.
    (folder / POSTS_FILE).write_text(
        'post_id,text\nb1,"starts quoted but never ends\nb2,second post\nb3,third post\n', encoding="utf-8"
    )
    with pytest.raises(DataError) as caught:
        load_local(folder)
    message = str(caught.value)
    assert str(folder / POSTS_FILE) in message
    assert "malformed CSV in the record starting at line 2" in message
    assert "check the quoting" in message


def test_text_after_closing_quote_is_malformed(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    (folder / POSTS_FILE).write_text('post_id,text\nb1,"quoted" then more\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"malformed CSV.*quot"):
        load_local(folder)


def test_unquoted_comma_splitting_a_field_is_malformed(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    (folder / POSTS_FILE).write_text("post_id,text\nb1,fine\nb2,one, two\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_local(folder)
    message = str(caught.value)
    assert "malformed CSV in the record ending at line 3" in message
    assert "quote fields that contain commas" in message


def test_schema_errors_name_the_file(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    write_csv(folder / ANNOTATIONS_FILE, ANNOTATION_COLUMNS, [("a1", "a1_0", "x", "NOT_A_LABEL", 1, "")])
    with pytest.raises(DataError) as caught:
        load_local(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder}/{ANNOTATIONS_FILE}: data row 1, column 'DSM5_symptom'")


def test_header_only_posts_file(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    write_csv(folder / POSTS_FILE, POST_COLUMNS, [])
    with pytest.raises(DataError, match="header but no rows"):
        load_local(folder)


def test_empty_posts_file_reports_missing_columns(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    (folder / POSTS_FILE).write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing column\(s\) 'post_id', 'text'"):
        load_local(folder)


# --- hub: cache, retries, permanent errors ------------------------------------------------------


def test_load_hub_cache_hit_needs_one_offline_call() -> None:
    loader, sleeps = FakeLoader(hub_rows()), Sleeps()
    dataset = load_hub(HUB_ID, "abc123", loader=loader, sleep=sleeps)
    assert loader.calls == [(HUB_ID, "abc123", True)]
    assert sleeps == []
    assert len(dataset.posts) == SAMPLE_POSTS
    assert len(dataset.annotations) == SAMPLE_ANNOTATIONS
    assert dataset.source == f"hub:{HUB_ID}"
    assert dataset.revision == "abc123"


def test_load_hub_unpinned_revision_is_main() -> None:
    assert load_hub(HUB_ID, "", loader=FakeLoader(hub_rows()), sleep=Sleeps()).revision == "main"


def test_load_hub_cache_miss_then_transient_errors_back_off() -> None:
    loader = FakeLoader(
        FileNotFoundError("not cached"),
        ConnectionError("reset"),
        TimeoutError("slow"),
        ConnectionError("reset"),
        OSError("502 Bad Gateway"),
        hub_rows(),
    )
    sleeps = Sleeps()
    dataset = load_hub(HUB_ID, "", loader=loader, sleep=sleeps)
    assert sleeps == [1, 2, 4, 8]
    assert [offline for _, _, offline in loader.calls] == [True, False, False, False, False, False]
    assert len(dataset.posts) == SAMPLE_POSTS


def test_load_hub_raises_the_last_hub_error_when_every_attempt_fails() -> None:
    loader = FakeLoader(
        FileNotFoundError("not cached"), *[ConnectionError(f"attempt {i}") for i in range(1, 6)]
    )
    sleeps = Sleeps()
    with pytest.raises(ConnectionError, match="attempt 5"):
        load_hub(HUB_ID, "", loader=loader, sleep=sleeps)
    assert sleeps == [1, 2, 4, 8]
    assert len(loader.calls) == 6


@pytest.mark.parametrize(
    "error",
    [GatedRepoError("accept the terms first"), RuntimeError("wrapped")],
    ids=["gated", "gated-in-cause"],
)
def test_load_hub_permanent_error_is_not_retried(error: Exception) -> None:
    if not isinstance(error, GatedRepoError):
        error.__cause__ = GatedRepoError("accept the terms first")
    loader, sleeps = FakeLoader(FileNotFoundError("not cached"), error), Sleeps()
    with pytest.raises(type(error)):
        load_hub(HUB_ID, "", loader=loader, sleep=sleeps)
    assert sleeps == []
    assert loader.calls == [(HUB_ID, "", True), (HUB_ID, "", False)]


# --- load_redsm5: which source, and falling back -------------------------------------------------


def test_load_redsm5_local_never_touches_the_hub() -> None:
    loader = FakeLoader()
    dataset = load_redsm5(DataConfig(local_dir=str(SAMPLE_DIR)), hub_loader=loader, environ={})
    assert loader.calls == []
    assert dataset.source == f"local:{SAMPLE_DIR}"


def test_load_redsm5_hub_uses_the_hub_when_it_answers() -> None:
    loader = FakeLoader(hub_rows())
    dataset = load_redsm5(hub_config(revision="v1"), hub_loader=loader, sleep=Sleeps(), environ={})
    assert dataset.source == f"hub:{HUB_ID}"
    assert loader.calls == [(HUB_ID, "v1", True)]


def test_load_redsm5_falls_back_to_local_with_a_warning(source_logs: list[logging.LogRecord]) -> None:
    loader, sleeps = FakeLoader(FileNotFoundError("not cached"), GatedRepoError("no access")), Sleeps()
    dataset = load_redsm5(hub_config(), hub_loader=loader, sleep=sleeps, environ={})
    assert dataset.source == f"local:{SAMPLE_DIR}"
    assert len(dataset.posts) == SAMPLE_POSTS
    assert sleeps == []
    warnings = [r for r in source_logs if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert HUB_ID in message
    assert "GatedRepoError" in message
    assert "falling back" in message
    assert str(SAMPLE_DIR) in message


def test_load_redsm5_falls_back_after_exhausting_retries(source_logs: list[logging.LogRecord]) -> None:
    loader = FakeLoader(FileNotFoundError("not cached"), *[ConnectionError("down")] * 5)
    sleeps = Sleeps()
    dataset = load_redsm5(hub_config(), hub_loader=loader, sleep=sleeps, environ={})
    assert dataset.source == f"local:{SAMPLE_DIR}"
    assert sleeps == [1, 2, 4, 8]
    fallback = [r.getMessage() for r in source_logs if "falling back" in r.getMessage()]
    assert len(fallback) == 1
    assert "ConnectionError: down" in fallback[0]  # the hub's own error, not an internal wrapper


@pytest.mark.parametrize(
    "environ",
    [
        {"HF_HUB_OFFLINE": "1"},
        {"HF_DATASETS_OFFLINE": "1"},
        {"HF_HUB_OFFLINE": "true"},
        {"HF_HUB_OFFLINE": "ON"},
    ],
)
def test_load_redsm5_offline_skips_the_hub(
    environ: dict[str, str], source_logs: list[logging.LogRecord]
) -> None:
    loader, sleeps = FakeLoader(), Sleeps()
    dataset = load_redsm5(hub_config(), hub_loader=loader, sleep=sleeps, environ=environ)
    assert loader.calls == []
    assert sleeps == []
    assert dataset.source == f"local:{SAMPLE_DIR}"
    assert any(r.levelno == logging.WARNING and "HF_HUB_OFFLINE" in r.getMessage() for r in source_logs)


@pytest.mark.parametrize("value", ["0", "", "false"])
def test_load_redsm5_offline_flag_off_still_uses_the_hub(value: str) -> None:
    loader = FakeLoader(hub_rows())
    dataset = load_redsm5(hub_config(), hub_loader=loader, sleep=Sleeps(), environ={"HF_HUB_OFFLINE": value})
    assert dataset.source == f"hub:{HUB_ID}"
    assert len(loader.calls) == 1


def test_load_redsm5_does_not_hide_bad_hub_rows(source_logs: list[logging.LogRecord]) -> None:
    (posts, post_columns), (annotations, columns) = hub_rows()
    annotations[0] = {**annotations[0], "DSM5_symptom": "NOT_A_LABEL"}
    loader = FakeLoader(((posts, post_columns), (annotations, columns)))
    with pytest.raises(DataError) as caught:
        load_redsm5(hub_config(), hub_loader=loader, sleep=Sleeps(), environ={})
    message = str(caught.value)
    assert message.startswith(f"hub:{HUB_ID}@main/{ANNOTATIONS_FILE}: data row 1, column 'DSM5_symptom'")
    assert not any("falling back" in r.getMessage() for r in source_logs)


def test_load_redsm5_hub_then_missing_local_folder_is_a_data_error(tmp_path: Path) -> None:
    loader = FakeLoader(FileNotFoundError("not cached"), GatedRepoError("no access"))
    config = DataConfig(source="hub", local_dir=str(tmp_path / "absent"))
    with pytest.raises(DataError, match="does not exist"):
        load_redsm5(config, hub_loader=loader, sleep=Sleeps(), environ={})


# --- the split does not depend on the source ----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 42])
def test_hub_and_local_rows_give_the_same_split_and_pairs(seed: int) -> None:
    local = load_local(SAMPLE_DIR)
    hub = load_hub(HUB_ID, "", loader=FakeLoader(hub_rows()), sleep=Sleeps())
    assert list(hub.posts) != list(local.posts)  # different row order ...
    assert hub.posts == local.posts  # ... same content
    assert sorted(hub.annotations, key=repr) == sorted(local.annotations, key=repr)
    local_split = split_posts(local.posts, seed, SplitConfig())
    hub_split = split_posts(hub.posts, seed, SplitConfig())
    assert hub_split == local_split
    local_pairs, _ = build_examples(local, local_split.test, CRITERIA)
    hub_pairs, _ = build_examples(hub, hub_split.test, CRITERIA)
    assert hub_pairs == local_pairs
