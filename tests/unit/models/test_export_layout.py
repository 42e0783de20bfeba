"""best_model/ is replaced atomically (one exchange of two folders), and saved without call state."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsm5_hpo.models.export import without_call_state
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.storage import publish as export
from dsm5_hpo.storage.atomic import exchange_paths
from dsm5_hpo.storage.publish import export_leftovers, publish, restore_interrupted


class PowerCut(BaseException):
    """A crash: no cleanup code runs, what is on disk stays."""


def _export(parent: Path, content: str) -> Path:
    staging = parent / f".tmp-best_model-{content}"
    (staging / "encoder").mkdir(parents=True)
    (staging / "encoder" / "model.safetensors").write_text(content * 100)
    (staging / "dsm5_hpo.json").write_text(content)
    return staging


def _loaded(folder: Path) -> str:
    """Which export ``folder`` is, checking it is complete."""
    content = (folder / "dsm5_hpo.json").read_text()
    assert (folder / "encoder" / "model.safetensors").read_text() == content * 100
    return content


def _crash_at(monkeypatch: pytest.MonkeyPatch, step: int, *, exchange: bool) -> list[str]:
    """Count the file-system steps publish takes (exchange, renames, fsyncs, deletions); crash at
    ``step``. ``exchange``: whether the file system can swap two folders in one step."""
    done: list[str] = []

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(done) == step:
                raise PowerCut
            done.append(name)
            return real(*args, **kwargs)

        return wrapper

    swap = export.exchange_paths if exchange else (lambda first, second: False)
    monkeypatch.setattr(export, "exchange_paths", counted("exchange", swap))
    monkeypatch.setattr(export.os, "replace", counted("replace", os.replace))
    monkeypatch.setattr(export, "fsync_path", counted("fsync", export.fsync_path))
    monkeypatch.setattr(export.shutil, "rmtree", counted("rmtree", shutil.rmtree))
    return done


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_crash_at_any_step_of_a_replacement_leaves_an_export_that_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    steps = 0
    while True:
        parent = tmp_path / f"{exchange}-{steps}"
        parent.mkdir()
        folder = parent / "best_model"
        publish(_export(parent, "old"), folder)
        new = _export(parent, "new")
        with monkeypatch.context() as patch:
            done = _crash_at(patch, steps, exchange=exchange)
            try:
                publish(new, folder)
                finished = True
            except PowerCut:
                finished = False
        if exchange:
            assert _loaded(folder) in ("old", "new"), f"after {done}"  # at every instant
        elif not folder.exists():
            # Between the two renames: the previous export is kept whole beside it and put back.
            assert restore_interrupted(folder) is not None and _loaded(folder) == "old", f"after {done}"
        # What cleanup may delete is never the export in use, and never the only copy.
        for leftover in export_leftovers(folder):
            shutil.rmtree(leftover)
        assert _loaded(folder) in ("old", "new") and not folder.is_symlink()
        if finished:
            assert _loaded(folder) == "new"
            assert sorted(p.name for p in parent.iterdir()) == ["best_model"]
            break
        steps += 1
    assert steps >= 3, "publish takes at least the swap, an fsync and the deletion of the old export"


def test_the_next_export_restores_what_an_interrupted_replacement_set_aside(tmp_path: Path) -> None:
    old = _export(tmp_path, "old").rename(tmp_path / ".old-best_model-1a2b3c4d")
    assert export_leftovers(tmp_path / "best_model") == [], "the only copy is not a leftover"
    publish(_export(tmp_path, "new"), tmp_path / "best_model")
    assert _loaded(tmp_path / "best_model") == "new" and not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model"]


def test_exchange_swaps_two_folders(tmp_path: Path) -> None:
    first, second = _export(tmp_path, "one"), tmp_path / "two"
    _export(tmp_path, "two").rename(second)
    if not exchange_paths(first, second):
        pytest.skip("this file system cannot exchange two paths in one step")
    assert _loaded(first) == "two" and _loaded(second) == "one"


def test_the_saved_tokenizer_does_not_depend_on_its_last_call(
    tiny_config, model_cache: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = resolve_model(tiny_config.model, cache_dir=model_cache).path
    fresh, used = load_tokenizer(path), load_tokenizer(path)
    # As the windows are made: the post truncated in windows with a stride, padded to max_length.
    used(
        "a post about sleep and waking early",
        "a question",
        truncation="only_first",
        max_length=16,
        padding="max_length",
        stride=2,
    )
    without_call_state(fresh).save_pretrained(str(tmp_path / "fresh"))
    without_call_state(used).save_pretrained(str(tmp_path / "used"))
    assert (tmp_path / "fresh" / "tokenizer.json").read_bytes() == (
        tmp_path / "used" / "tokenizer.json"
    ).read_bytes()
    # The study's own tokenizer is left as it was (a copy is saved).
    assert used.backend_tokenizer.truncation is not None
