"""Tests for scripts/generate_sample.py, the generator of the SYNTHETIC RedSM5 sample.

The script is loaded from its path (scripts/ is not a package) and run into tmp_path. The
template tables it reads from generate_sample_tables.json must fail loudly, naming the file and
the key, when broken. The last tests guard the committed sample in Data/redsm5_sample: it must
still meet the brief and be exactly what the script produces with its default arguments.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "generate_sample.py"
TABLES = REPO / "scripts" / "generate_sample_tables.json"
CRITERIA_MODULE = REPO / "src" / "dsm5_hpo" / "data" / "criteria.py"
SAMPLE = REPO / "Data" / "redsm5_sample"
FILES = ("redsm5_posts.csv", "redsm5_annotations.csv")
POSTS_HEADER = "post_id,text\n"
ANNOTATIONS_HEADER = "post_id,sentence_id,sentence_text,DSM5_symptom,status,explanation\n"
SMALL_POSTS = 48


def load_module(path: Path, name: str) -> ModuleType:
    """Import a file that is not on sys.path, registering it so dataclasses can resolve it."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_posts(folder: Path) -> dict[str, str]:
    """Read post_id -> text, failing on a duplicated post_id."""
    with (folder / FILES[0]).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    posts = {row["post_id"]: row["text"] for row in rows}
    assert len(posts) == len(rows), "duplicated post_id"
    return posts


def read_annotations(folder: Path) -> list[dict[str, str]]:
    """Read the annotation rows as dicts keyed by the header."""
    with (folder / FILES[1]).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def normalise(text: str) -> str:
    """Collapse whitespace and case, as a forgiving locator would."""
    return " ".join(text.split()).casefold()


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """The generator script as a module."""
    return load_module(SCRIPT, "generate_sample_under_test")


