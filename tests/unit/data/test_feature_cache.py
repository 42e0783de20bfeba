"""dsm5_hpo.data.feature_cache: tokenized windows on disk, keyed by data, tokenizer and window settings."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLE_DIR, captured_logs, compose_tiny
from dsm5_hpo.config import DataConfig
from dsm5_hpo.data.criteria import CRITERIA
from dsm5_hpo.data.feature_cache import FeatureCache, from_arrays, to_arrays, tokenizer_fingerprint
from dsm5_hpo.data.features import WindowFeatures, tokenize_examples
from dsm5_hpo.data.pairs import PairExample, build_examples
from dsm5_hpo.data.prepare import feature_cache, prepare_data
from dsm5_hpo.data.sources import load_local
from dsm5_hpo.models.loading import load_tokenizer, resolve_model

SETTINGS = {"max_length": 64, "doc_stride": 16}


@pytest.fixture(scope="module")
def tokenizer(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = compose_tiny(tmp_path_factory.mktemp("feature_cache"), model_cache)
    return load_tokenizer(resolve_model(config.model, cache_dir=model_cache).path)


@pytest.fixture(scope="module")
def examples() -> list[PairExample]:
    dataset = load_local(SAMPLE_DIR)
    posts = sorted(dataset.posts)[:6]
    return build_examples(dataset, posts, CRITERIA, warn=False)[0]


class CountingBuilder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> WindowFeatures:
        self.calls += 1
        return tokenize_examples(*args, **kwargs)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_arrays_round_trip_every_field(tokenizer: Any, examples: list[PairExample]) -> None:
    features = tokenize_examples(examples, tokenizer, **SETTINGS)
    assert any(o is None for row in features.context_offsets for o in row)
    assert from_arrays(to_arrays(features)) == features


def test_the_second_call_reads_the_cache_instead_of_tokenizing(
    tmp_path: Path, tokenizer: Any, examples: list[PairExample]
) -> None:
    cache, build = FeatureCache(tmp_path), CountingBuilder()
    first = cache.windows(examples, tokenizer, **SETTINGS, build=build)
    second = cache.windows(examples, tokenizer, **SETTINGS, build=build)
    assert build.calls == 1
    assert second == first == tokenize_examples(examples, tokenizer, **SETTINGS)
    (meta,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert meta["windows"] == len(first) and meta["max_length"] == 64 and meta["doc_stride"] == 16


@pytest.mark.parametrize(
    "change",
    ["max_length", "doc_stride", "text", "label", "spans", "fewer_examples", "tokenizer"],
)
def test_anything_the_windows_depend_on_gives_a_new_entry(
    tmp_path: Path, tokenizer: Any, examples: list[PairExample], change: str
) -> None:
    cache, build = FeatureCache(tmp_path), CountingBuilder()
    cache.windows(examples, tokenizer, **SETTINGS, build=build)
    settings, changed, tok = dict(SETTINGS), list(examples), tokenizer
    if change in ("max_length", "doc_stride"):
        settings[change] += 8
    elif change == "text":
        changed[0] = dataclasses.replace(changed[0], text=changed[0].text + " One more sentence.")
    elif change == "label":
        changed[0] = dataclasses.replace(changed[0], label=1 - changed[0].label)
    elif change == "spans":
        changed[0] = dataclasses.replace(changed[0], spans=((0, 5),))
    elif change == "fewer_examples":
        changed = changed[:-1]
    else:
        tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
        tok.add_tokens(["anhedonia_token"])
        assert tokenizer_fingerprint(tok) != tokenizer_fingerprint(tokenizer)
    cache.windows(changed, tok, **settings, build=build)
    assert build.calls == 2
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_the_fingerprint_ignores_the_truncation_state_of_the_last_call(tokenizer: Any) -> None:
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["a question"], ["a post"], truncation="only_second", max_length=32, stride=4)
    assert tokenizer_fingerprint(tokenizer) == before


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete_data", "bad_json", "wrong_count"])
def test_a_damaged_entry_is_logged_removed_and_rebuilt(
    tmp_path: Path, tokenizer: Any, examples: list[PairExample], damage: str
) -> None:
    cache, build = FeatureCache(tmp_path), CountingBuilder()
    expected = cache.windows(examples, tokenizer, **SETTINGS, build=build)
    (data,) = tmp_path.glob("*.npz")
    meta = data.with_suffix(".json")
    if damage == "flip_byte":
        blob = bytearray(data.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        data.write_bytes(bytes(blob))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "delete_data":
        data.unlink()
    elif damage == "bad_json":
        meta.write_text("{not json")
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "windows": 3}))
    with captured_logs("dsm5_hpo.data.feature_cache") as records:
        again = cache.windows(examples, tokenizer, **SETTINGS, build=build)
    assert again == expected
    assert build.calls == 2
    (warning,) = [r for r in records if r.levelname == "WARNING"]
    assert data.name in warning.getMessage() and "tokenizing again" in warning.getMessage()
    assert entries(tmp_path) == sorted([data.name, meta.name])  # rebuilt in place
    assert cache.windows(examples, tokenizer, **SETTINGS, build=build) == expected and build.calls == 2


def test_data_without_its_json_is_not_an_entry(
    tmp_path: Path, tokenizer: Any, examples: list[PairExample]
) -> None:
    cache, build = FeatureCache(tmp_path), CountingBuilder()
    cache.windows(examples, tokenizer, **SETTINGS, build=build)
    (meta,) = tmp_path.glob("*.json")
    meta.unlink()  # a crash between the two writes
    cache.windows(examples, tokenizer, **SETTINGS, build=build)
    assert build.calls == 2 and meta.is_file()


def test_least_recently_used_entries_go_beyond_max_entries(
    tmp_path: Path, tokenizer: Any, examples: list[PairExample]
) -> None:
    cache, build = FeatureCache(tmp_path, max_entries=2), CountingBuilder()
    subsets = [examples[:9], examples[9:18], examples[18:27]]
    cache.windows(subsets[0], tokenizer, **SETTINGS, build=build)
    cache.windows(subsets[1], tokenizer, **SETTINGS, build=build)
    first_meta = min(tmp_path.glob("*.json"), key=lambda p: p.stat().st_mtime)
    os.utime(first_meta, (1, 1))  # used long ago ...
    cache.windows(subsets[0], tokenizer, **SETTINGS, build=build)  # ... and used again now: a hit
    assert build.calls == 2
    for path in tmp_path.glob("*.json"):
        if path != first_meta:
            os.utime(path, (2, 2))
    cache.windows(subsets[2], tokenizer, **SETTINGS, build=build)  # a third entry evicts subset 1's
    assert len(list(tmp_path.glob("*.json"))) == len(list(tmp_path.glob("*.npz"))) == 2
    cache.windows(subsets[0], tokenizer, **SETTINGS, build=build)
    assert build.calls == 3
    cache.windows(subsets[1], tokenizer, **SETTINGS, build=build)
    assert build.calls == 4


def test_a_cache_that_cannot_be_written_is_a_warning_not_a_failure(
    tmp_path: Path, tokenizer: Any, examples: list[PairExample]
) -> None:
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    cache = FeatureCache(blocked / "features")
    with captured_logs("dsm5_hpo.data.feature_cache") as records:
        features = cache.windows(examples, tokenizer, **SETTINGS)
    assert features == tokenize_examples(examples, tokenizer, **SETTINGS)
    (warning,) = [r for r in records if r.levelname == "WARNING"]
    assert "cannot write the feature cache" in warning.getMessage()
    assert "data.feature_cache_entries=0" in warning.getMessage()


def test_prepare_data_with_the_cache_gives_the_same_splits(tmp_path: Path, tokenizer: Any) -> None:
    config = DataConfig(local_dir=str(SAMPLE_DIR), max_posts=24, max_length=64, doc_stride=16)
    plain = prepare_data(config, tokenizer, seed=3)
    cache = feature_cache(config, tmp_path)
    assert cache is not None
    for _ in range(2):  # written, then read back
        cached = prepare_data(config, tokenizer, seed=3, cache=cache)
        assert {name: split.features for name, split in cached.splits.items()} == {
            name: split.features for name, split in plain.splits.items()
        }
    assert len(list((tmp_path / "features").glob("*.json"))) == 3  # one entry per split
    assert feature_cache(dataclasses.replace(config, feature_cache_entries=0), tmp_path) is None
