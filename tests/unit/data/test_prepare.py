"""dsm5_hpo.data.prepare.prepare_data: config -> split, pairs and windows, on the tiny config and sample."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLE_DIR, compose_tiny
from dsm5_hpo.config import DataConfig, StudyConfig
from dsm5_hpo.data.criteria import CRITERIA, SPECIAL_CASE
from dsm5_hpo.data.prepare import SPLITS, PreparedData, augmented_epochs, prepare_data
from dsm5_hpo.data.schema import RedSM5
from dsm5_hpo.data.sources import load_local
from dsm5_hpo.errors import DataError
from dsm5_hpo.models.loading import load_tokenizer, resolve_model

SUMMARY_KEYS = {
    "source",
    "revision",
    "posts",
    "annotations",
    "criteria",
    "split_posts",
    "split_pairs",
    "split_windows",
    "evidence_sentences_located",
    "evidence_sentences_unlocated",
}


@pytest.fixture(scope="module")
def tokenizer(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = compose_tiny(tmp_path_factory.mktemp("prepare"), model_cache)
    return load_tokenizer(resolve_model(config.model, cache_dir=model_cache).path)


@pytest.fixture(scope="module")
def sample() -> RedSM5:
    return load_local(SAMPLE_DIR)


def reordered(dataset: RedSM5) -> RedSM5:
    """The same rows in reverse order, as another source might deliver them."""
    return RedSM5(
        posts=dict(reversed(list(dataset.posts.items()))),
        annotations=dataset.annotations[::-1],
        source=dataset.source,
        revision=dataset.revision,
    )


def fingerprint(prepared: PreparedData) -> dict[str, Any]:
    return {
        name: (
            [(e.post_id, e.criterion, e.label, e.spans) for e in prepared.splits[name].examples],
            prepared.splits[name].features.input_ids,
            prepared.splits[name].features.start_positions,
        )
        for name in SPLITS
    }


def test_prepare_data_on_the_tiny_config(tiny_config: StudyConfig, tokenizer: Any) -> None:
    config = tiny_config.data
    prepared = prepare_data(config, tokenizer, seed=tiny_config.train.seed)
    summary = prepared.summary()
    assert set(summary) == SUMMARY_KEYS
    assert summary["source"] == f"local:{SAMPLE_DIR}"
    assert summary["revision"].startswith("sha256:")
    assert summary["revision"].endswith(f"[first {config.max_posts} posts]")
    assert summary["posts"] == config.max_posts == 24
    assert summary["criteria"] == list(CRITERIA)
    assert summary["split_posts"] == {"train": 12, "validation": 6, "test": 6}
    assert summary["split_pairs"] == {name: 9 * n for name, n in summary["split_posts"].items()}
    for name in SPLITS:
        assert summary["split_windows"][name] >= summary["split_pairs"][name]
        assert summary["split_windows"][name] == len(prepared.splits[name].features)
        assert all(len(ids) <= config.max_length for ids in prepared.splits[name].features.input_ids)
    assert summary["annotations"] == len(prepared.dataset.annotations)
    assert all(a.post_id in prepared.dataset.posts for a in prepared.dataset.annotations)
    evidence_rows = sum(a.status == 1 and a.symptom in CRITERIA for a in prepared.dataset.annotations)
    assert summary["evidence_sentences_located"] + summary["evidence_sentences_unlocated"] == evidence_rows
    assert summary["evidence_sentences_located"] > 0


def test_splits_partition_the_posts_and_pairs_follow_them(tiny_config: StudyConfig, tokenizer: Any) -> None:
    prepared = prepare_data(tiny_config.data, tokenizer, seed=tiny_config.train.seed)
    parts = [set(prepared.split.of(name)) for name in SPLITS]
    assert set().union(*parts) == set(prepared.dataset.posts)
    assert sum(len(p) for p in parts) == len(prepared.dataset.posts)
    for name in SPLITS:
        examples = prepared.splits[name].examples
        assert [e.post_id for e in examples[::9]] == list(prepared.split.of(name))
        features = prepared.splits[name].features
        assert sorted(set(features.example_index)) == list(range(len(examples)))


def test_prepare_is_deterministic(tiny_config: StudyConfig, tokenizer: Any, sample: RedSM5) -> None:
    first = prepare_data(tiny_config.data, tokenizer, seed=3, dataset=sample)
    second = prepare_data(tiny_config.data, tokenizer, seed=3, dataset=sample)
    assert first.split == second.split
    assert fingerprint(first) == fingerprint(second)
    assert first.summary() == second.summary()


def test_max_posts_subset_does_not_depend_on_row_order(
    tiny_config: StudyConfig, tokenizer: Any, sample: RedSM5
) -> None:
    forward = prepare_data(tiny_config.data, tokenizer, seed=5, dataset=sample)
    backward = prepare_data(tiny_config.data, tokenizer, seed=5, dataset=reordered(sample))
    assert set(forward.dataset.posts) == set(backward.dataset.posts)
    assert forward.split == backward.split
    assert fingerprint(forward) == fingerprint(backward)
    assert forward.summary() == backward.summary()


def test_max_posts_subset_does_not_depend_on_the_seed(
    tiny_config: StudyConfig, tokenizer: Any, sample: RedSM5
) -> None:
    one = prepare_data(tiny_config.data, tokenizer, seed=1, dataset=sample)
    two = prepare_data(tiny_config.data, tokenizer, seed=2, dataset=sample)
    assert set(one.dataset.posts) == set(two.dataset.posts)  # same posts ...
    assert one.split != two.split  # ... split differently


def test_max_posts_keeps_only_the_chosen_posts_rows(
    tiny_config: StudyConfig, tokenizer: Any, sample: RedSM5
) -> None:
    prepared = prepare_data(tiny_config.data, tokenizer, seed=0, dataset=sample)
    kept = set(prepared.dataset.posts)
    assert len(kept) == 24
    assert prepared.dataset.annotations == tuple(a for a in sample.annotations if a.post_id in kept)
    assert list(prepared.dataset.posts) == [pid for pid in sample.posts if pid in kept]  # file order kept
    assert {pid: sample.posts[pid] for pid in kept} == prepared.dataset.posts


def small_dataset(n: int) -> RedSM5:
    posts = {f"t{i:02d}": f"Post number {i}. I feel sad today." for i in range(n)}
    return RedSM5(posts=posts, annotations=(), source="test", revision="r0")


def test_max_posts_zero_uses_every_post(tiny_config: StudyConfig, tokenizer: Any) -> None:
    config = dataclasses.replace(tiny_config.data, max_posts=0)
    prepared = prepare_data(config, tokenizer, seed=0, dataset=small_dataset(30))
    summary = prepared.summary()
    assert summary["posts"] == 30
    assert summary["revision"] == "r0"  # no subset marker
    assert summary["source"] == "test"
    assert sum(summary["split_posts"].values()) == 30
    assert summary["evidence_sentences_located"] == summary["evidence_sentences_unlocated"] == 0
    assert all(e.label == 0 for name in SPLITS for e in prepared.splits[name].examples)


def test_max_posts_above_the_total_uses_every_post(tiny_config: StudyConfig, tokenizer: Any) -> None:
    config = dataclasses.replace(tiny_config.data, max_posts=500)
    assert prepare_data(config, tokenizer, seed=0, dataset=small_dataset(12)).summary()["posts"] == 12


def test_special_case_as_a_tenth_criterion(tiny_config: StudyConfig, tokenizer: Any, sample: RedSM5) -> None:
    config = dataclasses.replace(tiny_config.data, include_special_case=True)
    prepared = prepare_data(config, tokenizer, seed=0, dataset=sample)
    summary = prepared.summary()
    assert summary["criteria"] == [*CRITERIA, SPECIAL_CASE]
    assert summary["split_pairs"] == {name: 10 * n for name, n in summary["split_posts"].items()}


@pytest.mark.parametrize("max_posts", [1, 2])
def test_too_few_posts_is_a_data_error(tiny_config: StudyConfig, tokenizer: Any, max_posts: int) -> None:
    config = dataclasses.replace(tiny_config.data, max_posts=max_posts)
    with pytest.raises(DataError) as caught:
        prepare_data(config, tokenizer, seed=0)
    message = str(caught.value)
    assert f"only {max_posts} posts" in message
    assert "data.max_posts" in message


def test_too_few_posts_in_the_data_itself(tokenizer: Any) -> None:
    with pytest.raises(DataError, match="too few"):
        prepare_data(DataConfig(max_length=64, doc_stride=16), tokenizer, seed=0, dataset=small_dataset(2))


def test_missing_local_folder_is_reported(tmp_path: Path, tokenizer: Any) -> None:
    config = DataConfig(local_dir=str(tmp_path / "absent"), max_length=64, doc_stride=16)
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(config, tokenizer, seed=0)


def test_augmented_epochs_redraw_only_training_evidence_each_epoch(
    tokenizer: Any, tmp_path: Path, model_cache: Path
) -> None:
    config = compose_tiny(tmp_path, model_cache, "train.augment_probability=1.0", "train.max_epochs=3")
    data = prepare_data(config.data, tokenizer, seed=config.train.seed)
    train = data.splits["train"]
    epochs = augmented_epochs(train.examples, tokenizer, config.data, config.train)
    assert len(epochs) == 3
    assert epochs == augmented_epochs(train.examples, tokenizer, config.data, config.train)  # seeded
    assert epochs[0].input_ids != epochs[1].input_ids  # re-drawn per epoch
    assert epochs[0].input_ids != train.features.input_ids
    # Labels and pairs are those of the split; pairs without evidence are tokenized as they were.
    plain = {i for i, e in enumerate(train.examples) if not e.spans}
    for windows in epochs:
        assert {i for i, label in zip(windows.example_index, windows.labels, strict=True) if label} == {
            i for i, label in zip(train.features.example_index, train.features.labels, strict=True) if label
        }
        for window, pair in enumerate(windows.example_index):
            if pair in plain:
                original = [w for w, p in enumerate(train.features.example_index) if p == pair]
                assert windows.input_ids[window] in [train.features.input_ids[w] for w in original]