@pytest.fixture(scope="module")
def small(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A small sample (few posts, other seed) and the counts the script reported for it."""
    out = tmp_path_factory.mktemp("small")
    counts = gen.generate(out, seed=7, n_posts=SMALL_POSTS)
    return out, counts


def test_same_seed_gives_byte_identical_files(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path / "a", seed=5, n_posts=SMALL_POSTS)
    gen.generate(tmp_path / "b", seed=5, n_posts=SMALL_POSTS)
    gen.generate(tmp_path / "c", seed=6, n_posts=SMALL_POSTS)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / FILES[0]).read_bytes() != (tmp_path / "c" / FILES[0]).read_bytes()


def test_headers_are_exactly_the_redsm5_schema(small: tuple[Path, dict[str, float]]) -> None:
    out, _ = small
    assert (out / FILES[0]).read_text(encoding="utf-8").startswith(POSTS_HEADER)
    assert (out / FILES[1]).read_text(encoding="utf-8").startswith(ANNOTATIONS_HEADER)
    with (out / FILES[1]).open(encoding="utf-8", newline="") as handle:
        assert {len(row) for row in csv.reader(handle)} == {6}


def test_ids_labels_and_rows_are_well_formed(small: tuple[Path, dict[str, float]], gen: ModuleType) -> None:
    out, counts = small
    posts = read_posts(out)
    rows = read_annotations(out)
    assert len(posts) == SMALL_POSTS
    assert all(re.fullmatch(r"s_[a-z0-9]{6}", post_id) for post_id in posts)
    assert len(rows) == counts["annotation_rows"]
    known = {*gen.CRITERIA, gen.SPECIAL_CASE}
    text_of_sentence: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for row in rows:
        assert row["post_id"] in posts
        assert re.fullmatch(re.escape(row["post_id"]) + r"_\d+", row["sentence_id"])
        assert row["DSM5_symptom"] in known
        assert row["status"] in ("0", "1")
        assert row["sentence_text"].strip() == row["sentence_text"] != ""
        # One row per (sentence, symptom), and a sentence_id always names the same text.
        key = (row["sentence_id"], row["DSM5_symptom"])
        assert key not in seen
        seen.add(key)
        assert text_of_sentence.setdefault(row["sentence_id"], row["sentence_text"]) == row["sentence_text"]


def test_small_sample_still_has_every_awkward_case(small: tuple[Path, dict[str, float]]) -> None:
    out, counts = small
    posts = read_posts(out)
    rows = read_annotations(out)
    annotated_posts = {row["post_id"] for row in rows}
    sentence_labels: dict[str, int] = {}
    for row in rows:
        sentence_labels[row["sentence_id"]] = sentence_labels.get(row["sentence_id"], 0) + 1

    assert len(posts) - len(annotated_posts) == counts["posts_without_rows"] >= 1
    assert any(row["status"] == "0" for row in rows)
    assert any(row["DSM5_symptom"] == "SPECIAL_CASE" for row in rows)
    assert sum(1 for n in sentence_labels.values() if n == 2) == counts["two_symptom_sentences"] >= 1
    assert any(len(text.split()) >= 600 for text in posts.values())

    whitespace_only = [
        r
        for r in rows
        if r["sentence_text"] not in posts[r["post_id"]]
        and normalise(r["sentence_text"]) in normalise(posts[r["post_id"]])
    ]
    not_locatable = [r for r in rows if normalise(r["sentence_text"]) not in normalise(posts[r["post_id"]])]
    assert whitespace_only
    assert not_locatable
    assert all(r["status"] == "1" for r in not_locatable)
    assert any(not text.isascii() for text in posts.values())
    assert any("\n" in text for text in posts.values())
    assert any('"' in text for text in posts.values())


def test_too_few_posts_is_refused(gen: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        gen.generate(tmp_path, n_posts=3)
    with pytest.raises(SystemExit):
        gen.main(["--out", str(tmp_path), "--posts", "3"])


def test_labels_match_the_package_criteria(gen: ModuleType) -> None:
    criteria = load_module(CRITERIA_MODULE, "criteria_under_test")
    assert gen.CRITERIA == criteria.CRITERIA
    assert gen.SPECIAL_CASE == criteria.SPECIAL_CASE


Edit = Callable[[dict[str, Any]], object]


def write_tables(folder: Path, edit: Edit) -> Path:
    """Copy the real tables file into ``folder`` after ``edit`` changed the parsed JSON."""
    tables: dict[str, Any] = json.loads(TABLES.read_text(encoding="utf-8"))
    edit(tables)
    path = folder / "tables.json"
    path.write_text(json.dumps(tables, ensure_ascii=False), encoding="utf-8")
    return path


def test_missing_tables_file_names_the_file(gen: ModuleType, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    with pytest.raises(gen.TablesError, match=re.escape(str(missing)) + ".*not found"):
        gen.load_tables(missing)


def test_corrupt_tables_file_names_the_file(gen: ModuleType, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"SLOTS": {"dur": ["for weeks",', encoding="utf-8")
    with pytest.raises(gen.TablesError, match=re.escape(str(corrupt)) + ": cannot read"):
        gen.load_tables(corrupt)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("FILLERS"), "missing key 'FILLERS'"),
        (lambda t: t["EVIDENCE"].pop("FATIGUE"), "EVIDENCE lacks key 'FATIGUE'"),
        (lambda t: t["EXPLANATIONS"].pop("SPECIAL_CASE"), "EXPLANATIONS lacks key 'SPECIAL_CASE'"),
        (lambda t: t.update(FILLER=["x"]), "unknown key 'FILLER'"),
        (lambda t: t["SLOTS"].update(dur=[]), r"SLOTS\.dur must be a non-empty list"),
        (lambda t: t["TWO_SYMPTOMS"][0].pop(), r"TWO_SYMPTOMS\[0\] must hold 3 strings"),
        (lambda t: t["DISTRACTORS"]["FATIGUE"][0].__setitem__(1, "RUDE"), "names reason 'RUDE'"),
    ],
)
def test_broken_tables_name_the_file_and_the_key(
    gen: ModuleType, tmp_path: Path, edit: Edit, message: str
) -> None:
    path = write_tables(tmp_path, edit)
    with pytest.raises(gen.TablesError, match=re.escape(str(path)) + ": .*" + message):
        gen.load_tables(path)


def test_script_without_its_tables_file_fails_at_start(tmp_path: Path) -> None:
    # The tables are read at import, before any output is written: a copy of the script without
    # the JSON beside it must stop with the path it looked for.
    lone = tmp_path / "generate_sample.py"
    shutil.copy(SCRIPT, lone)
    result = subprocess.run(
        [sys.executable, str(lone), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    assert str(tmp_path / "generate_sample_tables.json") in result.stderr
    assert not (tmp_path / "out").exists()


def test_every_template_slot_has_fillers(gen: ModuleType) -> None:
    # fill() looks each {name} up in SLOTS; a typo in a JSON template would fail mid-generation.
    templates: list[str] = [
        *(t for ts in gen.EVIDENCE.values() for t in ts),
        *gen.SPECIAL,
        *(row[0] for row in gen.TWO_SYMPTOMS),
        *(t for pairs in gen.PARAPHRASES.values() for pair in pairs for t in pair),
        *(pair[0] for pairs in gen.DISTRACTORS.values() for pair in pairs),
        *gen.FILLERS,
    ]
    names = {name for t in templates for _, name, _, _ in string.Formatter().parse(t) if name}
    assert names <= set(gen.SLOTS)
    assert set(gen.PER_POST_SLOTS) <= set(gen.SLOTS)


def test_committed_sample_meets_the_brief() -> None:
    posts = read_posts(SAMPLE)
    rows = read_annotations(SAMPLE)
    words = {post_id: len(text.split()) for post_id, text in posts.items()}
    long_posts = [post_id for post_id, n in words.items() if n >= 600]
    short = [n for n in words.values() if n < 600]
    no_rows = set(posts) - {row["post_id"] for row in rows}
    status0 = [row for row in rows if row["status"] == "0"]
    special = [row for row in rows if row["DSM5_symptom"] == "SPECIAL_CASE"]
    per_sentence: dict[str, set[str]] = {}
    for row in rows:
        per_sentence.setdefault(row["sentence_id"], set()).add(row["DSM5_symptom"])
    not_locatable = [r for r in rows if normalise(r["sentence_text"]) not in normalise(posts[r["post_id"]])]

    assert len(long_posts) >= 8
    assert all(600 <= words[post_id] <= 1500 for post_id in long_posts)
    assert 150 <= sum(short) / len(short) <= 300
    assert 0.2 <= len(no_rows) / len(posts) <= 0.3
    assert 0.07 <= len(status0) / len(rows) <= 0.13
    assert 0.01 <= len(special) / len(rows) <= 0.06
    assert sum(1 for labels in per_sentence.values() if len(labels) == 2) >= 5
    assert 2 <= len(not_locatable) <= 0.02 * len(rows)
    # Evidence near the end of long posts, far past a 512-token window.
    late = 0
    for post_id in long_posts:
        text = posts[post_id]
        starts = [text.find(r["sentence_text"]) for r in rows if r["post_id"] == post_id]
        late += any(start >= 0 and len(text[:start].split()) >= 0.9 * words[post_id] for start in starts)
    assert late >= 3
    assert sum((SAMPLE / name).stat().st_size for name in FILES) < 2.5 * 1024 * 1024


def test_committed_sample_is_what_the_script_generates_by_default(tmp_path: Path) -> None:
    # Run exactly as documented (a plain interpreter, no arguments) from a scratch folder, so the
    # default out path resolves inside tmp_path; the result must match the committed bytes.
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120
    )
    assert "SYNTHETIC" in result.stdout
    for name in FILES:
        fresh = tmp_path / "Data" / "redsm5_sample" / name
        assert fresh.read_bytes() == (SAMPLE / name).read_bytes(), (
            f"Data/redsm5_sample/{name} is stale: rerun python3 scripts/generate_sample.py"
        )
