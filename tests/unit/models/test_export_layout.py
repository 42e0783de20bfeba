"""best_model/ is replaced atomically (a link switched in one rename), and saved without call state."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsm5_hpo.models import export
from dsm5_hpo.models.export import export_leftovers, publish, without_call_state
from dsm5_hpo.models.loading import load_tokenizer, resolve_model


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


def _crash_at(monkeypatch: pytest.MonkeyPatch, step: int) -> list[str]:
    """Count the file-system steps publish takes (renames, links, fsyncs, deletions); crash at ``step``."""
    done: list[str] = []

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(done) == step:
                raise PowerCut
            done.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(export.os, "replace", counted("replace", os.replace))
    monkeypatch.setattr(export.os, "symlink", counted("symlink", os.symlink))
    monkeypatch.setattr(export, "fsync_path", counted("fsync", export.fsync_path))
    monkeypatch.setattr(export.shutil, "rmtree", counted("rmtree", shutil.rmtree))
    return done


@pytest.mark.parametrize("first_layout", ["link", "folder"])
def test_a_crash_at_any_step_of_a_replacement_leaves_the_old_or_the_new_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_layout: str
) -> None:
    steps = 0
    while True:
        parent = tmp_path / f"{first_layout}-{steps}"
        parent.mkdir()
        folder = parent / "best_model"
        if first_layout == "link":
            publish(_export(parent, "old"), folder)
        else:  # what exports were before they were links: a plain folder, replaced by two renames
            _export(parent, "old").rename(folder)
        new = _export(parent, "new")
        with monkeypatch.context() as patch:
            done = _crash_at(patch, steps)
            try:
                publish(new, folder)
                finished = True
            except PowerCut:
                finished = False
        if first_layout == "link" or finished or "replace" not in done[1:]:
            # Every instant: best_model loads, the old export or the new one, complete.
            assert _loaded(folder) in ("old", "new"), f"after {done}"
        else:
            # The first layout's folder is set aside once before the link takes its place: a crash in
            # that one window leaves it under its new name, complete, which the next export replaces.
            (kept,) = [p for p in parent.glob(".best_model-*-replaced")]
            assert _loaded(kept) == "old"
        # What is left over is exactly what no export uses, and cleaning it keeps best_model whole.
        for leftover in export_leftovers(folder):
            assert not folder.exists() or leftover.resolve() != folder.resolve()
            shutil.rmtree(leftover)
        if folder.exists():
            assert _loaded(folder) in ("old", "new")
        if finished:
            assert _loaded(folder) == "new" and folder.is_symlink()
            assert sorted(p.name for p in parent.iterdir() if not p.name.startswith(".tmp-link")) == sorted(
                ["best_model", os.readlink(folder)]
            )
            break
        steps += 1
    assert steps >= 4, "publish has at least a rename, a link, the switch and a deletion"


def test_leftovers_of_the_first_layouts_swap_are_kept_while_they_are_the_only_copy(tmp_path: Path) -> None:
    # A crash between the first layout's two renames left only .old-best_model-*: not deleted.
    old = _export(tmp_path, "old").rename(tmp_path / ".old-best_model-1a2b3c4d")
    assert export_leftovers(tmp_path / "best_model") == []
    publish(_export(tmp_path, "new"), tmp_path / "best_model")
    assert old in export_leftovers(tmp_path / "best_model")  # superseded once best_model loads


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
