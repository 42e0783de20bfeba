"""Whatever sequence of saves, retention deletions, crashes and collections two trials go through,
every blob a committed checkpoint references exists and verifies, and after a collection no blob
is left that nothing references.

Each step runs with a fresh manager, as a process restarted after a crash would. A crash is a
simulated power cut (a BaseException no cleanup code catches) at one of the two moments a save
leaves something behind: a blob written to its staging file but not renamed into place, or every
blob in place but the checkpoint not committed.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from checkpoint_helpers import small_state
from dsm5_hpo.checkpointing import manager as manager_module
from dsm5_hpo.checkpointing.blob_gc import collect_garbage, mark
from dsm5_hpo.checkpointing.blobs import BlobStore
from dsm5_hpo.checkpointing.io import delete_directory
from dsm5_hpo.checkpointing.manager import CheckpointManager, architecture_signature
from dsm5_hpo.config import RetentionConfig
from dsm5_hpo.layout import QUARANTINE_DIR, ExperimentLayout


class PowerCut(BaseException):
    """Not an Exception: nothing cleans up, as after a real crash."""


class Model(nn.Module):
    def __init__(self, variant: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.base = nn.Linear(8, 8)  # frozen: one blob for every checkpoint of both trials
        self.base.requires_grad_(False)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.head.weight.add_(variant)  # variants repeat: equal heads share blobs too


SIGNATURE = architecture_signature(Model(0))


def manager(root: Path, trial: str, keep_last: int) -> CheckpointManager:
    return CheckpointManager(
        root / f"trial_{trial}" / "checkpoints",
        trial_id=trial,
        architecture_signature=SIGNATURE,
        head_config={"hidden_size": 8},
        retention=RetentionConfig(keep_last_n=keep_last, keep_best_k=1),
    )


@contextlib.contextmanager
def crash(where: str | None) -> Iterator[None]:
    def cut(*args: object, **kwargs: object) -> None:
        raise PowerCut

    with pytest.MonkeyPatch.context() as patch:
        if where == "blob staged":
            patch.setattr(BlobStore, "commit", cut)
        elif where == "blobs in place":
            patch.setattr(manager_module, "commit_directory", cut)
        with contextlib.suppress(PowerCut):
            yield


def check_invariants(root: Path, keep_last: int, *, collected: bool) -> None:
    layout, store = ExperimentLayout(root), BlobStore(root / "blobs")
    for trial in ("a", "b"):
        folder = root / f"trial_{trial}" / "checkpoints"
        committed = sorted(folder.glob("epoch_*")) if folder.is_dir() else []
        valid = manager(root, trial, keep_last).valid_checkpoints()  # every blob read and hash-checked
        assert [info.path for info in valid] == committed
        assert not (folder / QUARANTINE_DIR).exists(), "a committed checkpoint lost or damaged a blob"
        for info in valid:
            for sha in info.blobs:
                store.verify(sha)
    if collected:
        stored = {name for name, _ in store.names()}
        assert stored == set(mark(layout).referenced), "a blob nothing references survived a collection"
        assert not list((root / "blobs").glob("sha256/*/.tmp-*")), "a staging blob survived a collection"


OPERATION = st.one_of(
    st.tuples(
        st.just("save"),
        st.sampled_from(["a", "b"]),
        st.integers(0, 3),
        st.sampled_from([None, None, "blob staged", "blobs in place"]),
    ),
    st.tuples(st.just("delete"), st.sampled_from(["a", "b"]), st.integers(0, 5), st.none()),
    st.tuples(st.just("collect"), st.none(), st.none(), st.none()),
)


@settings(max_examples=25, deadline=None)
@given(operations=st.lists(OPERATION, min_size=1, max_size=10), keep_last=st.integers(1, 2))
def test_blobs_of_committed_checkpoints_survive_any_history(
    operations: list[tuple[str, str | None, int | None, str | None]], keep_last: int
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        epochs = {"a": 0, "b": 0}
        for kind, trial, number, where in operations:
            if kind == "save":
                assert trial is not None and number is not None
                with crash(where):
                    state = small_state(Model(number), epochs[trial], 0.1 * number)
                    manager(root, trial, keep_last).save(state)
                epochs[trial] += 1
            elif kind == "delete":  # what the study's retention or make cleanup does to a checkpoint
                assert trial is not None and number is not None
                committed = sorted((root / f"trial_{trial}" / "checkpoints").glob("epoch_*"))
                if committed:
                    delete_directory(committed[number % len(committed)])
            else:
                collection = collect_garbage(ExperimentLayout(root))
                assert collection.skipped is None
            check_invariants(root, keep_last, collected=kind == "collect")
        collect_garbage(ExperimentLayout(root))
        check_invariants(root, keep_last, collected=True)
